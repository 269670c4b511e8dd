"""Second lines behind the cost estimate (the answer's size, a request's time) and the
production switches (introspection, suggestions), against a real uvicorn serving the API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from graphql_api.app import create_app
from graphql_api.db import read_pool
from tests.graphql_api.builder import Chain
from tests.graphql_api.conftest import api_settings, start_server

Serve = Callable[..., Any]


@asynccontextmanager
async def served(db_url: str, engine: AsyncEngine, **api: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(api_settings(db_url, **api), engine=engine)
    server, task, port = await start_server(app)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            yield c
    finally:
        server.should_exit = True
        await task


def errors(resp: httpx.Response) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    found: list[dict[str, Any]] = resp.json().get("errors") or []
    return found


async def chain_with_certificates(engine: AsyncEngine, n: int) -> None:
    chain = Chain()
    chain.block()
    fid = chain.facility(name="Big Park")
    for i in range(n):
        chain.mint(fid, f"ST1HOLDER{i % 7}", 1_000_000 + i)
    chain.block()
    await chain.write(engine)


async def test_an_answer_over_the_size_limit_is_replaced_by_an_error(
    db_url: str, engine: AsyncEngine
) -> None:
    await chain_with_certificates(engine, 60)
    query = "{ certificates(first: 60) { nodes { tokenId owner wh facility { name } } } }"
    async with served(db_url, engine, max_response_bytes=2000) as c:
        accept = {"accept": "application/json"}
        for resp in (
            await c.post("/graphql", json={"query": query}),  # the short path
            await c.get("/graphql", params={"query": query}, headers=accept),
        ):
            (error,) = errors(resp)
            assert error["extensions"] == {
                "code": "LIMIT_EXCEEDED",
                "limit": "max_response_bytes",
                "max": 2000,
            }
        small = await c.post(
            "/graphql", json={"query": "{ certificates(first: 2) { totalCount } }"}
        )
        assert not errors(small) and small.json()["data"]["certificates"]["totalCount"] == 60


async def test_a_request_over_its_time_is_cancelled_and_its_connection_returned(
    db_url: str, engine: AsyncEngine
) -> None:
    await chain_with_certificates(engine, 20)
    # Twenty root fields with a statement each (and a count each): far over 1 ms.
    fields = " ".join(
        f'f{i}: facilities(first: 5, where: {{name_contains: "a{i}"}}) {{ totalCount }}'
        for i in range(20)
    )
    async with served(db_url, engine, request_timeout_ms=1, max_aliases=30) as c:
        for _ in range(10):
            (error,) = errors(await c.post("/graphql", json={"query": "{ " + fields + " }"}))
            assert error["extensions"]["code"] == "LIMIT_EXCEEDED", error
            assert error["extensions"]["limit"] == "request_timeout"
        # Nothing leaked: every connection the cancelled readers took is back or closed.
        pool = read_pool(engine, api_settings(db_url).api.statement_timeout_ms)
        assert pool._open == len(pool._idle) and not pool._waiters
        health = await c.get("/healthz")
        assert health.status_code == 200


async def test_introspection_and_suggestions_can_be_turned_off(
    db_url: str, engine: AsyncEngine
) -> None:
    introspect = "{ __schema { queryType { name } } }"
    typo = "{ certificats(first: 1) { totalCount } }"
    async with served(db_url, engine) as c:
        on = (await c.post("/graphql", json={"query": introspect})).json()
        assert on["data"]["__schema"]["queryType"]["name"] == "Query"
        (error,) = errors(await c.post("/graphql", json={"query": typo}))
        assert "Did you mean" in error["message"] and "'certificates'" in error["message"]
    async with served(db_url, engine, introspection=False, field_suggestions=False) as c:
        for query in (introspect, '{ __type(name: "Certificate") { name } }'):
            for method in ("POST", "GET"):
                if method == "POST":
                    resp = await c.post("/graphql", json={"query": query})
                else:
                    accept = {"accept": "application/json"}
                    resp = await c.get("/graphql", params={"query": query}, headers=accept)
                found = errors(resp)
                assert found and resp.json().get("data") is None, resp.text
                for error in found:
                    assert "introspection" in error["message"].lower(), error
                    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        (error,) = errors(await c.post("/graphql", json={"query": typo}))
        assert error["message"] == "Cannot query field 'certificats' on type 'Query'."
        variables = {"o": [{"field": "tokenId", "direction": "ascc"}]}
        (error,) = errors(
            await c.post(
                "/graphql",
                json={
                    "query": "query($o: [CertificateOrderBy!]) { certificates(orderBy: $o)"
                    " { totalCount } }",
                    "variables": variables,
                },
            )
        )
        assert "Did you mean" not in error["message"] and "ascc" in error["message"]
        # __typename is not introspection of the schema: still answered.
        ok = (await c.post("/graphql", json={"query": "{ __typename }"})).json()
        assert ok["data"] == {"__typename": "Query"}
