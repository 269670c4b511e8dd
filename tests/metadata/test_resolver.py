"""The resolver against real HTTP servers on loopback (the dev gateway), including every
misbehaviour: each one fails only the source (or job) it hits, with the right reason."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from indexer.metadata.cid import DAG_PB, Cid, cid_for, identity_content, parse_cid
from indexer.metadata.dagpb import PbLink, UnixFsData, UnixFsType, encode_node, encode_unixfs
from indexer.metadata.devgateway import RunningGateway
from indexer.metadata.errors import (
    DagPbError,
    DocumentError,
    NotAllowedError,
    ResolutionFailed,
    SchemaError,
)
from indexer.metadata.fetch import parse_retry_after
from indexer.metadata.resolver import MAX_BLOCKS, Resolver, read_file
from infra.config import MetadataSettings
from tests.metadata.conftest import Store, fast_settings


@pytest.fixture
async def make() -> AsyncIterator[Callable[[MetadataSettings], Resolver]]:
    made: list[Resolver] = []

    def factory(settings: MetadataSettings) -> Resolver:
        r = Resolver.create(settings)
        made.append(r)
        return r

    yield factory
    for r in made:
        await r.aclose()


async def test_raw_cid_resolves_and_is_verified(store: Store, gw: RunningGateway, make) -> None:
    cid = store.doc(name="raw one")
    res = await make(fast_settings(gw.url)).resolve(f"ipfs://{cid}")
    assert res.document == {"sip": 16, "name": "raw one"}
    assert res.cid == cid.key
    assert res.resolved_by == gw.url.split("//")[1]


async def test_multi_block_dag_pb_file(store: Store, gw: RunningGateway, make) -> None:
    body = b'{"sip":16,"name":"big","description":"' + b"x" * 700_000 + b'"}'
    dag = store.file(body)
    assert len(dag.blocks) == 4
    res = await make(fast_settings(gw.url)).resolve(f"ipfs://{dag.root}")
    assert res.raw_size == len(body)
    assert res.document["name"] == "big"


async def test_raw_leaves_v1_file_and_directory_path(
    store: Store, gw: RunningGateway, make
) -> None:
    body = b'{"sip":16,"name":"in a dir","pad":"' + b"y" * 300_000 + b'"}'
    dag = store.file(body, raw_leaves=True, cid_version=1)
    other = store.doc(name="sibling")
    sub = store.directory({"1.json": (dag.root, len(body)), "2.json": (other, 30)})
    top = store.directory({"meta": (sub, len(body) + 100)})
    r = make(fast_settings(gw.url))
    res = await r.resolve(f"ipfs://{top}/meta/1.json")
    assert res.document["name"] == "in a dir"
    assert res.cid == dag.root.key
    with pytest.raises(ResolutionFailed) as err:
        await r.resolve(f"ipfs://{top}/meta/3.json")
    assert err.value.reason == "not_found" and err.value.permanent


async def test_kubo_rpc_source(store: Store, gw: RunningGateway, make) -> None:
    cid = store.doc(name="via kubo")
    dag = store.file(b'{"sip":16,"name":"kubo dag"}' + b" " * 300_000)
    settings = fast_settings(kubo_rpc_url=gw.url)
    r = make(settings)
    assert (await r.resolve(f"ipfs://{cid}")).resolved_by.startswith("kubo:")
    assert (await r.resolve(f"ipfs://{dag.root}")).document["name"] == "kubo dag"
    # The RPC is POST-only, like Kubo's.
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{gw.url}/api/v0/cat?arg={cid}")).status_code == 405


async def test_wrong_bytes_fail_that_gateway_and_the_next_one_serves(
    store: Store, gw: RunningGateway, gw2: RunningGateway, make
) -> None:
    cid = store.doc(name="tampered")
    gw.gateway.set_behaviour(cid.key, "wrong_bytes")
    res = await make(fast_settings(gw.url, gw2.url)).resolve(f"ipfs://{cid}")
    assert res.resolved_by == gw2.url.split("//")[1]
    assert [(s, e.reason) for s, e in res.failures] == [(gw.url.split("//")[1], "hash_mismatch")]


async def test_wrong_bytes_everywhere_is_a_failure_not_a_document(
    store: Store, gw: RunningGateway, make
) -> None:
    cid = store.doc(name="tampered")
    gw.gateway.set_behaviour(cid.key, "wrong_bytes")
    with pytest.raises(ResolutionFailed) as err:
        await make(fast_settings(gw.url)).resolve(f"ipfs://{cid}")
    assert err.value.reason == "hash_mismatch" and not err.value.permanent


async def test_slow_drip_is_cut_at_the_deadline(store: Store, gw: RunningGateway, make) -> None:
    cid = store.doc(name="drip")
    ok = store.doc(name="fine")
    gw.gateway.set_behaviour(cid.key, "drip")
    r = make(fast_settings(gw.url, request_timeout_s=2.0, total_timeout_s=3.0))
    started = time.monotonic()
    with pytest.raises(ResolutionFailed) as err:
        await r.resolve(f"ipfs://{cid}")
    elapsed = time.monotonic() - started
    assert err.value.reason == "timeout"
    assert elapsed < 10  # a stall would run for as long as the server cares to drip
    assert (await r.resolve(f"ipfs://{ok}")).document["name"] == "fine"


async def test_endless_body_stops_at_the_cap(store: Store, gw: RunningGateway, make) -> None:
    cid = store.doc(name="endless")
    gw.gateway.set_behaviour(cid.key, "endless")
    r = make(fast_settings(gw.url, max_bytes=200_000, total_timeout_s=10))
    with pytest.raises(ResolutionFailed) as err:
        await r.resolve(f"ipfs://{cid}")
    assert err.value.reason == "too_large"


async def test_429_retry_after_is_honoured_per_host(
    store: Store, gw: RunningGateway, gw2: RunningGateway, make
) -> None:
    cid = store.doc(name="limited")
    gw.gateway.set_behaviour(cid.key, "rate_limit", retry_after=30)
    r = make(fast_settings(gw.url, gw2.url))
    res = await r.resolve(f"ipfs://{cid}")
    assert res.resolved_by == gw2.url.split("//")[1]
    assert res.failures[0][1].reason == "rate_limited"
    host = gw.url.split("//")[1]
    assert 25 < r.http.limiter.blocked_for(host) <= 30
    # While blocked, the host is not asked again at all.
    hits = gw.gateway.hits[cid.key]
    other = store.doc(name="other")
    res2 = await r.resolve(f"ipfs://{other}")
    assert res2.failures[0][1].reason == "rate_limited"
    assert gw.gateway.hits[cid.key] == hits and gw.gateway.hits[other.key] == 0
    with pytest.raises(ResolutionFailed) as err:
        await make(fast_settings(gw.url)).resolve(f"ipfs://{cid}")
    assert err.value.retry_after == 30


def test_retry_after_forms() -> None:
    assert parse_retry_after("7") == 7
    assert parse_retry_after("garbage", default=3) == 3
    assert parse_retry_after("99999999") == 3600
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") <= 1


async def test_500s_are_retried_then_reported(store: Store, gw: RunningGateway, make) -> None:
    cid = store.doc(name="flaky")
    gw.gateway.set_behaviour(cid.key, "error500", times=1)
    res = await make(fast_settings(gw.url)).resolve(f"ipfs://{cid}")
    assert res.document["name"] == "flaky"  # one transient 500 is absorbed
    gw.gateway.set_behaviour(cid.key, "error500")
    with pytest.raises(ResolutionFailed) as err:
        await make(fast_settings(gw.url)).resolve(f"ipfs://{cid}")
    assert err.value.reason == "http_status"


async def test_redirect_loop(store: Store, gw: RunningGateway, make) -> None:
    cid = store.doc(name="loop")
    gw.gateway.set_behaviour(cid.key, "redirect_loop")
    with pytest.raises(ResolutionFailed) as err:
        await make(fast_settings(gw.url)).resolve(f"ipfs://{cid}")
    assert err.value.reason in ("redirect_loop", "too_many_redirects")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"sip": 16, "name": "broken"', "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, "json_bomb"),
        (b'{"sip":16,"name":"n","v":' + b"1" * 10_000 + b"}", "huge_number"),
        (b'{"sip": 15, "name": "old"}', "schema"),
    ],
)
async def test_bad_documents_are_permanent(
    store: Store, gw: RunningGateway, make, content: bytes, reason: str
) -> None:
    cid = store.raw(content)
    with pytest.raises(DocumentError) as err:
        await make(fast_settings(gw.url)).resolve(f"ipfs://{cid}")
    assert err.value.reason == reason
    assert err.value.permanent
    if reason == "schema":
        assert isinstance(err.value, SchemaError) and err.value.errors[0].field == "sip"


async def test_path_gateway_only_when_verifiable(store: Store, gw: RunningGateway, make) -> None:
    dag = store.file(b'{"sip":16,"name":"path gw"}' + b" " * 400_000)
    settings = fast_settings(path_gateways=[gw.url])
    r = make(settings)
    res = await r.resolve(f"ipfs://{dag.root}")
    assert res.resolved_by.startswith("path:")
    gw.gateway.set_behaviour(dag.root.key, "wrong_bytes")
    with pytest.raises(ResolutionFailed) as err:
        await r.resolve(f"ipfs://{dag.root}")
    assert err.value.reason == "hash_mismatch"
    top = store.directory({"a.json": (dag.root, 1)})
    with pytest.raises(ResolutionFailed) as err:
        await r.resolve(f"ipfs://{top}/a.json")
    assert err.value.reason == "unverifiable"


async def test_data_uri_and_https_policy(make) -> None:
    r = make(fast_settings())
    res = await r.resolve('data:application/json,{"sip":16,"name":"inline"}')
    assert res.document["name"] == "inline" and res.resolved_by == "data-uri"
    with pytest.raises(NotAllowedError):
        await r.resolve("https://example.org/1.json")


async def test_plain_http_for_an_allowed_host(store: Store, gw: RunningGateway, make) -> None:
    cid = store.doc(name="over http")
    host = gw.url.split("//")[1].split(":")[0]
    r = make(fast_settings(allow_https=True, https_allowed_hosts=[host]))
    # A gateway URL is re-read as an IPFS target; a non-IPFS path is fetched as plain http.
    res = await r.resolve(f"{gw.url}/_dev/web/{cid}")
    assert res.document["name"] == "over http"
    assert res.cid == cid.key  # mutable content is still keyed by the hash of what came back
    r2 = make(fast_settings(allow_https=True, https_allowed_hosts=["elsewhere.example"]))
    with pytest.raises(NotAllowedError):
        await r2.resolve(f"{gw.url}/_dev/web/{cid}")


async def test_identity_link_fan_out_cannot_multiply_work() -> None:
    """A root linking 1000 times to a node that links 1000 times to an inline (identity) leaf:
    the block bound stops the walk instead of visiting a million nodes."""
    from multiformats import CID, multihash

    file_data = encode_unixfs(UnixFsData(UnixFsType.FILE))
    leaf = encode_node([], encode_unixfs(UnixFsData(UnixFsType.FILE, b"", 0)))
    leaf_cid = parse_cid(str(CID("base32", 1, "dag-pb", multihash.wrap(leaf, "identity"))))
    inner = encode_node([PbLink(leaf_cid, "", 1)] * 1000, file_data)
    inner_cid = cid_for(inner, DAG_PB)
    root = encode_node([PbLink(inner_cid, "", 1)] * 1000, file_data)
    root_cid = cid_for(root, DAG_PB)
    blocks = {inner_cid.key: inner, root_cid.key: root}
    fetched = 0

    async def get(cid: Cid) -> bytes:
        nonlocal fetched
        fetched += 1
        inline = identity_content(cid)
        return inline if inline is not None else blocks[cid.key]

    with pytest.raises(DagPbError):
        await read_file(get, root_cid, 1_000_000)
    assert fetched <= MAX_BLOCKS + 1
