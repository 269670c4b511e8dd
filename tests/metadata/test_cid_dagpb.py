"""CIDs and the dag-pb/UnixFS codec, checked against CIDs computed by independent tools:
Debian's `ipfs-cid` (rust-ipfs UnixFS, default 256 KiB chunker) and the well-known CIDs of
Kubo's `ipfs add` (empty file, empty directory, "hello world")."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.metadata.cid import DAG_PB, RAW, parse_cid, raw_cid, verify_block
from indexer.metadata.dagpb import (
    UnixFsType,
    build_directory,
    build_file,
    decode_node,
    decode_unixfs,
)
from indexer.metadata.errors import CidError, DagPbError, UnsupportedError, VerificationError

# `ipfs_cid FILE` output for these contents (CIDv0 and the matching CIDv1).
IPFS_CID_TOOL = {
    b"hello world": (
        "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD",
        "bafybeihykld7uyxzogax6vgyvag42y7464eywpf55gxi5qpoisibh3c5wa",
    ),
    b"hello world\n": (
        "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o",
        "bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby",
    ),
    b"\x00" * 600_000: (
        "QmRGw3jDTE2Bu51tEYn2JoyQq3ApDaJm8DpRxM68WqK7fU",
        "bafybeiblt43btmapknvhaehvuzx3eb45oyk2xvpfj2ujqime7ag56yxwx4",
    ),
}


@pytest.mark.parametrize("content", list(IPFS_CID_TOOL))
def test_unixfs_file_cids_match_ipfs_cid_tool(content: bytes) -> None:
    v0, v1 = IPFS_CID_TOOL[content]
    dag = build_file(content)
    assert str(dag.root) == v0
    assert dag.root.key == v1
    assert parse_cid(v0).key == parse_cid(v1).key


def test_well_known_empty_file_and_directory() -> None:
    assert str(build_file(b"").root) == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    assert str(build_directory({})[0]) == "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"


def test_raw_cid_of_hello_world() -> None:
    cid = raw_cid(b"hello world")
    assert cid.key == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    assert cid.codec == RAW


def test_any_multibase_names_the_same_cid() -> None:
    from multiformats import CID

    base32 = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    for base in ("base58btc", "base16", "base64", "base36", "base32upper"):
        other = CID.decode(base32).encode(base)
        assert other != base32
        assert parse_cid(other).key == base32


def test_verify_block_rejects_any_changed_byte() -> None:
    cid = raw_cid(b"hello world")
    verify_block(cid, b"hello world")
    with pytest.raises(VerificationError):
        verify_block(cid, b"hello worle")


def test_bad_and_unsupported_cids_are_typed_errors() -> None:
    with pytest.raises(CidError):
        parse_cid("not-a-cid")
    with pytest.raises(CidError):
        parse_cid("")
    # dag-cbor (0x71) is a real codec we deliberately do not resolve.
    with pytest.raises(UnsupportedError):
        parse_cid("bafyreidykglsfhoixmivffc5uwhcgshx4j465xwqntbmu43nb2dzqwfvae")


def test_multi_block_file_decodes_to_its_links() -> None:
    dag = build_file(b"ab" * 300_000)
    root = decode_node(dag.blocks[dag.root.key])
    fs = decode_unixfs(root.data)
    assert fs.type == UnixFsType.FILE
    assert fs.filesize == 600_000
    assert fs.blocksizes == (262_144, 262_144, 75_712)
    assert [link.cid.key in dag.blocks for link in root.links] == [True] * 3
    assert all(link.cid.codec == DAG_PB for link in root.links)


def test_directory_links_are_sorted_and_named() -> None:
    a, b = raw_cid(b"a"), raw_cid(b"b")
    cid, block = build_directory({"z.json": (a, 1), "a.json": (b, 1)})
    node = decode_node(block)
    assert [link.name for link in node.links] == ["a.json", "z.json"]
    assert decode_unixfs(node.data).type == UnixFsType.DIRECTORY
    verify_block(cid, block)


@pytest.mark.parametrize(
    "block",
    [
        b"\x0a",  # data field, length missing
        b"\x0a\x05ab",  # length runs past the end
        b"\x1a\x00",  # field 3 is not part of PBNode
        b"\x0b",  # wire type 3 (groups) is unsupported
        b"\x0a\x00\x12\x00",  # link after data
        b"\x12\x00",  # link without hash
        b"\x0a" + b"\xff" * 11,  # varint longer than 10 bytes
    ],
)
def test_malformed_dag_pb_is_a_typed_error(block: bytes) -> None:
    with pytest.raises(DagPbError):
        decode_node(block)


def test_unixfs_without_type_is_refused() -> None:
    with pytest.raises(DagPbError):
        decode_unixfs(b"\x12\x01x")
    with pytest.raises(DagPbError):
        decode_unixfs(None)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=256))
def test_decoder_never_fails_untyped(data: bytes) -> None:
    try:
        node = decode_node(data)
        if node.data is not None:
            decode_unixfs(node.data)
    except DagPbError:
        pass
