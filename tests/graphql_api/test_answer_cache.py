"""The answer cache (graphql_api/answercache.py) on a real API process over a real database: a
repeated query is served from it byte for byte; a block indexed through the pipeline, or a fork
that replaces the tip at the same height, makes the next request a miss with the new answer;
answers with errors and documents reading beyond the chain are never kept; the bounds evict;
the setting turns it off."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from graphql import parse
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.channels import BLOCKS
from graphql_api.answercache import (
    VOLATILE_FIELDS,
    VOLATILE_TYPES,
    AnswerCache,
    chain_only,
    variables_key,
)
from graphql_api.db import Reader
from graphql_api.schema import build_schema
from ops.bench.chaingen import account
from tests.graphql_api.conftest import Api
from tests.graphql_api.livechain import LiveChain
from tests.graphql_api.wsclient import wait_for

HOLDINGS = (
    "query($o: String!) { _meta { block { height hash } }"
    " holdings(owner: $o, first: 50) { certificates { totalCount nodes { tokenId } } } }"
)
OWNER = account(1)  # every mint of the market model goes to it


def hits() -> float:
    return REGISTRY.get_sample_value("recchain_api_answer_cache_hits_total") or 0.0


def misses(reason: str) -> float:
    value = REGISTRY.get_sample_value("recchain_api_answer_cache_misses_total", {"reason": reason})
    return value or 0.0


async def post(api: Api, query: str, variables: dict[str, Any] | None = None) -> httpx.Response:
    resp = await api.client.post("/graphql", json={"query": query, "variables": variables or {}})
    assert resp.status_code == 200, resp.text
    return resp


def answers(api: Api) -> AnswerCache | None:
    cache: AnswerCache | None = api.app.state.hub.answers
    return cache


async def knows(api: Api, chain: LiveChain) -> None:
    """Until the API process has been told the chain's tip (its LISTEN connection)."""
    cache = answers(api)
    assert cache is not None
    await wait_for(lambda: cache.tip == (chain.height, chain.tip), "the API to learn the tip")


async def started(api: Api, db_url: str, tokens: int = 3) -> LiveChain:
    chain = LiveChain(db_url, seed=5)
    await chain.add(chain.setup_and_mint(tokens=tokens))
    await knows(api, chain)
    return chain


async def test_a_repeated_query_is_served_from_the_cache_byte_for_byte(
    api: Api, db_url: str
) -> None:
    chain = await started(api, db_url)
    first = await post(api, HOLDINGS, {"o": OWNER})
    data = first.json()["data"]
    assert data["holdings"]["certificates"]["totalCount"] == 3
    assert data["_meta"]["block"]["hash"] == chain.tip
    before = hits()
    second = await post(api, HOLDINGS, {"o": OWNER})
    assert hits() == before + 1
    assert second.content == first.content
    # Other variables are another answer, computed once.
    before_absent = misses("absent")
    other = await post(api, HOLDINGS, {"o": account(2)})
    assert misses("absent") == before_absent + 1
    assert other.json()["data"]["holdings"]["certificates"]["totalCount"] == 0


