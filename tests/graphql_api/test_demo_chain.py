"""End to end on the recorded demo chain: `recchain replay` indexes it, the API answers, and the
answers are checked against the recording's manifest (derived by the recorder, not by the API)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.config import PROJECT_ROOT
from tests.graphql_api.conftest import Api

DEMO = PROJECT_ROOT / "tests" / "fixtures" / "demo"
pytestmark = pytest.mark.skipif(not (DEMO / "chain.tsv").exists(), reason="no demo chain")


def replay(db_url: str, tsv: Path) -> None:
    env = {**os.environ, "DATABASE_URL": db_url, "RECCHAIN_DATABASE_URL": db_url}
    subprocess.run(
        [sys.executable, "-m", "recchain.cli", "replay", "--quiet", str(tsv)],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )


async def test_demo_chain_answers_match_the_manifest(api: Api, db_url: str) -> None:
    manifest = json.loads((DEMO / "manifest.json").read_text())
    replay(db_url, DEMO / "chain.tsv")
    summary = manifest["summary"]

    meta = (await api.data("{ _meta { block { height hash } } }"))["_meta"]
    assert meta["block"] == {
        "height": manifest["canonical_tip"]["height"],
        "hash": manifest["canonical_tip"]["index_block_hash"],
    }

    for beneficiary, years in summary["retired_wh_by_beneficiary_year"].items():
        for year, wh in years.items():
            st = (
                await api.data(
                    "query($b: String!, $y: Int!) { retirementStatement(beneficiary: $b,"
                    " reportingYear: $y) { totalWh breakdown { dimension wh }"
                    " lines { retirement { wh txid serialStart serialEnd } } } }",
                    {"b": beneficiary, "y": int(year)},
                )
            )["retirementStatement"]
            assert st["totalWh"] == wh, (beneficiary, year)
            assert sum(int(ln["retirement"]["wh"]) for ln in st["lines"]) == int(wh)
            for dim in ("marketBoundary", "energySource", "vintage"):
                assert sum(int(b["wh"]) for b in st["breakdown"] if b["dimension"] == dim) == int(
                    wh
                )
            for ln in st["lines"]:
                r = ln["retirement"]
                assert int(r["serialEnd"]) - int(r["serialStart"]) == int(r["wh"])

    for currency, sales in summary["sales"].items():
        stats = (
            await api.data(
                "query($c: String!) { marketStats(currency: $c) { overall { tradeCount"
                " notional fees } } }",
                {"c": currency},
            )
        )["marketStats"]["overall"]
        assert stats == {
            "tradeCount": sales["count"],
            "notional": sales["volume"],
            "fees": sales["fees"],
        }

    for status, n in summary["tokens_by_status"].items():
        count = (
            await api.data(
                "query($s: String!) { certificates(where: {status: $s}) { totalCount } }",
                {"s": status},
            )
        )["certificates"]["totalCount"]
        assert count == n, status

    for token, owner in summary["final_owners"].items():
        cert = (
            await api.data(
                "query($t: Int!) { certificate(tokenId: $t) { owner status } }",
                {"t": int(token)},
            )
        )["certificate"]
        if owner is not None:
            assert cert["owner"] == owner, token

    listings = (await api.data("{ listings(first: 1000) { totalCount nodes { status } } }"))[
        "listings"
    ]
    assert listings["totalCount"] == summary["listings"]
    by_status: dict[str, int] = {}
    for n in listings["nodes"]:
        by_status[n["status"]] = by_status.get(n["status"], 0) + 1
    assert by_status == summary["listings_by_status"]

    audit = await api.data("{ complianceReport { doubleCountAudit { kind } } }")
    assert audit["complianceReport"]["doubleCountAudit"] == []

    # Orphaned blocks of the recorded forks are not addressable for time travel.
    orphan = manifest["forks"][0]["orphaned"][0]
    body = await api.query(
        "query($h: String!) { certificates(block: {hash: $h}) { totalCount } }", {"h": orphan}
    )
    assert body["errors"][0]["extensions"]["code"] == "BLOCK_NOT_FOUND"
