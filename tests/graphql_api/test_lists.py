"""Lists: where dialect, multi-field orderBy, keyset cursors, time travel, no N+1; relations are
connections too."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from graphql_api.db import Reader
from tests.graphql_api.builder import Chain
from tests.graphql_api.conftest import Api


def market(n_facilities: int = 3, per_facility: int = 4) -> Chain:
    chain = Chain()
    chain.block()
    chain.verifier("ST1VERIFIER", "TUV")
    countries = ["DE", "FR", "US"]
    tokens = []
    for i in range(n_facilities):
        fid = chain.facility(
            name=f"Sunny Park {i}",
            country=countries[i % 3],
            verifier="ST1VERIFIER",
            energy_source="ES100" if i % 2 == 0 else "ES200",
        )
        for j in range(per_facility):
            tokens.append(
                chain.mint(fid, f"ST1HOLDER{j % 2}", 1_000_000 * (j + 1), vintage=2024 + j % 2)
            )
    chain.block()
    chain.transfer(tokens[0], "ST1NEWOWNER")
    chain.block()
    chain.list_fixed(tokens[1], 5_000_000)
    return chain


async def test_where_order_and_cursor_pages_match_python(api: Api, engine: AsyncEngine) -> None:
    chain = market()
    await chain.write(engine)
    certs = [
        chain.current("certificates", k) for (tbl, k) in chain.versions if tbl == "certificates"
    ]
    expected = sorted(
        (c for c in certs if c["wh"] >= 2_000_000 and c["vintage"] in (2024, 2025)),
        key=lambda c: (-c["wh"], c["token_id"]),
    )
    seen: list[int] = []
    after = None
    q = """query($after: String) { certificates(first: 2, after: $after,
        where: {wh_gte: "2000000", vintage_in: [2024, 2025]},
        orderBy: [{field: wh, direction: desc}]) {
          totalCount edges { cursor node { tokenId wh } } pageInfo { hasNextPage endCursor } } }"""
    while True:
        page = (await api.data(q, {"after": after}))["certificates"]
        assert page["totalCount"] == len(expected)
        seen += [e["node"]["tokenId"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [c["token_id"] for c in expected]


async def test_nested_and_or_and_nocase(api: Api, engine: AsyncEngine) -> None:
    chain = market()
    await chain.write(engine)
    data = await api.data(
        """{ certificates(first: 100, where: {or: [{facility_: {country: "FR"}},
             {facility_: {name_contains_nocase: "PARK 2"}}], status_not: "listed"})
             { nodes { tokenId facility { country name } } } }"""
    )
    got = {n["tokenId"] for n in data["certificates"]["nodes"]}
    facilities = {
        k: chain.current("facilities", k) for (tbl, k) in chain.versions if tbl == "facilities"
    }
    want = {
        c["token_id"]
        for (tbl, k) in chain.versions
        if tbl == "certificates"
        for c in [chain.current(tbl, k)]
        if c["status"] != "listed"
        and (
            facilities[c["facility_id"]]["country"] == "FR"
            or "park 2" in facilities[c["facility_id"]]["name"].lower()
        )
    }
    assert got == want and got


async def test_null_means_is_null_and_field_not_null_is_not_null(
    api: Api, engine: AsyncEngine
) -> None:
    chain = market()
    token = next(k for (tbl, k) in chain.versions if tbl == "certificates")
    children = chain.split(token, [400_000, 600_000])
    await chain.write(engine)
    everything = {k for (tbl, k) in chain.versions if tbl == "certificates"}
    q = """query($w: CertificateFilter) { certificates(first: 100, where: $w) {
        nodes { tokenId } } }"""

    async def ids(where: dict[str, Any]) -> set[int]:
        data = await api.data(q, {"w": where})
        return {n["tokenId"] for n in data["certificates"]["nodes"]}

    assert await ids({"parentTokenId_not": None}) == set(children)
    assert await ids({"parentTokenId": None}) == everything - set(children)
    assert await ids({"splitHeight_not": None}) == set(children)
    # Inline, and through a variable given as null; an omitted variable is no condition at all.
    data = await api.data("{ certificates(first: 100, where: {parentTokenId_not: null}) {"
                          " nodes { tokenId } } }")  # fmt: skip
    assert {n["tokenId"] for n in data["certificates"]["nodes"]} == set(children)
    vq = """query($p: Int) { certificates(first: 100, where: {parentTokenId: $p}) {
        nodes { tokenId } } }"""
    by_var = await api.data(vq, {"p": None})
    assert {n["tokenId"] for n in by_var["certificates"]["nodes"]} == everything - set(children)
    omitted = await api.data(vq, {})
    assert {n["tokenId"] for n in omitted["certificates"]["nodes"]} == everything
    # Null with an operator that has no null meaning is refused, naming the field.
    for where in ({"wh_gt": None}, {"vintage_in": None}, {"facility_": None}, {"or": None}):
        body = await api.query(q, {"w": where})
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", where
        assert "null" in body["errors"][0]["message"]


async def test_time_travel_shows_the_owner_at_a_past_block(api: Api, engine: AsyncEngine) -> None:
    chain = market()
    await chain.write(engine)
    token = next(k for (tbl, k) in chain.versions if tbl == "certificates")
    q = "query($t: Int!, $b: Int) { certificate(tokenId: $t, block: {number: $b}) { owner } }"
    assert (await api.data(q, {"t": token, "b": 1}))["certificate"]["owner"] == "ST1HOLDER0"
    assert (await api.data(q, {"t": token, "b": 2}))["certificate"]["owner"] == "ST1NEWOWNER"
    assert (await api.data(q, {"t": token}))["certificate"]["owner"] == "ST1NEWOWNER"


async def test_cursor_stays_valid_across_new_blocks(api: Api, engine: AsyncEngine) -> None:
    chain = market()
    await chain.write(engine)
    q = """query($a: String) { certificates(first: 3, after: $a) {
        edges { node { tokenId } } pageInfo { endCursor } } }"""
    first = (await api.data(q))["certificates"]
    chain.block()
    fid = chain.facility()
    chain.mint(fid, "ST1LATE", 10)
    await chain.write(engine)
    second = (await api.data(q, {"a": first["pageInfo"]["endCursor"]}))["certificates"]
    last_seen = first["edges"][-1]["node"]["tokenId"]
    assert second["edges"] and all(e["node"]["tokenId"] > last_seen for e in second["edges"])


async def test_bad_cursor_and_page_size_are_typed_errors(api: Api) -> None:
    body = await api.query('{ certificates(after: "garbage") { totalCount } }')
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    body = await api.query("{ certificates(first: 1001) { totalCount } }")
    assert body["errors"][0]["extensions"]["code"] == "LIMIT_EXCEEDED"


async def test_nested_query_runs_a_constant_number_of_statements(
    api: Api, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = market(n_facilities=6, per_facility=6)
    await chain.write(engine)
    statements: list[str | bytes] = []
    execute = Reader._execute

    async def count(self: Reader, conn: Any, sql: str | bytes, params: Any) -> Any:
        statements.append(sql)
        return await execute(self, conn, sql, params)

    # The nested lists ask for few rows, or the cost estimate counts each at its default page.
    q = """query($n: Int!) { certificates(first: $n) { nodes { tokenId
        facility { name verifierInfo { name } }
        transfers(first: 20) { nodes { kind txid } }
        listings(first: 10) { nodes { price bids(first: 20) { nodes { amount } } } }
        retirement { wh } } } }"""
    # The document's first request learns that it needs a snapshot (several statements).
    await api.data(q, {"n": 1})
    monkeypatch.setattr(Reader, "_execute", count)
    small = await api.data(q, {"n": 3})
    n_small = len(statements)
    statements.clear()
    big = await api.data(q, {"n": 36})
    n_big = len(statements)
    assert len(small["certificates"]["nodes"]) == 3 and len(big["certificates"]["nodes"]) == 36
    assert big["certificates"]["nodes"][0]["facility"]["verifierInfo"]["name"] == "TUV"
    # BEGIN, the page, one per relation level (6), the tip the answer cache files it under,
    # ROLLBACK.
    assert n_big == n_small <= 10


async def test_relations_are_keyset_connections(
    api: Api, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = market(n_facilities=3, per_facility=5)
    token = next(k for (tbl, k) in chain.versions if tbl == "certificates")
    for i in range(5):
        chain.block()
        chain.transfer(token, f"ST1OWNER{i}")
    await chain.write(engine)
    history = [r for r in chain.facts["transfers"] if r["token_id"] == token]
    in_order = sorted(history, key=lambda r: (r["block_height"], r["event_index"]))
    expected = [r["txid"] for r in in_order]

    # A token's transfers, two at a time: every one once, in chain order.
    q = """query($t: Int!, $a: String) { certificate(tokenId: $t) { transfers(first: 2, after: $a) {
        totalCount edges { cursor node { txid } }
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } } }"""
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = (await api.data(q, {"t": token, "a": after}))["certificate"]["transfers"]
        pages += 1
        assert page["totalCount"] == len(expected)
        assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
        assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
        seen += [e["node"]["txid"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    transfers_cursor = page["pageInfo"]["endCursor"]
    assert seen == expected and pages == -(-len(expected) // 2)

    # Time travel: the relation is read at the parent's block.
    past = history[2]["block_height"]
    qb = """query($t: Int!, $b: Int!) { certificate(tokenId: $t, block: {number: $b}) {
        transfers { totalCount nodes { txid } } } }"""
    at = (await api.data(qb, {"t": token, "b": past}))["certificate"]["transfers"]
    upto = [r["txid"] for r in in_order if r["block_height"] <= past]
    assert at["totalCount"] == len(upto) and [n["txid"] for n in at["nodes"]] == upto

    # Every facility's first page in one statement (the DataLoader batches the parents).
    by_facility: dict[int, list[dict[str, Any]]] = {}
    for (tbl, _), versions in chain.versions.items():
        if tbl == "certificates":
            by_facility.setdefault(versions[-1]["facility_id"], []).append(versions[-1])
    qf = """{ facilities(first: 10) { nodes { facilityId certificates(first: 2) {
        totalCount nodes { tokenId } pageInfo { hasNextPage } } } } }"""
    await api.data(qf)  # learns that the document needs a snapshot
    statements: list[str] = []
    execute = Reader._execute

    async def record(self: Reader, conn: Any, sql: str | bytes, params: Any) -> Any:
        statements.append(sql if isinstance(sql, str) else sql.decode())
        return await execute(self, conn, sql, params)

    monkeypatch.setattr(Reader, "_execute", record)
    facilities = (await api.data(qf))["facilities"]["nodes"]
    monkeypatch.undo()
    assert len(facilities) == len(by_facility)
    for f in facilities:
        certs = sorted(
            by_facility[f["facilityId"]], key=lambda c: (c["period_start"], c["token_id"])
        )
        page = f["certificates"]
        assert [n["tokenId"] for n in page["nodes"]] == [c["token_id"] for c in certs[:2]]
        assert page["totalCount"] == len(certs) and page["pageInfo"]["hasNextPage"]
    assert sum("PARTITION BY t.facility_id" in s for s in statements) == 1
    assert sum("count(*)" in s and "GROUP BY t.facility_id" in s for s in statements) == 1

    # A cursor of another relation, a broken one and an oversized page are typed errors.
    qa = """query($t: Int!, $a: String) { certificate(tokenId: $t) { listings(after: $a) {
        nodes { listingId } } } }"""
    for cursor in (transfers_cursor, "garbage"):
        body = await api.query(qa, {"t": token, "a": cursor})
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body
    body = await api.query(
        "query($t: Int!) { certificate(tokenId: $t) { transfers(first: 1001) { totalCount } } }",
        {"t": token},
    )
    assert body["errors"][0]["extensions"]["code"] == "LIMIT_EXCEEDED"
