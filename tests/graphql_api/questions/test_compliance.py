"""Compliance checks (questions/compliance.py): Scope 2, RE100, CDP, the audit, issuance."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.graphql_api.conftest import Api
from tests.graphql_api.questions.scenario import scenario


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
