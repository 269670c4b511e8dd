"""The short HTTP path (http.py) and the reader under it: same answers as Strawberry's view, one
snapshot per operation, optimistic single statements, a bounded pool."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from graphql_api.db import NeedsSnapshot, Reader, close_read_pools, read_pool
from tests.graphql_api.builder import Chain
from tests.graphql_api.conftest import Api

TIP = "SELECT max(block_height) AS h FROM blocks WHERE canonical"


async def add_block(engine: AsyncEngine, height: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO blocks (index_block_hash, block_hash, block_height,"
                " parent_index_block_hash, burn_block_height, burn_block_hash, burn_block_time,"
                " block_time, canonical) VALUES (:i, :b, :h, :p, :h, :bb, 0, 0, true)"
            ),
            {
                "i": f"0xi{height}",
                "b": f"0xb{height}",
                "h": height,
                "p": "0x",
                "bb": f"0xbb{height}",
            },
        )


async def test_snapshot_reader_sees_one_state_across_commits(engine: AsyncEngine) -> None:
    await add_block(engine, 1)
    reader = Reader(engine, 5_000)
    try:
        assert (await reader.one(TIP)) == {"h": 1}
        await add_block(engine, 2)
        assert (await reader.one(TIP)) == {"h": 1}
    finally:
        await reader.close()
    fresh = Reader(engine, 5_000)
    assert (await fresh.one(TIP)) == {"h": 2}
    await fresh.close()
    await close_read_pools(engine)


async def test_optimistic_reader_refuses_a_second_statement(engine: AsyncEngine) -> None:
    reader = Reader(engine, 5_000, optimistic=True)
    assert (await reader.one("SELECT 1 AS one")) == {"one": 1}
    with pytest.raises(NeedsSnapshot):
        await reader.one("SELECT 2 AS two")
    assert reader.needs_snapshot
    await reader.close()
    await close_read_pools(engine)


async def test_pool_never_opens_more_than_its_size(engine: AsyncEngine) -> None:
    pool = read_pool(engine, 5_000)
    readers = [Reader(engine, 5_000, snapshot=False) for _ in range(pool.size * 3)]
    rows = await asyncio.gather(*(r.one("SELECT pg_sleep(0.01), 1 AS one") for r in readers))
    assert all(r is not None and r["one"] == 1 for r in rows)
    assert pool._open <= pool.size
    await close_read_pools(engine)


def chain_with_tokens() -> Chain:
    chain = Chain()
    chain.block()
    fid = chain.facility(name="Sunny Park")
    for i in range(3):
        chain.mint(fid, f"ST1HOLDER{i}", 1_000_000)
    chain.block()
    return chain


async def both_paths(api: Api, query: str, variables: dict[str, Any]) -> tuple[Any, Any]:
    """The answer over POST (the short path) and over GET (Strawberry's view)."""
    fast = await api.query(query, variables)
    slow = await api.client.get(
        "/graphql",
        params={"query": query, "variables": json.dumps(variables)},
        headers={"accept": "application/json"},
    )
    return fast, slow.json()


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("query($t: Int!) { certificate(tokenId: $t) { tokenId owner wh } }", {"t": 1}),
        # Two statements (the tip, then the lookup): the optimistic run is redone.
        (
            "query($t: Int!) { certificate(tokenId: $t, block: {number: 1}) { tokenId } }",
            {"t": 2},
        ),
        (
            "{ a: certificate(tokenId: 1) { owner } b: certificates(first: 2) { totalCount"
            " nodes { tokenId facility { name } } } _meta { tipHeight } }",
            {},
        ),
        ("{ certificates(first: -1) { totalCount } }", {}),
        # Leaf attributes read directly (scalars, enums, BigInt, DateTime, nulls) and fields
        # with resolvers beside them.
        (
            "{ certificates(first: 3) { edges { cursor node { id tokenId owner status wh"
            " periodStart reportId metadataUri parentTokenId issuedTxid splitHeight } } } }",
            {},
        ),
        (
            "query($o: String!) { holdings(owner: $o) { owner atHeight totalWh breakdown"
            " { dimension key wh } certificates { totalCount nodes { tokenId wh } } } }",
            {"o": "ST1HOLDER1"},
        ),
        ("{ certificate(tokenId: 1, block: {number: 99}) { owner } }", {}),
        ("query($t: Int!) { certificate(tokenId: $t) { owner } }", {"t": "x"}),
    ],
)
async def test_short_path_answers_as_strawberry_does(
    api: Api, engine: AsyncEngine, query: str, variables: dict[str, Any]
) -> None:
    await chain_with_tokens().write(engine)
    for _ in range(2):  # the second time, the document's plan is known
        fast, slow = await both_paths(api, query, variables)
        assert fast == slow
    assert fast.get("data") is not None or fast.get("errors")


