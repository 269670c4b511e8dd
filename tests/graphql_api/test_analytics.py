"""Domain queries checked against values derived from the builder's own record."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.graphql_api.builder import Chain
from tests.graphql_api.conftest import Api


def scenario() -> tuple[Chain, dict[str, int]]:
    chain = Chain()
    chain.block()
    solar = chain.facility(name="Sonnenfeld Bayern", country="DE", market_boundary="EU-AIB")
    wind = chain.facility(
        name="Prairie Wind Ranch",
        country="US",
        market_boundary="US-ERCOT",
        energy_source="ES200",
        commissioning_date=__import__("datetime").date(2001, 1, 1),
    )
    a = chain.mint(solar, "ST1ALICE", 3_000_000, vintage=2025)
    b = chain.mint(wind, "ST1ALICE", 2_000_000, vintage=2023)
    chain.block()
    kids = chain.split(a, [1_000_000, 2_000_000])
    chain.block()
    lst = chain.list_fixed(kids[1], 40_000_000)
    chain.block()
    chain.buy(lst, "ST1BOB")
    chain.block()
    chain.retire(kids[1], "ACME Corp", year=2025, boundary="EU-AIB")
    chain.retire(b, "ACME Corp", year=2025, boundary="EU-AIB")
    chain.block()
    return chain, {"a": a, "b": b, "k0": kids[0], "k1": kids[1], "listing": lst}


async def test_ownership_history_follows_the_split(api: Api, engine: AsyncEngine) -> None:
    chain, ids = scenario()
    await chain.write(engine)
    data = await api.data(
        "query($t: Int!) { ownershipHistory(tokenId: $t) { nodes { tokenId kind txid blockHeight"
        " sender recipient price } } }",
        {"t": ids["k1"]},
    )
    nodes = data["ownershipHistory"]["nodes"]
    # Derived from the builder: the parent's mint, the parent's split, then the child's life.
    expected = [
        (r["token_id"], r["kind"])
        for r in sorted(chain.facts["transfers"], key=lambda r: r["event_index"])
        if r["token_id"] == ids["k1"] or (r["token_id"] == ids["a"])
    ]
    assert [(n["tokenId"], n["kind"]) for n in nodes] == expected
    assert [n["kind"] for n in nodes] == ["mint", "split", "split", "escrow", "sale", "retire"]
    sale = next(n for n in nodes if n["kind"] == "sale")
    assert sale["price"] == "40000000" and sale["recipient"] == "ST1BOB"


async def test_retirement_statement_totals_and_lines(api: Api, engine: AsyncEngine) -> None:
    chain, _ = scenario()
    await chain.write(engine)
    data = (
        await api.data(
            """{ retirementStatement(beneficiary: "ACME Corp", reportingYear: 2025) {
            totalWh totalMwh breakdown { dimension key wh mwh count }
            lines { mwh marketBoundary energySource retirement { tokenId serialStart serialEnd
            txid vintage } } } }"""
        )
    )["retirementStatement"]
    rets = chain.facts["retirements"]
    assert data["totalWh"] == str(sum(r["wh"] for r in rets)) == "4000000"
    assert Decimal(data["totalMwh"]) == Decimal(4)
    assert {(b["dimension"], b["key"], b["wh"]) for b in data["breakdown"]} == {
        ("marketBoundary", "EU-AIB", "2000000"),
        ("marketBoundary", "US-ERCOT", "2000000"),
        ("energySource", "ES100", "2000000"),
        ("energySource", "ES200", "2000000"),
        ("vintage", "2025", "2000000"),
        ("vintage", "2023", "2000000"),
    }
    assert [
        (ln["retirement"]["txid"], ln["retirement"]["serialStart"]) for ln in data["lines"]
    ] == [(r["txid"], str(r["serial_start"])) for r in rets]
    csv = await api.client.get(
        "/retirement-statement.csv", params={"beneficiary": "ACME Corp", "reportingYear": 2025}
    )
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert len(lines) == 1 + len(rets) and all(r["txid"] in csv.text for r in rets)
    bad = await api.client.get("/retirement-statement.csv", params={"reportingYear": "x"})
    assert bad.status_code == 400


async def test_compliance_checks(api: Api, engine: AsyncEngine) -> None:
    chain, ids = scenario()
    await chain.write(engine)
    data = (
        await api.data(
            """{ complianceReport(beneficiary: "ACME Corp", reportingYear: 2025) {
            scope2Exceptions { reasons line { retirement { tokenId } } }
            re100 { totalWh eligibleWh share }
            cdpRollup { originCountry vintage wh }
            doubleCountAudit { kind }
            issuanceSummary { facilityId vintage issuedWh retiredWh activeWh } } }"""
        )
    )["complianceReport"]
    exc = {e["line"]["retirement"]["tokenId"]: e["reasons"] for e in data["scope2Exceptions"]}
    # Wind: vintage 2023 vs 2025 and boundary US-ERCOT vs consumption EU-AIB.
    assert exc == {ids["b"]: ["vintage_outside_window", "boundary_mismatch"]}
    assert data["re100"] == {"totalWh": "4000000", "eligibleWh": "2000000", "share": 0.5}
    assert data["doubleCountAudit"] == []
    solar = next(r for r in data["issuanceSummary"] if r["facilityId"] == 1)
    assert solar == {
        "facilityId": 1,
        "vintage": 2025,
        "issuedWh": "3000000",
        "retiredWh": "2000000",
        "activeWh": "1000000",
    }


async def test_holdings_at_a_past_block(api: Api, engine: AsyncEngine) -> None:
    chain, ids = scenario()
    await chain.write(engine)
    q = """query($b: Int) { holdings(owner: "ST1ALICE", block: {number: $b}) { totalWh
        breakdown { dimension key wh } certificates { nodes { tokenId } } } }"""
    at3 = (await api.data(q, {"b": 3}))["holdings"]
    # At block 3 the 2 MWh child is listed (escrowed) but still Alice's.
    assert {n["tokenId"] for n in at3["certificates"]["nodes"]} == {ids["b"], ids["k0"], ids["k1"]}
    assert at3["totalWh"] == "5000000"
    now = (await api.data(q, {"b": None}))["holdings"]
    assert {n["tokenId"] for n in now["certificates"]["nodes"]} == {ids["b"], ids["k0"]}


async def test_market_stats_vwap(api: Api, engine: AsyncEngine) -> None:
    chain, _ = scenario()
    await chain.write(engine)
    data = (
        await api.data(
            '{ marketStats(currency: "STX") { overall { tradeCount volumeWh vwapPerMwh fees }'
            " daily { open close volumeWh } byEnergySource { key tradeCount } } }"
        )
    )["marketStats"]
    sale = chain.facts["sales"][0]
    assert data["overall"]["tradeCount"] == 1
    assert Decimal(data["overall"]["vwapPerMwh"]) == Decimal(sale["price"]) / 2
    assert data["overall"]["fees"] == str(sale["fee"])
    assert data["byEnergySource"] == [{"key": "ES100", "tradeCount": 1}]


async def test_search_is_typo_tolerant_and_ranked(api: Api, engine: AsyncEngine) -> None:
    chain, _ = scenario()
    await chain.write(engine)
    data = (
        await api.data('{ search(text: "prarie wnd", first: 5) { kind score facility { name } } }')
    )["search"]
    assert data[0]["kind"] == "facility" and data[0]["facility"]["name"] == "Prairie Wind Ranch"
    data = (await api.data('{ search(text: "Sonnenfeld") { kind } }'))["search"]
    assert data[0]["kind"] == "facility" and "certificate" in {h["kind"] for h in data}
    body = await api.query('{ search(text: "") { kind } }')
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
