"""Every guard refuses clearly and changes nothing; SDL export; metrics; CORS."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from graphql_api.db import Reader, close_read_pools
from graphql_api.errors import LimitExceeded
from graphql_api.sdl import SDL_PATH, render
from tests.graphql_api.builder import Chain
from tests.graphql_api.conftest import Api, api_settings, start_server


@pytest.fixture
def api_overrides() -> dict[str, Any]:
    return {
        "max_depth": 6,
        "max_aliases": 3,
        "max_tokens": 100,
        "max_cost": 5_000,
        "max_body_bytes": 2_000,
        "cors_origins": ["http://app.example"],
    }


def codes(body: dict[str, Any]) -> list[str]:
    return [e.get("extensions", {}).get("code", "") for e in body.get("errors", [])]


def messages(body: dict[str, Any]) -> str:
    return " ".join(e["message"] for e in body.get("errors", []))


async def test_depth_limit(api: Api) -> None:
    body = await api.query(
        "{ certificates { nodes { facility { reports { nodes { facility { certificates"
        " { nodes { facility { name } } } } } } } } } }"
    )
    assert "data" not in body or body["data"] is None
    assert "depth" in messages(body)


async def test_alias_limit(api: Api) -> None:
    body = await api.query(
        "{ a: _meta { tipHeight } b: _meta { tipHeight } c: _meta "
        "{ tipHeight } d: _meta { tipHeight } }"
    )
    assert "aliases" in messages(body).lower()


async def test_token_limit(api: Api) -> None:
    body = await api.query("{ " + " ".join(["__typename"] * 150) + " }")
    assert "token" in messages(body).lower()


async def test_cost_limit_counts_nested_pages_and_variables(api: Api) -> None:
    q = (
        "query($n: Int!) { certificates(first: $n) { nodes { transfers(first: 5)"
        " { nodes { txid } } } } }"
    )
    body = await api.query(q, {"n": 1000})
    assert codes(body) == ["LIMIT_EXCEEDED"] and "cost" in messages(body)
    ok = await api.query(q, {"n": 10})
    assert "errors" not in ok
    # A nested connection without `first` counts at its default page (100 rows per parent row),
    # as a root list does, not at a typical size: 30 certificates with a page of transfers each
    # are over this server's 5,000 (certificates, 30 nodes, 30 transfers, 3,000 nodes and txids).
    body = await api.query(q.replace("(first: 5)", ""), {"n": 30})
    assert codes(body) == ["LIMIT_EXCEEDED"]
    assert body["errors"][0]["extensions"]["cost"] == 1 + 30 + 30 + 2 * 30 * 100


async def test_cost_counts_every_level_of_nested_lists(api: Api) -> None:
    # Before: a nested relation list counted 10 rows per parent; it returns a page (100 rows
    # without `first`).
    body = await api.query(
        "{ certificates(first: 30) { nodes { facility { certificates { nodes { tokenId } } } } } }"
    )
    assert codes(body) == ["LIMIT_EXCEEDED"] and body["errors"][0]["extensions"]["cost"] > 6000
    ok = await api.query(
        "{ certificates(first: 3) { nodes { facility { certificates(first: 10)"
        " { nodes { tokenId } } } } } }"
    )
    assert "errors" not in ok, ok
    # Root lists count at their default page (100), also without `first`.
    body = await api.query(
        "{ facilities { nodes { certificates(first: 60) { nodes { tokenId } } } } }"
    )
    assert codes(body) == ["LIMIT_EXCEEDED"] and body["errors"][0]["extensions"]["cost"] > 6000


async def test_cost_cached_per_document_follows_first_variables(api: Api) -> None:
    # The same text is estimated once per distinct `first` value: a cheap value first must not
    # let an expensive one through later, also when `first` sits in a fragment.
    q = (
        "query($n: Int!, $t: Int!) { certificate(tokenId: $t) { tokenId } ...F }"
        " fragment F on Query { certificates(first: $n)"
        " { nodes { transfers(first: 5) { nodes { txid } } } } }"
    )
    for n, t in ((10, 1), (10, 2), (1000, 1), (10, 3), (1000, 4)):
        body = await api.query(q, {"n": n, "t": t})
        expected = ["LIMIT_EXCEEDED"] if n == 1000 else []
        assert codes(body) == expected, (n, body)


async def test_metrics_label_aliased_root_fields_by_field_name(api: Api) -> None:
    await api.query("{ mine: certificates(first: -2) { totalCount } t: _meta { tipHeight } }")
    text_ = (await api.client.get("/metrics")).text
    assert 'recchain_api_errors_total{code="BAD_USER_INPUT",field="certificates"}' in text_
    assert 'field="mine"' not in text_ and 'field="t"' not in text_


async def test_body_size_limit(api: Api) -> None:
    big = "{ _meta { tipHeight } }" + " " * 3_000
    resp = await api.client.post("/graphql", json={"query": big})
    assert resp.status_code == 413 and resp.json()["errors"][0]["extensions"]["code"] == (
        "PAYLOAD_TOO_LARGE"
    )

    async def chunks() -> Any:  # no content-length: the limit still holds
        for _ in range(10):
            yield b" " * 500

    resp = await api.client.post(
        "/graphql", content=chunks(), headers={"content-type": "application/json"}
    )
    assert resp.status_code == 413


async def test_statement_timeout_is_typed_and_local(engine: AsyncEngine) -> None:
    reader = Reader(engine, 50)
    with pytest.raises(LimitExceeded, match="statement timeout of 50 ms"):
        await reader.all("SELECT pg_sleep(2)")
    await reader.close()
    # The timeout is set on the API's own read connections only: others keep the default.
    reader = Reader(engine, 50, snapshot=False)
    assert await reader.one("SHOW statement_timeout") == {"statement_timeout": "50ms"}
    async with engine.connect() as conn:
        assert (await conn.execute(text("SHOW statement_timeout"))).scalar() == "0"
    await close_read_pools(engine)


async def test_internal_errors_are_masked(api: Api, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE bids RENAME TO bids_gone"))
    body = await api.query("{ bids { totalCount } }")
    assert messages(body) == "Internal server error."
    assert "relation" not in str(body["errors"]) and "SELECT" not in str(body["errors"])


async def test_rate_limit_per_client(db_url: str, engine: AsyncEngine) -> None:
    from graphql_api.app import create_app

    app = create_app(api_settings(db_url, rate_limit_per_minute=3), engine=engine)
    server, task, port = await start_server(app)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            statuses = [
                (await client.post("/graphql", json={"query": "{ _meta { tipHeight } }"}))
                for _ in range(4)
            ]
        assert [r.status_code for r in statuses] == [200, 200, 200, 429]
        assert int(statuses[-1].headers["retry-after"]) >= 1
        assert statuses[-1].json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    finally:
        server.should_exit = True
        await task


async def test_cors_allows_only_configured_origins(api: Api) -> None:
    pre = {"access-control-request-method": "POST"}
    good = await api.client.options("/graphql", headers={"origin": "http://app.example", **pre})
    assert good.headers.get("access-control-allow-origin") == "http://app.example"
    bad = await api.client.options("/graphql", headers={"origin": "http://evil.example", **pre})
    assert "access-control-allow-origin" not in bad.headers


async def test_metrics_count_latency_and_errors_per_root_field(api: Api) -> None:
    await api.query("{ _meta { tipHeight } }")
    await api.query("{ certificates(first: -1) { totalCount } }")
    text_ = (await api.client.get("/metrics")).text
    assert 'recchain_api_field_seconds_count{field="_meta"}' in text_
    assert 'recchain_api_errors_total{code="BAD_USER_INPUT",field="certificates"}' in text_
    assert "recchain_api_subscriptions" in text_


async def test_bad_input_changes_nothing(api: Api, engine: AsyncEngine) -> None:
    chain = Chain()
    chain.block()
    chain.facility()
    await chain.write(engine)
    before = (await api.data("{ facilities { totalCount } }"))["facilities"]["totalCount"]
    for q in (
        '{ facilities(where: {facilityId_in: ["x"]}) { totalCount } }',
        '{ facilities(block: {number: 1, hash: "0x"}) { totalCount } }',
        '{ node(id: "bm90LWFuLWlk") { id } }',
    ):
        body = await api.query(q)
        assert body.get("errors"), q
    assert (await api.data("{ facilities { totalCount } }"))["facilities"]["totalCount"] == before


def test_exported_sdl_matches_the_code() -> None:
    assert SDL_PATH.read_text() == render(), "run: python -m graphql_api.sdl"


def test_every_field_is_documented() -> None:
    from graphql import GraphQLObjectType

    from graphql_api.schema import build_schema

    schema = build_schema()._schema
    missing = [
        f"{name}.{field}"
        for name, tp in schema.type_map.items()
        if isinstance(tp, GraphQLObjectType) and not name.startswith("__")
        for field, definition in tp.fields.items()
        if not definition.description
    ]
    assert missing == []


def test_document_caches_keep_what_is_used() -> None:
    from graphql_api.guards import Lru

    cache = Lru(2)
    cache.put("hot", 1)
    cache.put("one-off", 2)
    assert cache.get("hot") == 1  # a hit makes "hot" the youngest
    cache.put("another", 3)
    assert "hot" in cache and "one-off" not in cache
    assert cache.get("missing", "default") == "default" and cache.get("missing") is None