async def test_a_one_statement_query_is_kept_once_it_repeats(
    api: Api, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await started(api, db_url)
    statements: list[str | bytes] = []
    execute = Reader._execute

    async def counted(self: Reader, conn: Any, sql: str | bytes, params: Any) -> Any:
        statements.append(sql)
        return await execute(self, conn, sql, params)

    monkeypatch.setattr(Reader, "_execute", counted)
    one = "query($t: Int!) { certificate(tokenId: $t) { tokenId owner } }"
    bodies = []
    for expected in (1, 4, 0):  # alone; BEGIN, it, the tip, ROLLBACK; from the cache
        statements.clear()
        bodies.append((await post(api, one, {"t": 2})).content)
        assert len(statements) == expected, statements
    assert bodies[0] == bodies[1] == bodies[2]
    assert json.loads(bodies[0])["data"]["certificate"] == {"tokenId": 2, "owner": OWNER}


async def test_a_new_block_makes_the_next_request_a_miss_with_the_new_answer(
    api: Api, db_url: str
) -> None:
    chain = await started(api, db_url)
    old = await post(api, HOLDINGS, {"o": OWNER})
    assert (await post(api, HOLDINGS, {"o": OWNER})).content == old.content
    tokens = [n["tokenId"] for n in old.json()["data"]["holdings"]["certificates"]["nodes"]]
    assert 1 in tokens

    await chain.add([chain.transfer(1)])  # the real indexer pipeline: commit and NOTIFY
    await knows(api, chain)
    before_hits, before_stale = hits(), misses("tip")
    new = (await post(api, HOLDINGS, {"o": OWNER})).json()["data"]
    assert misses("tip") == before_stale + 1
    assert hits() == before_hits
    assert new["_meta"]["block"] == {"height": chain.height, "hash": chain.tip}
    assert [n["tokenId"] for n in new["holdings"]["certificates"]["nodes"]] == [
        t for t in tokens if t != 1
    ]
    # ... which is kept in its turn, under the new tip.
    again = (await post(api, HOLDINGS, {"o": OWNER})).json()["data"]
    assert hits() == before_hits + 1
    assert again == new


async def test_a_fork_replacing_the_tip_at_the_same_height_invalidates(
    api: Api, db_url: str, engine: AsyncEngine
) -> None:
    chain = await started(api, db_url)
    await chain.add([chain.transfer(2)])
    await knows(api, chain)
    old = await post(api, HOLDINGS, {"o": OWNER})
    assert (await post(api, HOLDINGS, {"o": OWNER})).content == old.content
    height, orphaned = chain.height, chain.tip
    parent = chain.blocks[-2]["index_block_hash"]
    sibling = "0x" + "5e" * 32
    # Another block at the tip's height, written and notified the way the indexer does: the
    # rollback's notification (no tip), then the batch's with the new tip, in one commit.
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE blocks SET canonical = false WHERE index_block_hash = :h"),
            {"h": orphaned},
        )
        await conn.execute(
            text(
                "INSERT INTO blocks (index_block_hash, block_hash, block_height,"
                " parent_index_block_hash, burn_block_height, burn_block_hash, burn_block_time,"
                " block_time, canonical) VALUES (:i, :b, :h, :p, :h, :bb, 0, 0, true)"
            ),
            {"i": sibling, "b": "0x" + "5f" * 32, "h": height, "p": parent, "bb": "0x" + "60" * 32},
        )
        for payload in (
            {"rolled_back": [orphaned], "fork_height": height - 1},
            {"height": height, "hash": sibling, "canonical_tip": sibling, "rolled_back": []},
        ):
            await conn.execute(
                text("SELECT pg_notify(:c, :p)"), {"c": BLOCKS, "p": json.dumps(payload)}
            )
    cache = answers(api)
    assert cache is not None
    await wait_for(lambda: cache.tip == (height, sibling), "the API to learn the fork")
    before_hits = hits()
    new = (await post(api, HOLDINGS, {"o": OWNER})).json()["data"]
    assert hits() == before_hits
    assert new["_meta"]["block"] == {"height": height, "hash": sibling}


async def test_answers_with_errors_and_documents_beyond_the_chain_are_not_kept(
    api: Api, db_url: str
) -> None:
    await started(api, db_url)
    cache = answers(api)
    assert cache is not None
    future = "query($o: String!) { holdings(owner: $o, block: {number: 99}) { owner } }"
    volatile = "{ _meta { tipHeight lagSeconds } }"
    before = hits()
    for query, variables in ((future, {"o": OWNER}), (volatile, {})):
        for _ in range(3):
            body = (await post(api, query, variables)).json()
    assert body["data"]["_meta"]["tipHeight"] == 1
    errors = (await post(api, future, {"o": OWNER})).json()["errors"]
    assert errors[0]["extensions"]["code"] == "BLOCK_NOT_FOUND"
    assert hits() == before
    assert len(cache) == 0


def evictions() -> float:
    return REGISTRY.get_sample_value("recchain_api_answer_cache_evictions_total") or 0.0


@pytest.mark.parametrize("api_overrides", [{"answer_cache_max_entries": 2}])
async def test_the_entry_bound_evicts_the_least_recently_used(api: Api, db_url: str) -> None:
    await started(api, db_url)
    cache = answers(api)
    assert cache is not None
    await post(api, HOLDINGS, {"o": account(1)})
    await post(api, HOLDINGS, {"o": account(2)})
    await post(api, HOLDINGS, {"o": account(1)})  # a hit: account(2) is now the oldest
    before = evictions()
    await post(api, HOLDINGS, {"o": account(3)})
    assert len(cache) == 2
    assert evictions() == before + 1
    before_hits, before_absent = hits(), misses("absent")
    await post(api, HOLDINGS, {"o": account(1)})
    assert hits() == before_hits + 1
    await post(api, HOLDINGS, {"o": account(2)})
    assert misses("absent") == before_absent + 1