async def test_documents_strawberry_refuses_keep_their_errors(api: Api) -> None:
    for query in ("{ certificate(tokenId: 1) { nope } }", "{ certificate(", "mutation { x }"):
        body = await api.query(query)
        assert body["errors"] and body.get("data") is None, query


def test_rows_become_the_objects_their_constructor_makes() -> None:
    import graphql_api.schema  # noqa: F401  (registers the entities)
    from graphql_api.query import ENTITIES

    for name, entity in ENTITIES.items():
        assert entity.plain, name  # otherwise from_row falls back to the constructor
        row = {c: f"{c}-value" for c in entity.columns} | {"id": 7}
        made = entity.from_row(row, 3)
        values = {c: row[c] for c in entity.columns}
        if entity.key == "id":
            values["id_"] = 7
        built = entity.type_(**values, _at=3)
        assert vars(made) == vars(built) and made == built, name


LEAVES = (
    "tokenId facilityId reportId owner status periodStart periodEnd vintage wh serialStart"
    " serialEnd metadataUri parentTokenId issuedHeight issuedTxid issuedAt splitHeight splitTxid"
    " splitAt expiresAt revokedHeight revokedBy revocationReason __typename"
)


@pytest.mark.parametrize(
    ("selection", "fragments"),
    [
        (f"nodes {{ {LEAVES} }} edges {{ cursor node {{ tokenId owner }} }}", ""),
        (
            "nodes { ...F } edges { node { ... on Certificate { wh } } }",
            " fragment F on Certificate { tokenId x: wh status }",
        ),
        ("totalCount pageInfo { hasNextPage }", ""),
    ],
)
async def test_holdings_read_only_the_columns_selected_with_the_same_answer(
    api: Api,
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    selection: str,
    fragments: str,
) -> None:
    await chain_with_tokens().write(engine)
    statements: list[str] = []
    execute = Reader._execute

    async def counted(self: Reader, conn: Any, sql: str | bytes, params: Any) -> Any:
        statements.append(str(sql))
        return await execute(self, conn, sql, params)

    monkeypatch.setattr(Reader, "_execute", counted)
    query = "query($o: String!) { holdings(owner: $o) { certificates { %s } } }" + fragments
    projected = await api.data(query % selection, {"o": "ST1HOLDER1"})
    assert not any("c.*" in s for s in statements), statements
    statements.clear()
    # `mwh` has a resolver: every column is read, as before.
    whole = await api.data(query % ("nodes { mwh } " + selection), {"o": "ST1HOLDER1"})
    assert any("c.*" in s for s in statements), statements
    got = projected["holdings"]["certificates"]
    for item in whole["holdings"]["certificates"]["nodes"]:
        item.pop("mwh")
    if "nodes" not in got:
        whole["holdings"]["certificates"].pop("nodes")
    assert got == whole["holdings"]["certificates"]
    assert got.get("nodes") or got["totalCount"] == 1


async def test_awaitables_are_told_apart_as_graphql_core_does() -> None:
    import inspect

    from graphql.pyutils import is_awaitable as graphql_core_is_awaitable

    from graphql_api.http import is_awaitable

    async def coroutine() -> int:
        return 1

    def generator() -> Any:
        yield 1

    running = coroutine()
    future = asyncio.get_running_loop().create_future()
    future.set_result(1)
    values = [1, "x", None, [], {}, object(), running, future, generator(), asyncio.sleep(0)]
    for _ in range(2):  # the second time from what the first learnt per type
        assert [is_awaitable(v) for v in values] == [graphql_core_is_awaitable(v) for v in values]
    assert is_awaitable(running) and not is_awaitable(generator())
    for value in values:
        if inspect.iscoroutine(value):
            await value
