"""The retirement statement (questions/claims.py), as GraphQL and as CSV."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.graphql_api.conftest import Api
from tests.graphql_api.questions.scenario import scenario


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