@pytest.mark.parametrize("api_overrides", [{"answer_cache_max_bytes": 1500}])
async def test_the_byte_bound_evicts_and_refuses_what_cannot_fit(api: Api, db_url: str) -> None:
    await started(api, db_url, tokens=8)
    cache = answers(api)
    assert cache is not None
    for i in (1, 2, 3, 4):
        await post(api, HOLDINGS, {"o": account(i)})
        assert cache.bytes <= 1500
    assert 1 <= len(cache) < 4
    # An answer larger than the whole cache is not kept at all (and evicts nothing).
    large = (
        "{ certificates(first: 8) { nodes { tokenId owner wh serialStart serialEnd issuedTxid"
        " periodStart periodEnd facility { name } } } }"
    )
    kept = len(cache)
    assert len((await post(api, large)).content) > 1500
    before = misses("absent")
    await post(api, large)
    assert misses("absent") == before + 1
    assert len(cache) == kept


@pytest.mark.parametrize("api_overrides", [{"answer_cache": False}])
async def test_the_setting_off_means_no_caching(api: Api, db_url: str) -> None:
    chain = LiveChain(db_url, seed=5)
    await chain.add(chain.setup_and_mint(tokens=2))
    assert answers(api) is None
    before = hits(), misses("absent"), misses("tip")
    first = await post(api, HOLDINGS, {"o": OWNER})
    second = await post(api, HOLDINGS, {"o": OWNER})
    assert (hits(), misses("absent"), misses("tip")) == before
    assert first.json() == second.json()


def test_documents_reading_beyond_the_chain_are_never_cacheable() -> None:
    schema = build_schema([])._schema
    for coordinate in VOLATILE_FIELDS:
        kind, field = coordinate.split(".")
        assert field in schema.get_type(kind).fields, coordinate  # type: ignore[union-attr]
    for name in VOLATILE_TYPES:
        assert schema.get_type(name) is not None, name

    def cacheable(query: str) -> bool:
        return chain_only(schema, parse(query), None)

    assert cacheable(HOLDINGS)
    assert cacheable("{ certificate(tokenId: 1) { tokenId metadataUri } __typename }")
    assert not cacheable("{ certificate(tokenId: 1) { metadata { uri } } }")
    assert not cacheable('{ relayedTransaction(txid: "0x") { status } }')
    assert not cacheable("{ _meta { hold { kind } } }")
    assert not cacheable("{ _meta { replicaLagSeconds } }")
    assert not cacheable("{ complianceReport { expiryExposure { totalWh } } }")
    # Through fragments and abstract types.
    assert not cacheable(
        '{ node(id: "x") { ... on Certificate { ...M } } } fragment M on Certificate'
        " { metadata { uri } }"
    )
    assert not cacheable("{ _meta { ...L } } fragment L on Meta { lagSeconds }")
    assert not cacheable("subscription { blocks { height } }")


def test_entries_of_another_tip_are_misses() -> None:
    assert variables_key({"a": 1, "b": [2]}) == variables_key({"b": [2], "a": 1})
    assert variables_key(None) == variables_key({}) != variables_key({"a": None})
    cache = AnswerCache(10, 1 << 20, 60.0)
    key = ("{ q }", None, "")
    cache.put(key, (5, "0xold"), b"{}")
    assert cache.get(key) is None  # the process knows no tip yet
    cache.learn((5, "0xold"))
    assert cache.get(key) == b"{}"
    cache.notified(json.dumps({"height": 5, "hash": "0xnew"}))  # same height, another block
    assert cache.get(key) is None
    cache.notified(json.dumps({"rolled_back": ["0xnew"], "fork_height": 4}))
    assert cache.tip is None
    # A replica behind the primary files its answer under the tip it had replayed: a miss.
    cache.learn((6, "0xsix"))
    cache.put(key, (5, "0xold"), b"{}")
    assert cache.get(key) is None
    cache.forget()
    cache.put(key, (6, "0xsix"), b"{}")
    assert cache.get(key) is None
