"""dag-pb nodes and UnixFS data: a small, bounded protobuf reader/writer.

Shapes follow the IPLD dag-pb spec (PBNode{Links=2, Data=1}, PBLink{Hash=1, Name=2, Tsize=3})
and the UnixFS spec (Data{Type=1, Data=2, filesize=3, blocksizes=4, hashType=5, fanout=6,
mode=7, mtime=8}). The reader never allocates more than the block it is given and refuses
anything malformed with :class:`DagPbError`; the writer exists so the dev gateway and tests can
build real UnixFS DAGs whose CIDs match what ``ipfs add`` produces.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from indexer.metadata.cid import DAG_PB, RAW, Cid, cid_bytes, cid_for, parse_cid
from indexer.metadata.errors import CidError, DagPbError, UnsupportedError

MAX_LINKS = 10_000
_MAX_VARINT_BYTES = 10


class UnixFsType(enum.IntEnum):
    RAW = 0
    DIRECTORY = 1
    FILE = 2
    METADATA = 3
    SYMLINK = 4
    HAMT_SHARD = 5


@dataclass(frozen=True, slots=True)
class PbLink:
    cid: Cid
    name: str | None
    tsize: int | None


@dataclass(frozen=True, slots=True)
class PbNode:
    links: tuple[PbLink, ...]
    data: bytes | None


@dataclass(frozen=True, slots=True)
class UnixFsData:
    type: UnixFsType
    data: bytes = b""
    filesize: int | None = None
    blocksizes: tuple[int, ...] = field(default=())
    hash_type: int | None = None
    fanout: int | None = None


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos >= end:
            raise DagPbError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            if i > 0 and b == 0:
                raise DagPbError("non-minimal varint")
            if result >= 1 << 64:
                raise DagPbError("varint overflows 64 bits")
            return result, pos
        shift += 7
    raise DagPbError("varint too long")


def _fields(buf: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, Any]]:
    """Yield (field number, wire type, value) where value is int or a (start, end) slice."""
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise DagPbError("field number 0")
        if wire == 0:
            val, pos = _varint(buf, pos, end)
            yield num, wire, val
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if length > end - pos:
                raise DagPbError("length-delimited field runs past the block")
            yield num, wire, (pos, pos + length)
            pos += length
        elif wire == 1:
            if pos + 8 > end:
                raise DagPbError("truncated fixed64")
            yield num, wire, int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wire == 5:
            if pos + 4 > end:
                raise DagPbError("truncated fixed32")
            yield num, wire, int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        else:
            raise DagPbError(f"unsupported wire type {wire}")


def decode_node(block: bytes) -> PbNode:
    """Decode a dag-pb block strictly: only Links (2) and Data (1), links before data."""
    links: list[PbLink] = []
    data: bytes | None = None
    for num, wire, val in _fields(block):
        if num == 2 and wire == 2:
            if data is not None:
                raise DagPbError("link after data")
            if len(links) >= MAX_LINKS:
                raise DagPbError("too many links")
            s, e = val
            links.append(_decode_link(block, s, e))
        elif num == 1 and wire == 2:
            if data is not None:
                raise DagPbError("duplicate data field")
            s, e = val
            data = block[s:e]
        else:
            raise DagPbError(f"unexpected field {num} (wire type {wire}) in PBNode")
    return PbNode(tuple(links), data)


def _decode_link(block: bytes, start: int, end: int) -> PbLink:
    cid: Cid | None = None
    name: str | None = None
    tsize: int | None = None
    last = 0
    for num, wire, val in _fields(block, start, end):
        if num <= last:
            raise DagPbError("PBLink fields out of order or repeated")
        last = num
        if num == 1 and wire == 2:
            s, e = val
            try:
                cid = parse_cid(block[s:e])
            except (CidError, UnsupportedError) as exc:
                raise DagPbError(f"bad link hash: {exc.message}") from None
        elif num == 2 and wire == 2:
            s, e = val
            try:
                name = block[s:e].decode("utf-8")
            except UnicodeDecodeError:
                raise DagPbError("link name is not UTF-8") from None
        elif num == 3 and wire == 0:
            tsize = val
        else:
            raise DagPbError(f"unexpected field {num} (wire type {wire}) in PBLink")
    if cid is None:
        raise DagPbError("link without hash")
    return PbLink(cid, name, tsize)


def decode_unixfs(data: bytes | None) -> UnixFsData:
    """Decode the UnixFS Data message carried in a PBNode's data field."""
    if data is None:
        raise DagPbError("dag-pb node has no UnixFS data")
    ftype: int | None = None
    content = b""
    filesize: int | None = None
    blocksizes: list[int] = []
    hash_type: int | None = None
    fanout: int | None = None
    for num, wire, val in _fields(data):
        if num == 1 and wire == 0:
            ftype = val
        elif num == 2 and wire == 2:
            s, e = val
            content = data[s:e]
        elif num == 3 and wire == 0:
            filesize = val
        elif num == 4 and wire == 0:
            blocksizes.append(val)
        elif num == 4 and wire == 2:  # packed encoding is legal protobuf too
            s, e = val
            pos = s
            while pos < e:
                v, pos = _varint(data, pos, e)
                blocksizes.append(v)
        elif num == 5 and wire == 0:
            hash_type = val
        elif num == 6 and wire == 0:
            fanout = val
        # mode, mtime and unknown fields do not change file content.
        if len(blocksizes) > MAX_LINKS:
            raise DagPbError("too many blocksizes")
    if ftype is None:
        raise DagPbError("UnixFS data without a type")
    try:
        kind = UnixFsType(ftype)
    except ValueError:
        raise DagPbError(f"unknown UnixFS type {ftype}") from None
    return UnixFsData(kind, content, filesize, tuple(blocksizes), hash_type, fanout)


