"""Every domain answer of the API equals an independent reconstruction of the demo chain.

The expected answers come from `tests/chain_model.py`, which replays the recorder's own call log
(`calls.jsonl`: what was called, by whom, with which arguments and result) with the contracts'
rules written out again; it reads no event and shares no code with the indexer or the API. The
chain is fed to a real indexer in three steps, so that each fork's orphaned branch is the tip
once: the API is compared with the model of that branch, then with the canonical chain at
several past blocks (time travel) and at the tip.
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from indexer.tsv import read_requests
from infra.config import PROJECT_ROOT
from tests import chain_model as cm
from tests.graphql_api.conftest import Api
from tests.indexer.helpers import run_requests

DEMO = PROJECT_ROOT / "tests" / "fixtures" / "demo"
pytestmark = pytest.mark.skipif(
    not (DEMO / "calls.jsonl").is_file(), reason="no recorded demo chain with its call log"
)


@pytest.fixture
def api_overrides() -> dict[str, Any]:
    # Hundreds of queries from one client, some wide: the guards are not what is tested here.
    return {
        "rate_limit_per_minute": 1_000_000,
        "max_cost": 10_000_000,
        "max_tokens": 100_000,
        "max_aliases": 1000,
    }


def ts(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def num(value: Any) -> int | None:
    return None if value is None else int(value)


class Checker:
    """Asks the API and compares with the model, at one block (`at`, None = the tip)."""

    def __init__(self, api: Api, model: cm.State, at: int | None, accounts: list[str]) -> None:
        self.api, self.s, self.at, self.accounts = api, model, at, accounts
        self.block = None if at is None else {"number": at}

    async def q(self, query: str, **variables: Any) -> dict[str, Any]:
        return await self.api.data(query, {"b": self.block, **variables})

    # -- entities -------------------------------------------------------------------------------
    async def entities(self) -> None:
        s = self.s
        got = await self.q(
            "query($b: BlockInput) { facilities(first: 1000, block: $b) { nodes { facilityId"
            " owner status verifier registeredHeight registeredTxid marketBoundary gridZone"
            " commissioningDate repoweringDate } } }"
        )
        facilities = {n["facilityId"]: n for n in got["facilities"]["nodes"]}
        assert set(facilities) == set(s.facilities)
        for fid, f in s.facilities.items():
            n = facilities[fid]
            assert (n["owner"], n["status"], n["verifier"]) == (f.owner, f.status, f.verifier)
            assert n["registeredHeight"] == f.registered_height, fid
            assert n["registeredTxid"] == f.registered_txid
            assert n["gridZone"] == f.grid_zone and n["marketBoundary"] == f.market_boundary
            rep = None if f.repowering is None else ts(f.repowering).date().isoformat()  # type: ignore[union-attr]
            assert n["repoweringDate"] == rep

        got = await self.q(
            "query($b: BlockInput) { generationReports(first: 1000, block: $b) { nodes {"
            " reportId facilityId status verifier revokedBy revokedHeight reason wh"
            " submittedHeight submittedTxid attestedHeight attestedTxid evidenceHash } } }"
        )
        reports = {n["reportId"]: n for n in got["generationReports"]["nodes"]}
        assert set(reports) == set(s.reports)
        for rid, r in s.reports.items():
            n = reports[rid]
            assert (n["status"], n["verifier"], n["revokedBy"]) == (
                r.status, r.verifier, r.revoked_by
            ), rid  # fmt: skip
            assert (n["submittedHeight"], n["attestedHeight"], n["revokedHeight"]) == (
                r.submitted_height, r.attested_height, r.revoked_height
            ), rid  # fmt: skip
            assert (n["submittedTxid"], n["attestedTxid"]) == (r.submitted_txid, r.attested_txid)
            assert (n["reason"] or "") == r.reason
            assert (num(n["wh"]), n["evidenceHash"]) == (r.wh, r.evidence_hash)

        got = await self.q(
            "query($b: BlockInput) { certificates(first: 1000, block: $b) { nodes { tokenId"
            " facilityId reportId owner status periodStart periodEnd vintage wh serialStart"
            " serialEnd metadataUri parentTokenId issuedHeight issuedTxid issuedAt splitHeight"
            " splitTxid splitAt revokedHeight revokedBy revocationReason } } }"
        )
        certs = {n["tokenId"]: n for n in got["certificates"]["nodes"]}
        assert set(certs) == set(s.tokens)
        for tid, t in s.tokens.items():
            n = certs[tid]
            expected = {
                "facilityId": t.facility_id,
                "reportId": t.report_id,
                "owner": t.custody,
                "status": t.status,
                "periodStart": ts(t.period_start),
                "periodEnd": ts(t.period_end),
                "vintage": t.vintage,
                "wh": t.wh,
                "serialStart": t.serial_start,
                "serialEnd": t.serial_end,
                "metadataUri": t.uri,
                "parentTokenId": t.parent,
                "issuedHeight": t.issued_height,
                "issuedTxid": t.issued_txid,
                "issuedAt": ts(t.issued_time),
                "splitHeight": t.split_height,
                "splitTxid": t.split_txid,
                "splitAt": ts(t.split_time),
                "revokedHeight": t.revoked_height,
                "revokedBy": t.revoked_by,
                "revocationReason": t.revocation_reason,
            }
            actual = {
                k: dt(n[k])
                if k in ("periodStart", "periodEnd", "issuedAt", "splitAt")
                else num(n[k])
                if k in ("wh", "serialStart", "serialEnd")
                else n[k]
                for k in expected
            }
            assert actual == expected, tid

        got = await self.q(
            "query($b: BlockInput) { listings(first: 1000, block: $b) { nodes { listingId kind"
            " tokenId seller currency price reserve minIncrement highestBid highestBidder"
            " bidCount startHeight endHeight status buyer } } }"
        )
        listings = {n["listingId"]: n for n in got["listings"]["nodes"]}
        assert set(listings) == set(s.listings)
        for lid, lst in s.listings.items():
            n = listings[lid]
            assert (n["kind"], n["tokenId"], n["seller"], n["currency"], n["status"]) == (
                lst.kind, lst.token_id, lst.seller, lst.currency, lst.status
            ), lid  # fmt: skip
            assert (num(n["price"]), num(n["reserve"]), num(n["minIncrement"])) == (
                lst.price, lst.reserve, lst.min_increment
            ), lid  # fmt: skip
            assert (num(n["highestBid"]), n["highestBidder"], n["bidCount"]) == (
                lst.highest_bid, lst.highest_bidder, lst.bid_count
            ), lid  # fmt: skip
            assert (n["startHeight"], n["endHeight"], n["buyer"]) == (
                lst.start_height, lst.end_height, lst.buyer
            ), lid  # fmt: skip

    # -- heights and filters (item 1, 7) --------------------------------------------------------
    async def heights_and_filters(self) -> None:
        s = self.s
        height = s.height
        got = await self.api.data(
            "query($h: Int!) { certificates(first: 1000, block: {number: $h},"
            " where: {issuedHeight_lte: $h}) { totalCount } all: certificates(block:"
            " {number: $h}) { totalCount } minted: certificates(first: 1000, block: {number: $h},"
            " where: {parentTokenId: null}) { nodes { tokenId } } children: certificates(first:"
            " 1000, block: {number: $h}, where: {parentTokenId_not: null}) { nodes { tokenId } }"
            " unsplit: certificates(first: 1000, block: {number: $h}, where: {splitHeight: null})"
            " { totalCount } }",
            {"h": height},
        )
        assert got["certificates"]["totalCount"] == got["all"]["totalCount"] == len(s.tokens)
        minted = {t.token_id for t in s.tokens.values() if t.parent is None}
        assert {n["tokenId"] for n in got["minted"]["nodes"]} == minted
        assert {n["tokenId"] for n in got["children"]["nodes"]} == set(s.tokens) - minted
        assert got["unsplit"]["totalCount"] == len(minted)
        # Everything issued in the block of the tip is there, nothing issued later is.
        issued_here = [t for t in s.tokens.values() if t.issued_height == height]
        if issued_here:
            got = await self.api.data(
                "query($h: Int!) { certificates(first: 1000, block: {number: $h},"
                " where: {issuedHeight: $h}) { totalCount } }",
                {"h": height},
            )
            assert got["certificates"]["totalCount"] == len(issued_here)

    # -- holdings (query 8, item 5) -------------------------------------------------------------
    async def holdings(self) -> None:
        expected = cm.holdings(self.s)
        owners = set(self.accounts) | set(expected) | {self.s.marketplace}
        total = 0
        for owner in sorted(owners):
            got = (
                await self.q(
                    "query($o: String!, $b: BlockInput) { holdings(owner: $o, block: $b,"
                    " first: 1000) { totalWh breakdown { dimension key wh } certificates {"
                    " nodes { tokenId } } } }",
                    o=owner,
                )
            )["holdings"]
            want = expected.get(owner, {"total": 0, "tokens": [], "by": {}})
            assert int(got["totalWh"]) == want["total"], owner
            assert sorted(n["tokenId"] for n in got["certificates"]["nodes"]) == sorted(
                want["tokens"]
            ), owner
            assert {(b["dimension"], b["key"]): int(b["wh"]) for b in got["breakdown"]} == dict(
                want["by"]
            ), owner
            total += int(got["totalWh"])
        # One owner at a time: all holdings together are the energy in existence.
        assert total == sum(t.wh for t in cm.live_tokens(self.s))
        assert self.s.marketplace not in expected

    # -- retirements (queries 1, 2, 3, 4, 11) ---------------------------------------------------
    async def retirements(self) -> None:
        s = self.s
        pairs = sorted({(r.beneficiary_name, r.reporting_year) for r in s.retirements})
        for name, year in pairs:
            got = await self.q(
                "query($n: String!, $y: Int!, $b: BlockInput) {"
                " retirementStatement(beneficiary: $n, reportingYear: $y, block: $b) {"
                " totalWh breakdown { dimension key wh } lines { marketBoundary retirement {"
                " tokenId wh serialStart serialEnd txid blockHeight vintage viaListingId"
                " consumptionBoundary retiringAccount claimStart claimEnd } } }"
                " complianceReport(beneficiary: $n, reportingYear: $y, block: $b) {"
                " scope2Exceptions { reasons line { retirement { tokenId } } }"
                " re100 { totalWh eligibleWh } cdpRollup { consumptionCountry energySource"
                " originCountry commissioningYear vintage wh } revokedRetirements { tokenId }"
                " } }",
                n=name,
                y=year,
            )
            rows = cm.statement(s, name, year)
            st = got["retirementStatement"]
            assert int(st["totalWh"]) == sum(r.wh for r in rows), (name, year)
            lines = [
                (
                    ln["retirement"]["tokenId"], int(ln["retirement"]["wh"]),
                    int(ln["retirement"]["serialStart"]), int(ln["retirement"]["serialEnd"]),
                    ln["retirement"]["txid"], ln["retirement"]["blockHeight"],
                    ln["retirement"]["vintage"], ln["retirement"]["viaListingId"],
                    ln["retirement"]["consumptionBoundary"], ln["retirement"]["retiringAccount"],
                    dt(ln["retirement"]["claimStart"]), dt(ln["retirement"]["claimEnd"]),
                    ln["marketBoundary"],
                )
                for ln in st["lines"]
            ]  # fmt: skip
            assert lines == [
                (
                    r.token_id, r.wh, r.serial_start, r.serial_end, r.txid, r.height, r.vintage,
                    r.via_listing_id, r.consumption_boundary, r.retiring_account,
                    ts(r.claim_start), ts(r.claim_end), s.facilities[r.facility_id].market_boundary,
                )
                for r in rows
            ], (name, year)  # fmt: skip
            by: dict[tuple[str, str], int] = defaultdict(int)
            for r in rows:
                f = s.facilities[r.facility_id]
                by[("marketBoundary", f.market_boundary)] += r.wh
                by[("energySource", f.energy_source)] += r.wh
                by[("vintage", str(r.vintage))] += r.wh
            assert {(b["dimension"], b["key"]): int(b["wh"]) for b in st["breakdown"]} == by
            report = got["complianceReport"]
            exceptions = [
                (e["line"]["retirement"]["tokenId"], e["reasons"])
                for e in report["scope2Exceptions"]
            ]
            assert exceptions == [
                (r.token_id, cm.scope2_reasons(s, r)) for r in rows if cm.scope2_reasons(s, r)
            ], (name, year)
            total, eligible = cm.re100(s, rows)
            assert (int(report["re100"]["totalWh"]), int(report["re100"]["eligibleWh"])) == (
                total, eligible
            )  # fmt: skip
            cdp = {
                (
                    c["consumptionCountry"], c["energySource"], c["originCountry"],
                    c["commissioningYear"], c["vintage"],
                ): int(c["wh"])
                for c in report["cdpRollup"]
            }  # fmt: skip
            assert cdp == cm.cdp(s, rows), (name, year)
            revoked = {r.token_id for r in cm.revoked_retirements(s)}
            assert [r["tokenId"] for r in report["revokedRetirements"]] == [
                r.token_id for r in rows if r.token_id in revoked
            ]

        got = await self.q(
            "query($b: BlockInput) { complianceReport(block: $b) { doubleCountAudit { kind }"
            " revokedRetirements { tokenId txid } } }"
        )
        assert got["complianceReport"]["doubleCountAudit"] == []
        revoked = got["complianceReport"]["revokedRetirements"]
        assert [(r["tokenId"], r["txid"]) for r in revoked] == [
            (r.token_id, r.txid) for r in sorted(cm.revoked_retirements(s), key=lambda r: r.order)
        ]

    # -- issuance (query 10) --------------------------------------------------------------------
    async def issuance(self) -> None:
        for grouping, by in (("VINTAGE", "vintage"), ("MONTH", "month"),
                             ("GENERATION_PERIOD", "period")):  # fmt: skip
            got = await self.q(
                "query($g: IssuanceGrouping!, $b: BlockInput) { complianceReport(block: $b) {"
                " issuanceSummary(groupBy: $g) { facilityId vintage periodStart periodEnd"
                " issuedWh activeWh listedWh retiredWh revokedWh } } }",
                g=grouping,
            )
            rows = got["complianceReport"]["issuanceSummary"]
            actual = {}
            for r in rows:
                if by == "vintage":
                    key: tuple[Any, ...] = (r["facilityId"], r["vintage"])
                    assert dt(r["periodStart"]) == datetime(r["vintage"], 1, 1, tzinfo=UTC)
                elif by == "month":
                    key = (r["facilityId"], dt(r["periodStart"]))
                else:
                    key = (r["facilityId"], dt(r["periodStart"]), dt(r["periodEnd"]))
                actual[key] = {
                    k: int(r[k + "Wh"])
                    for k in ("issued", "active", "listed", "retired", "revoked")
                }
                assert sum(v for k, v in actual[key].items() if k != "issued") == int(r["issuedWh"])
            expected = {
                k: {c: v.get(c, 0) for c in ("issued", "active", "listed", "retired", "revoked")}
                for k, v in cm.issuance(self.s, by).items()
            }
            assert actual == expected, grouping

    # -- market (query 12) ----------------------------------------------------------------------
    async def market(self) -> None:
        currencies = {x.currency for x in self.s.sales} | {
            lst.currency for lst in self.s.listings.values()
        }
        for currency in sorted(currencies):
            got = (
                await self.q(
                    "query($c: String!, $b: BlockInput) { marketStats(currency: $c, block: $b)"
                    " { overall { key tradeCount volumeWh notional fees vwapPerMwh }"
                    " byEnergySource { key tradeCount volumeWh notional fees vwapPerMwh }"
                    " byTechnology { key tradeCount volumeWh notional fees vwapPerMwh }"
                    " byVintage { key tradeCount volumeWh notional fees vwapPerMwh }"
                    " byBoundary { key tradeCount volumeWh notional fees vwapPerMwh }"
                    " daily { day open high low close volumeWh } depth { pricePerMwh listings wh }"
                    " } }",
                    c=currency,
                )
            )["marketStats"]
            want = cm.market(self.s, currency)

            def stats(rows: Iterable[dict[str, Any]]) -> dict[Any, tuple[Any, ...]]:
                return {
                    r["key"]: (
                        r["tradeCount"], int(r["volumeWh"]), int(r["notional"]), int(r["fees"]),
                        None if r["vwapPerMwh"] is None else Decimal(r["vwapPerMwh"]),
                    )
                    for r in rows
                }  # fmt: skip

            def model(group: str, want: dict[str, Any] = want) -> dict[Any, tuple[Any, ...]]:
                return {
                    k: (n, wh, px, fee, cm.ppm(px, wh) if wh else None)
                    for k, (n, wh, px, fee) in want["groups"].get(group, {}).items()
                }

            overall = model("all") or {None: (0, 0, 0, 0, None)}
            assert stats([got["overall"]]) == overall, currency
            for field, group in (("byEnergySource", "energySource"),
                                 ("byTechnology", "technology"), ("byVintage", "vintage"),
                                 ("byBoundary", "boundary")):  # fmt: skip
                assert stats(got[field]) == model(group), (currency, field)
            candles = {
                datetime.fromisoformat(c["day"]).date(): {
                    "open": Decimal(c["open"]), "high": Decimal(c["high"]),
                    "low": Decimal(c["low"]), "close": Decimal(c["close"]),
                    "volumeWh": int(c["volumeWh"]),
                }
                for c in got["daily"]
            }  # fmt: skip
            assert candles == want["candles"], currency
            depth = {Decimal(d["pricePerMwh"]): [d["listings"], int(d["wh"])] for d in got["depth"]}
            assert depth == want["depth"], currency

    # -- expiry (query 9) -----------------------------------------------------------------------
    async def expiry(self, rules: dict[str, int]) -> None:
        got = (
            await self.q(
                "query($b: BlockInput) { complianceReport(block: $b) { expiryExposure("
                "withinDays: 120, first: 1000) { asOf count totalWh certificates { expiresAt"
                " certificate { tokenId } } } } }"
            )
        )["complianceReport"]["expiryExposure"]
        as_of = ts(self.s.time)
        assert dt(got["asOf"]) == as_of
        assert as_of is not None
        want = cm.expiry(self.s, rules, as_of, 120)
        assert [
            (c["certificate"]["tokenId"], dt(c["expiresAt"])) for c in got["certificates"]
        ] == want
        assert got["count"] == len(want)
        assert int(got["totalWh"]) == sum(self.s.tokens[t].wh for t, _ in want)

    # -- provenance (query 6) -------------------------------------------------------------------
    async def history(self, tokens: Iterable[int]) -> None:
        for token in tokens:
            got = (
                await self.q(
                    "query($t: Int!, $b: BlockInput) { ownershipHistory(tokenId: $t, first: 1000,"
                    " block: $b) { nodes { tokenId kind sender recipient price currency txid"
                    " blockHeight } } }",
                    t=token,
                )
            )["ownershipHistory"]["nodes"]
            assert [_transfer(n) for n in got] == [
                _model_transfer(t) for t in cm.history(self.s, token)
            ], token

    async def serials(self, intervals: Iterable[tuple[int, int]]) -> None:
        for start, end in intervals:
            got = (
                await self.q(
                    "query($s: BigInt!, $e: BigInt!, $b: BlockInput) { serialProvenance("
                    "serialStart: $s, serialEnd: $e, block: $b) { coveredWh pieces { serialStart"
                    " serialEnd wh certificate { tokenId report { evidenceHash verifier } }"
                    " history { tokenId kind sender recipient price currency txid blockHeight }"
                    " } } }",
                    s=str(start),
                    e=str(end),
                )
            )["serialProvenance"]
            want = cm.serial_pieces(self.s, start, end)
            pieces = got["pieces"]
            assert [
                (p["certificate"]["tokenId"], int(p["serialStart"]), int(p["serialEnd"]))
                for p in pieces
            ] == want, (start, end)
            assert int(got["coveredWh"]) == sum(hi - lo for _, lo, hi in want)
            for p in pieces:
                t = self.s.tokens[p["certificate"]["tokenId"]]
                r = self.s.reports[t.report_id]
                assert p["certificate"]["report"] == {
                    "evidenceHash": r.evidence_hash,
                    "verifier": r.verifier,
                }
                assert [_transfer(n) for n in p["history"]] == [
                    _model_transfer(x) for x in cm.history(self.s, t.token_id)
                ]

    async def hourly(self, beneficiary: str, zone: str, consumption: dict[int, int]) -> None:
        got = (
            await self.q(
                "query($n: String!, $z: String!, $c: [HourlyConsumptionInput!]!, $b: BlockInput)"
                " { hourlyMatching(beneficiary: $n, biddingZone: $z, consumption: $c, block: $b)"
                " { consumedWh matchedWh unmatchedHourCount hours { hour matchedWh } } }",
                n=beneficiary,
                z=zone,
                c=[{"hour": ts(h).isoformat(), "wh": str(wh)} for h, wh in consumption.items()],  # type: ignore[union-attr]
            )
        )["hourlyMatching"]
        want = cm.hourly_matching(self.s, beneficiary, zone, consumption)
        assert {dt(h["hour"]): int(h["matchedWh"]) for h in got["hours"]} == {
            ts(h): wh for h, wh in want.items()
        }
        assert int(got["matchedWh"]) == sum(want.values())
        assert got["unmatchedHourCount"] == sum(1 for h, wh in consumption.items() if want[h] < wh)

    async def full(self, rules: dict[str, int], tokens: Iterable[int]) -> None:
        await self.entities()
        await self.heights_and_filters()
        await self.holdings()
        await self.retirements()
        await self.issuance()
        await self.market()
        await self.expiry(rules)
        await self.history(tokens)


def _transfer(n: dict[str, Any]) -> tuple[Any, ...]:
    return (
        n["tokenId"], n["kind"], n["sender"], n["recipient"], num(n["price"]), n["currency"],
        n["txid"], n["blockHeight"],
    )  # fmt: skip


def _model_transfer(t: cm.Transfer) -> tuple[Any, ...]:
    return (t.token_id, t.kind, t.sender, t.recipient, t.price, t.currency, t.txid, t.height)


def _hourly_case(s: cm.State) -> tuple[str, str, dict[int, int]]:
    """The beneficiary, zone and a day of consumption around the demo's hourly retirements."""
    hourly = [r for r in s.retirements if r.period_end - r.period_start <= 3600]
    assert hourly, "the demo retires hourly certificates"
    beneficiary = hourly[0].beneficiary_name
    zone = s.facilities[hourly[0].facility_id].grid_zone
    hours = sorted({r.period_start - r.period_start % 3600 for r in hourly})
    median = sorted(r.wh for r in hourly)[len(hourly) // 2]
    day = range(hours[0] - 3600, hours[-1] + 2 * 3600, 3600)
    return beneficiary, zone, {h: median for h in day}


async def test_the_api_answers_as_the_model_of_the_recorded_chain(
    api: Api, db_url: str, engine: AsyncEngine
) -> None:
    manifest = json.loads((DEMO / "manifest.json").read_text())
    market = manifest["contracts"]["marketplace"]
    accounts = [a["address"] for a in manifest["accounts"]]
    blocks = cm.read_log(DEMO / "calls.jsonl")
    requests = [(r.path, r.payload) for r in read_requests(DEMO / "chain.tsv")]
    position = {
        json.loads(body)["index_block_hash"]: i
        for i, (path, body) in enumerate(requests)
        if path == "/new_block"
    }
    async with engine.connect() as conn:
        rules = {
            r[0]: r[1]
            for r in await conn.execute(text("SELECT market_boundary, months FROM expiry_rules"))
        }

    # Each fork's orphaned branch, while it is the tip.
    done = 0
    for fork in manifest["forks"]:
        tip = fork["orphaned"][-1]
        upto = position[tip] + 1
        await run_requests(db_url, [requests[i : min(i + 50, upto)] for i in range(done, upto, 50)])
        done = upto
        meta = await api.data("{ _meta { block { hash height } } }")
        assert meta["_meta"]["block"]["hash"] == tip
        branch = cm.Model(cm.branch_to(blocks, tip), market).tip
        check = Checker(api, branch, None, accounts)
        await check.entities()
        await check.holdings()
        await check.market()
        bought = [x.token_id for x in branch.sales if x.height >= fork["height"]]
        await check.history(bought)
    await run_requests(db_url, [requests[i : i + 50] for i in range(done, len(requests), 50)])

    canonical = cm.branch_to(blocks, manifest["canonical_tip"]["index_block_hash"])
    tip_height = canonical[-1].height
    model = cm.Model(canonical, market)
    s = model.tip
    # Past blocks: the first facility's registration, the first split, the block before each
    # fork, the last block of every trading day, and the tip's parent.
    registered = s.facilities[1].registered_height
    first_split = min(t.split_height for t in s.tokens.values() if t.split_height is not None)
    day_ends: dict[Any, int] = {}
    for x in s.sales:
        day_ends[cm.utc(x.time).date()] = max(day_ends.get(cm.utc(x.time).date(), 0), x.height)
    checkpoints = sorted(
        {registered, first_split, tip_height - 1, *day_ends.values()}
        | {f["height"] - 1 for f in manifest["forks"]}
    )
    model = cm.Model(canonical, market, keep=checkpoints)
    for h in checkpoints:
        past = model.at(h)
        check = Checker(api, past, h, accounts)
        await check.full(rules, sorted(past.tokens)[::7])

    check = Checker(api, s, None, accounts)
    await check.full(rules, sorted(s.tokens))

    # A facility exists from the block that registered it, not before (item 1).
    for fid, f in s.facilities.items():
        got = await api.data(
            "query($i: Int!, $h: Int!, $p: Int!) { at: facility(id: $i, block: {number: $h}) {"
            " registeredHeight } before: facility(id: $i, block: {number: $p}) { facilityId } }",
            {"i": fid, "h": f.registered_height, "p": f.registered_height - 1},
        )
        assert got == {"at": {"registeredHeight": f.registered_height}, "before": None}, fid

    # Provenance of serial intervals: a split parent's whole interval (its children), and an
    # interval straddling two certificates.
    parents = [t for t in s.tokens.values() if t.status == "split"]
    minted = sorted(
        (t for t in s.tokens.values() if t.parent is None), key=lambda t: t.serial_start
    )
    intervals = [(p.serial_start, p.serial_end) for p in parents[:5]]
    intervals += [(a.serial_end - 1000, a.serial_end + 1000) for a in minted[10:13]]
    await check.serials(intervals)
    await Checker(api, model.at(first_split), first_split, accounts).serials(intervals)

    await check.hourly(*_hourly_case(s))
    await check.hourly(*_hourly_case(s)[:2], {h: 1 for h in _hourly_case(s)[2]})


def test_the_demo_chain_exercises_every_query() -> None:
    """The recorded chain is rich enough that the comparisons above can fail (item 10)."""
    manifest = json.loads((DEMO / "manifest.json").read_text())
    blocks = cm.read_log(DEMO / "calls.jsonl")
    canonical = cm.branch_to(blocks, manifest["canonical_tip"]["index_block_hash"])
    s = cm.Model(canonical, manifest["contracts"]["marketplace"]).tip
    # Query 11: a retired certificate revoked later.
    assert cm.revoked_retirements(s)
    # Query 5: hours fully, partly and not matched.
    beneficiary, zone, consumption = _hourly_case(s)
    matched = cm.hourly_matching(s, beneficiary, zone, consumption)
    assert any(0 < matched[h] < wh for h, wh in consumption.items())
    assert any(matched[h] == wh for h, wh in consumption.items())
    assert any(matched[h] == 0 for h in consumption)
    # Query 12: trades on several UTC days in each currency, open offers in each.
    for currency in {x.currency for x in s.sales}:
        assert len(cm.market(s, currency)["candles"]) >= 2, currency
        assert cm.market(s, currency)["depth"], currency
    assert max(len(cm.market(s, c)["candles"]) for c in {x.currency for x in s.sales}) >= 3
    # Query 3: repowering decides, and not every facility passes.
    rows = s.retirements
    total, eligible = cm.re100(s, rows)
    assert 0 < eligible < total
    unrepowered = without_repowering(s)
    assert cm.re100(unrepowered, rows)[1] < eligible
    # Query 1/2: more than one boundary in one beneficiary's reporting year, and exceptions.
    boundaries: dict[tuple[str, int], set[str]] = defaultdict(set)
    for r in rows:
        boundaries[(r.beneficiary_name, r.reporting_year)].add(
            s.facilities[r.facility_id].market_boundary
        )
    assert max(len(v) for v in boundaries.values()) > 1
    assert any(cm.scope2_reasons(s, r) for r in rows)
    # Query 6: a certificate listed, escrowed, sold and then split, whose child is retired.
    sold_then_split = {
        t.parent for t in s.tokens.values() if t.parent is not None and t.status == "retired"
    } & {x.token_id for x in s.sales}
    assert sold_then_split
    # Query 9: something expires within the default window at the tip.
    as_of = cm.utc(s.time)
    assert cm.expiry(s, {"EU-AIB": 12}, as_of, 90)
    # Item 6: reports revoked by a verifier other than the one that attested them.
    revoked = [r for r in s.reports.values() if r.status == "revoked"]
    assert revoked and all(r.revoked_by not in (None, r.verifier) for r in revoked)
    # Holdings: escrowed certificates at the tip.
    assert any(t.status == "listed" for t in s.tokens.values())
    assert timedelta(seconds=s.time - canonical[1].time) > timedelta(days=1)


def without_repowering(s: cm.State) -> cm.State:
    """`s` with every repowering date removed (what query 3 would answer without them)."""
    out = copy.deepcopy(s)
    for f in out.facilities.values():
        f.repowering = None
    return out