# ---- writer ------------------------------------------------------------------------------


def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _enc_bytes(num: int, payload: bytes) -> bytes:
    return _enc_varint(num << 3 | 2) + _enc_varint(len(payload)) + payload


def _enc_uint(num: int, value: int) -> bytes:
    return _enc_varint(num << 3) + _enc_varint(value)


def encode_node(links: list[PbLink], data: bytes | None) -> bytes:
    out = bytearray()
    for link in links:
        body = _enc_bytes(1, cid_bytes(link.cid))
        if link.name is not None:
            body += _enc_bytes(2, link.name.encode())
        if link.tsize is not None:
            body += _enc_uint(3, link.tsize)
        out += _enc_bytes(2, body)
    if data is not None:
        out += _enc_bytes(1, data)
    return bytes(out)


def encode_unixfs(u: UnixFsData) -> bytes:
    out = _enc_uint(1, int(u.type))
    if u.data:
        out += _enc_bytes(2, u.data)
    if u.filesize is not None:
        out += _enc_uint(3, u.filesize)
    for bs in u.blocksizes:
        out += _enc_uint(4, bs)
    if u.hash_type is not None:
        out += _enc_uint(5, u.hash_type)
    if u.fanout is not None:
        out += _enc_uint(6, u.fanout)
    return out


@dataclass
class BuiltDag:
    root: Cid
    blocks: dict[str, bytes]  # canonical CID key -> block bytes
    cids: dict[str, Cid]

    def add(self, cid: Cid, block: bytes) -> None:
        self.blocks[cid.key] = block
        self.cids[cid.key] = cid


def build_file(
    content: bytes,
    *,
    chunk_size: int = 262_144,
    raw_leaves: bool = False,
    cid_version: int = 0,
    max_links: int = 174,
) -> BuiltDag:
    """Build a balanced UnixFS file DAG the way ``ipfs add`` does with its default chunker."""
    dag = BuiltDag(root=None, blocks={}, cids={})  # type: ignore[arg-type]
    chunks = [content[i : i + chunk_size] for i in range(0, len(content), chunk_size)] or [b""]
    # Each level holds (cid, total serialized size, file bytes) per node.
    level: list[tuple[Cid, int, int]] = []
    for chunk in chunks:
        if raw_leaves and len(chunks) > 1:
            cid = cid_for(chunk, RAW, 1)
            dag.add(cid, chunk)
            level.append((cid, len(chunk), len(chunk)))
        else:
            data = encode_unixfs(UnixFsData(UnixFsType.FILE, chunk, len(chunk)))
            block = encode_node([], data)
            cid = cid_for(block, DAG_PB, cid_version)
            dag.add(cid, block)
            level.append((cid, len(block), len(chunk)))
    while len(level) > 1:
        parents: list[tuple[Cid, int, int]] = []
        for i in range(0, len(level), max_links):
            group = level[i : i + max_links]
            links = [PbLink(c, "", tsize) for c, tsize, _ in group]
            sizes = tuple(n for _, _, n in group)
            data = encode_unixfs(UnixFsData(UnixFsType.FILE, b"", sum(sizes), sizes))
            block = encode_node(links, data)
            cid = cid_for(block, DAG_PB, cid_version)
            dag.add(cid, block)
            parents.append((cid, len(block) + sum(t for _, t, _ in group), sum(sizes)))
        level = parents
    dag.root = level[0][0]
    return dag


def build_directory(
    entries: dict[str, tuple[Cid, int]], *, cid_version: int = 0
) -> tuple[Cid, bytes]:
    """A (non-sharded) UnixFS directory; entries map name -> (cid, cumulative size)."""
    links = [PbLink(cid, name, tsize) for name, (cid, tsize) in sorted(entries.items())]
    block = encode_node(links, encode_unixfs(UnixFsData(UnixFsType.DIRECTORY)))
    return cid_for(block, DAG_PB, cid_version), block
