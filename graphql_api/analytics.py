"""Domain queries answered in SQL (docs/domain.md, "The questions"): ownership history and
serial provenance, holdings, search, the retirement statement, compliance checks and market
statistics."""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import strawberry
from strawberry.types import Info

from graphql_api.context import BlockInput, Context
from graphql_api.errors import BadUserInput, LimitExceeded, NotAvailable
from graphql_api.query import ENTITIES, Connection, SqlWhere, check_first, live, paginate
from graphql_api.scalars import BigDecimal, BigInt
from graphql_api.types import Certificate, Facility, Listing, Retirement, Transfer, mwh

Ctx = Info[Context, None]
CertificateFilter = ENTITIES["Certificate"].filter_input
# The search document of a facility; the same expression is indexed by migration 0004.
FACILITY_DOC = (
    "recchain_facility_doc(f.name, f.country, f.subdivision, f.market_boundary, f.grid_zone,"
    " f.energy_source, f.technology)"
)


@strawberry.type(description="Energy grouped by one attribute.")
class Breakdown:
    dimension: str = strawberry.field(description="The grouping attribute.")
    key: str | None = strawberry.field(description="The attribute's value.")
    wh: BigInt = strawberry.field(description="Energy, Wh.")
    mwh: BigDecimal = strawberry.field(description="Energy, MWh.")
    count: int = strawberry.field(description="Number of certificates or retirements.")


def _breakdowns(rows: Any, dims: dict[str, str]) -> tuple[int, list[Breakdown]]:
    """Split a GROUPING SETS result (one set per dimension plus the grand total)."""
    total = 0
    out: list[Breakdown] = []
    for r in rows:
        if r["_set"] == "total":
            total = int(r["wh"] or 0)
            continue
        out.append(
            Breakdown(
                dimension=r["_set"],
                key=None if r["_key"] is None else str(r["_key"]),
                wh=int(r["wh"]),
                mwh=mwh(int(r["wh"])),
                count=int(r["n"]),
            )
        )
    out.sort(key=lambda b: (list(dims).index(b.dimension), b.key or ""))
    return total, out


def _grouped_sql(dims: dict[str, str], from_where: str) -> str:
    cases = " ".join(f"WHEN GROUPING({expr}) = 0 THEN '{name}'" for name, expr in dims.items())
    keys = " ".join(f"WHEN GROUPING({expr}) = 0 THEN ({expr})::text" for expr in dims.values())
    sets = ", ".join(f"({expr})" for expr in dims.values())
    return (
        f"SELECT CASE {cases} ELSE 'total' END AS _set, CASE {keys} END AS _key,"
        f" sum(wh_) AS wh, count(*) AS n FROM ({from_where}) s"
        f" GROUP BY GROUPING SETS ({sets}, ())"
    )


# -- holdings (query 8) -----------------------------------------------------------------------

HOLDING_DIMS = {
    "status": "status",
    "vintage": "vintage",
    "energySource": "energy_source",
    "technology": "technology",
    "marketBoundary": "market_boundary",
}


@strawberry.type(
    description="What an owner held at a block. One owner at a time: a listed certificate is"
    " its seller's (status listed) while the marketplace escrows it, never the marketplace's;"
    " so the holdings of all owners sum to the Wh in existence."
)
class Holdings:
    owner: str = strawberry.field(description="The owner principal.")
    at_height: int | None = strawberry.field(description="The block (null = current).")
    total_wh: BigInt = strawberry.field(
        description="Energy held, every status (split parents no longer exist), Wh."
    )
    breakdown: list[Breakdown] = strawberry.field(
        description="Energy by status, vintage, energy source, technology and market boundary."
    )
    certificates: Connection[Certificate] = strawberry.field(
        description="The certificates, by token id."
    )


def _holdings_condition(at: int | None, params: dict[str, Any]) -> str:
    """Certificates of `:owner` at `at`: those it holds that no active listing escrows, and
    those its active listings escrow. A certificate is escrowed exactly while its listing is
    active (both change in one transaction), so the marketplace, which holds the escrowed ones,
    owns none of them.

    The escrowed tokens are an init-plan array, so both arms of the OR stay index scans.
    """
    c_live = live("c", True, at, params)
    l_live = live("l", True, at, params)
    e_live = live("e", True, at, params)
    return (
        f"{c_live} AND c.status <> 'split' AND ((c.owner = :owner AND NOT EXISTS (SELECT 1"
        f" FROM listings e WHERE e.token_id = c.token_id AND {e_live} AND e.status = 'active'))"
        " OR c.token_id = ANY(ARRAY("
        f"SELECT l.token_id FROM listings l WHERE l.seller = :owner AND {l_live}"
        " AND l.status = 'active')))"
    )


def _lineage(at: int | None, params: dict[str, Any], anchor: str = "c.token_id = :tok") -> str:
    """`lineage(root, token_id, cap)`: each certificate matching `anchor` (its `root`) and its
    split ancestors; an ancestor's history counts up to the split that created its descendant
    (`cap`), which ends its life anyway."""
    c_live, p_live = live("c", True, at, params), live("p", True, at, params)
    return (
        "WITH RECURSIVE lineage(root, token_id, parent_token_id, split_height, cap) AS ("
        " SELECT c.token_id, c.token_id, c.parent_token_id, c.split_height, 2147483647"
        f" FROM certificates c WHERE {anchor} AND {c_live}"
        " UNION ALL SELECT l.root, p.token_id, p.parent_token_id, p.split_height,"
        " coalesce(l.split_height, 2147483647)"
        " FROM certificates p JOIN lineage l ON p.token_id = l.parent_token_id"
        f" WHERE {p_live})"
    )


# -- serial provenance (query 6) --------------------------------------------------------------

MAX_PIECES = 1000


@strawberry.type(description="The part of a serial interval that one certificate holds.")
class ProvenancePiece:
    serial_start: BigInt = strawberry.field(description="First serial of the part (inclusive).")
    serial_end: BigInt = strawberry.field(description="End serial of the part (exclusive).")
    wh: BigInt = strawberry.field(description="Energy of the part, Wh.")
    certificate: Certificate = strawberry.field(
        description="The certificate holding it (its report carries evidence and attestation)."
    )
    history: list[Transfer] = strawberry.field(
        description="Its custody changes, its split ancestors' included, oldest first."
    )


@strawberry.type(description="Query 6 for a serial interval: who held each part of it, and how.")
class SerialProvenance:
    serial_start: BigInt = strawberry.field(description="The interval asked for (inclusive).")
    serial_end: BigInt = strawberry.field(description="The interval's end (exclusive).")
    at_height: int | None = strawberry.field(description="The block (null = current).")
    covered_wh: BigInt = strawberry.field(
        description="Wh of the interval held by certificates (serials never issued are not)."
    )
    pieces: list[ProvenancePiece] = strawberry.field(
        description="The certificates that exist at the block and overlap the interval, by serial."
    )


async def serial_provenance(ctx: Context, start: int, end: int, at: int | None) -> SerialProvenance:
    if not 0 <= start < end:
        raise BadUserInput("serialStart must be >= 0 and below serialEnd")
    params: dict[str, Any] = {"s": start, "e": end}
    rows = await ctx.reader.all(
        f"SELECT c.* FROM certificates c WHERE {live('c', True, at, params)}"
        " AND c.status <> 'split' AND c.serial_start < :e AND c.serial_end > :s"
        f" ORDER BY c.serial_start LIMIT {MAX_PIECES + 1}",
        params,
    )
    if len(rows) > MAX_PIECES:
        raise LimitExceeded(
            f"the interval spans more than {MAX_PIECES} certificates; ask for a narrower one",
            max=MAX_PIECES,
        )
    hparams: dict[str, Any] = {"toks": [r["token_id"] for r in rows]}
    t_live = live("t", False, at, hparams)
    transfers = (
        await ctx.reader.all(
            _lineage(at, hparams, "c.token_id = ANY(:toks)")
            + " SELECT t.*, l.root AS _root FROM transfers t JOIN lineage l ON"
            f" t.token_id = l.token_id AND t.block_height <= l.cap WHERE {t_live}"
            " ORDER BY l.root, t.block_height, t.event_index, t.id",
            hparams,
        )
        if rows
        else []
    )
    te, ce = ENTITIES["Transfer"], ENTITIES["Certificate"]
    by_root: dict[int, list[Transfer]] = {}
    for t in transfers:
        by_root.setdefault(t["_root"], []).append(te.from_row(t, at))
    pieces = []
    for r in rows:
        lo, hi = max(start, int(r["serial_start"])), min(end, int(r["serial_end"]))
        pieces.append(
            ProvenancePiece(
                serial_start=lo,
                serial_end=hi,
                wh=hi - lo,
                certificate=ce.from_row(r, at),
                history=by_root.get(r["token_id"], []),
            )
        )
    return SerialProvenance(
        serial_start=start,
        serial_end=end,
        at_height=at,
        covered_wh=sum(p.wh for p in pieces),
        pieces=pieces,
    )


# -- retirement statement (query 1) -----------------------------------------------------------

STATEMENT_DIMS = {
    "marketBoundary": "market_boundary",
    "energySource": "energy_source",
    "vintage": "vintage",
}


@strawberry.type(description="One retirement in a statement, with its facility's attributes.")
class StatementLine:
    retirement: Retirement = strawberry.field(description="The retirement (serials, txid...).")
    facility_name: str | None = strawberry.field(description="Facility name.")
    facility_country: str | None = strawberry.field(description="Country of origin.")
    market_boundary: str | None = strawberry.field(description="Facility market boundary.")
    energy_source: str | None = strawberry.field(description="I-REC energy source.")
    technology: str | None = strawberry.field(description="I-REC technology.")
    mwh: BigDecimal = strawberry.field(description="Energy, MWh.")


@strawberry.type(
    description="Retirements for a beneficiary over a period (query 1 of docs/domain.md)."
)
class RetirementStatement:
    beneficiary: str = strawberry.field(description="Beneficiary name or principal.")
    total_wh: BigInt = strawberry.field(description="Total retired, Wh.")
    total_mwh: BigDecimal = strawberry.field(description="Total retired, MWh.")
    breakdown: list[Breakdown] = strawberry.field(
        description="Totals by market boundary, energy source and vintage."
    )
    lines: list[StatementLine] = strawberry.field(description="Every retirement, oldest first.")


STATEMENT_COLUMNS = (
    "r.*, f.name AS facility_name, f.country AS facility_country, f.market_boundary,"
    " f.energy_source, f.technology, f.commissioning_date, f.repowering_date"
)


def statement_sql(
    beneficiary: str,
    period_start: datetime | None,
    period_end: datetime | None,
    reporting_year: int | None,
    at: int | None,
    params: dict[str, Any],
) -> str:
    """Retirements of a beneficiary joined to their facility as it was when retired."""
    params["beneficiary"] = beneficiary
    conds = ["(r.beneficiary_name = :beneficiary OR r.beneficiary_principal = :beneficiary)"]
    if at is not None:
        params["_at"] = at
        conds.append("r.block_height <= :_at")
    if reporting_year is not None:
        params["year"] = reporting_year
        conds.append("r.reporting_year = :year")
    # Half-open claim periods overlap [start, end); a claim without a period counts at its block.
    if period_start is not None:
        params["pstart"] = period_start
        conds.append("coalesce(r.claim_end, r.block_time) > :pstart")
    if period_end is not None:
        params["pend"] = period_end
        conds.append("coalesce(r.claim_start, r.block_time) < :pend")
    return (
        f"SELECT {STATEMENT_COLUMNS}, r.wh AS wh_ FROM retirements r LEFT JOIN facilities f"
        " ON f.facility_id = r.facility_id AND f.block_from <= r.block_height"
        " AND (f.block_to IS NULL OR f.block_to > r.block_height)"
        f" WHERE {' AND '.join(conds)}"
    )


async def retirement_statement(
    ctx: Context,
    beneficiary: str,
    period_start: datetime | None,
    period_end: datetime | None,
    reporting_year: int | None,
    at: int | None,
) -> RetirementStatement:
    if not beneficiary.strip():
        raise BadUserInput("beneficiary must not be empty")
    if period_start and period_end and period_start >= period_end:
        raise BadUserInput("periodStart must be before periodEnd")
    params: dict[str, Any] = {}
    base = statement_sql(beneficiary, period_start, period_end, reporting_year, at, params)
    rows = await ctx.reader.all(base + " ORDER BY r.block_height, r.event_index", params)
    grouped = await ctx.reader.all(_grouped_sql(STATEMENT_DIMS, base), params)
    total, breakdown = _breakdowns(grouped, STATEMENT_DIMS)
    entity = ENTITIES["Retirement"]
    lines = [
        StatementLine(
            retirement=entity.from_row(r, r["block_height"]),
            facility_name=r["facility_name"],
            facility_country=r["facility_country"],
            market_boundary=r["market_boundary"],
            energy_source=r["energy_source"],
            technology=r["technology"],
            mwh=mwh(int(r["wh"])),
        )
        for r in rows
    ]
    return RetirementStatement(
        beneficiary=beneficiary,
        total_wh=total,
        total_mwh=mwh(total),
        breakdown=breakdown,
        lines=lines,
    )


# -- compliance (queries 2, 3, 4, 7, 10, 11) --------------------------------------------------


@strawberry.type(description="A retirement failing a GHG Protocol Scope 2 quality criterion.")
class Scope2Exception:
    line: StatementLine = strawberry.field(description="The retirement.")
    reasons: list[str] = strawberry.field(
        description="vintage_outside_window and/or boundary_mismatch."
    )


@strawberry.type(description="RE100 commissioning test (query 3 of docs/domain.md).")
class Re100Result:
    total_wh: BigInt = strawberry.field(description="Retired Wh considered.")
    eligible_wh: BigInt = strawberry.field(
        description="Wh from facilities commissioned or repowered within 15 years."
    )
    share: float = strawberry.field(description="eligibleWh / totalWh (0 when nothing retired).")


@strawberry.type(description="One CDP roll-up cell (query 4 of docs/domain.md).")
class CdpRow:
    consumption_country: str | None = strawberry.field(description="Country of consumption.")
    energy_source: str | None = strawberry.field(description="Energy source.")
    origin_country: str | None = strawberry.field(description="Country of the facility.")
    commissioning_year: int | None = strawberry.field(description="Facility commissioning year.")
    vintage: int = strawberry.field(description="Vintage.")
    wh: BigInt = strawberry.field(description="Retired Wh.")
    mwh: BigDecimal = strawberry.field(description="Retired MWh.")


@strawberry.type(description="Two records that must never coexist (query 7 of docs/domain.md).")
class Conflict:
    kind: str = strawberry.field(
        description="overlapping_serials | overlapping_issuance | retired_twice."
    )
    first_id: BigInt = strawberry.field(description="Token, report or retirement id.")
    second_id: BigInt = strawberry.field(description="The conflicting one.")


@strawberry.enum(description="How `issuanceSummary` groups a facility's certificates.")
class IssuanceGrouping(enum.Enum):
    VINTAGE = "vintage"
    MONTH = "month"
    GENERATION_PERIOD = "generation_period"


# Period of each grouping: [start, end) of the vintage year, of the generation month, or the
# certificate's own generation period.
ISSUANCE_PERIODS = {
    IssuanceGrouping.VINTAGE: (
        "make_timestamptz(c.vintage, 1, 1, 0, 0, 0, 'UTC')",
        "make_timestamptz(c.vintage + 1, 1, 1, 0, 0, 0, 'UTC')",
    ),
    IssuanceGrouping.MONTH: (
        "date_trunc('month', c.period_start, 'UTC')",
        "date_trunc('month', c.period_start, 'UTC') + interval '1 month'",
    ),
    IssuanceGrouping.GENERATION_PERIOD: ("c.period_start", "c.period_end"),
}


@strawberry.type(
    description="Issued vs active, listed, retired and revoked energy of a facility in a period."
)
class IssuanceRow:
    facility_id: int = strawberry.field(description="Facility.")
    vintage: int = strawberry.field(description="Vintage (of the period's start).")
    period_start: datetime = strawberry.field(
        description="Start of the group's period (inclusive): the vintage year, the generation"
        " month or the generation period."
    )
    period_end: datetime = strawberry.field(description="End of the group's period (exclusive).")
    issued_wh: BigInt = strawberry.field(
        description="Issued: every certificate that exists (split parents live on in their"
        " children), Wh = active + listed + retired + revoked."
    )
    active_wh: BigInt = strawberry.field(description="Active, Wh.")
    listed_wh: BigInt = strawberry.field(description="Listed (escrowed), Wh.")
    retired_wh: BigInt = strawberry.field(description="Retired, Wh.")
    revoked_wh: BigInt = strawberry.field(description="Revoked, Wh.")


@strawberry.type(description="A live, unretired certificate and when it stops being usable.")
class ExpiringCertificate:
    certificate: Certificate = strawberry.field(description="The certificate (active or listed).")
    market_boundary: str | None = strawberry.field(description="Its facility's market boundary.")
    expires_at: datetime = strawberry.field(description="Effective expiry.")
    days_left: float = strawberry.field(
        description="Days from `asOf` to the expiry; negative when already expired."
    )
    basis: str = strawberry.field(
        description="`certificate` (its own expiry) or `boundary` (its boundary's rule)."
    )


@strawberry.type(description="Query 9: unretired certificates expiring within a window.")
class ExpiryExposure:
    as_of: datetime = strawberry.field(description="The reference time of the window.")
    within_days: int = strawberry.field(description="Window length in days.")
    count: int = strawberry.field(description="Certificates in the window (all pages).")
    total_wh: BigInt = strawberry.field(description="Energy in the window, Wh.")
    total_mwh: BigDecimal = strawberry.field(description="Energy in the window, MWh.")
    certificates: list[ExpiringCertificate] = strawberry.field(
        description="The first `first` certificates, soonest expiry first."
    )


MAX_EXPIRY_WINDOW_DAYS = 3660


@strawberry.type(description="Compliance checks for a beneficiary and reporting year.")
class ComplianceReport:
    beneficiary: str | None = strawberry.field(description="Beneficiary (null = everyone).")
    reporting_year: int | None = strawberry.field(description="Reporting year.")
    _at: strawberry.Private[int | None]

    def _base(self, params: dict[str, Any]) -> str:
        if self.beneficiary is None:
            params["_y"] = self.reporting_year
            year = "" if self.reporting_year is None else " AND r.reporting_year = :_y"
            return statement_sql("", None, None, None, self._at, params).replace(
                "(r.beneficiary_name = :beneficiary OR r.beneficiary_principal = :beneficiary)",
                "TRUE" + year,
            )
        return statement_sql(self.beneficiary, None, None, self.reporting_year, self._at, params)

    @strawberry.field(description="Query 2: vintage outside the window or boundary mismatch.")
    async def scope2_exceptions(
        self, info: Ctx, vintage_window_years: int = 1
    ) -> list[Scope2Exception]:
        params: dict[str, Any] = {"w": vintage_window_years}
        rows = await info.context.reader.all(
            f"SELECT * FROM ({self._base(params)}) s WHERE abs(s.vintage - s.reporting_year) > :w"
            " OR s.market_boundary IS DISTINCT FROM s.consumption_boundary"
            " ORDER BY s.block_height, s.event_index",
            params,
        )
        entity = ENTITIES["Retirement"]
        out = []
        for r in rows:
            reasons = []
            if abs(r["vintage"] - r["reporting_year"]) > vintage_window_years:
                reasons.append("vintage_outside_window")
            if r["market_boundary"] != r["consumption_boundary"]:
                reasons.append("boundary_mismatch")
            line = StatementLine(
                retirement=entity.from_row(r, r["block_height"]),
                facility_name=r["facility_name"],
                facility_country=r["facility_country"],
                market_boundary=r["market_boundary"],
                energy_source=r["energy_source"],
                technology=r["technology"],
                mwh=mwh(int(r["wh"])),
            )
            out.append(Scope2Exception(line=line, reasons=reasons))
        return out

    @strawberry.field(description="Query 3: share of retired MWh passing the 15-year test.")
    async def re100(self, info: Ctx, max_age_years: int = 15) -> Re100Result:
        params: dict[str, Any] = {"age": max_age_years}
        row = await info.context.reader.one(
            "SELECT coalesce(sum(s.wh), 0) AS total, coalesce(sum(s.wh) FILTER (WHERE"
            " s.reporting_year - extract(year FROM greatest(s.commissioning_date,"
            " s.repowering_date)) <= :age), 0) AS eligible"
            f" FROM ({self._base(params)}) s",
            params,
        )
        total = int(row["total"]) if row else 0
        eligible = int(row["eligible"]) if row else 0
        return Re100Result(
            total_wh=total, eligible_wh=eligible, share=(eligible / total) if total else 0.0
        )

    @strawberry.field(
        description="Query 4: consumption country x source x origin x year x vintage."
    )
    async def cdp_rollup(self, info: Ctx) -> list[CdpRow]:
        params: dict[str, Any] = {}
        rows = await info.context.reader.all(
            "SELECT s.consumption_country, s.energy_source, s.facility_country,"
            " extract(year FROM s.commissioning_date)::int AS cy, s.vintage, sum(s.wh) AS wh"
            f" FROM ({self._base(params)}) s GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
            params,
        )
        return [
            CdpRow(
                consumption_country=r["consumption_country"],
                energy_source=r["energy_source"],
                origin_country=r["facility_country"],
                commissioning_year=r["cy"],
                vintage=r["vintage"],
                wh=int(r["wh"]),
                mwh=mwh(int(r["wh"])),
            )
            for r in rows
        ]

    @strawberry.field(description="Query 7: double counting anywhere (must be empty).")
    async def double_count_audit(self, info: Ctx) -> list[Conflict]:
        params: dict[str, Any] = {}
        a_live, b_live = live("a", True, self._at, params), live("b", True, self._at, params)
        rows = await info.context.reader.all(
            "SELECT 'overlapping_serials' AS kind, a.token_id AS x, b.token_id AS y"
            " FROM certificates a JOIN certificates b ON a.report_id = b.report_id"
            " AND a.token_id < b.token_id AND a.serial_start < b.serial_end"
            " AND b.serial_start < a.serial_end"
            f" WHERE {a_live} AND {b_live} AND a.status <> 'split' AND b.status <> 'split'"
            " UNION ALL SELECT 'overlapping_issuance', a.report_id, b.report_id"
            " FROM generation_reports a JOIN generation_reports b ON a.facility_id ="
            " b.facility_id AND a.report_id < b.report_id AND a.period_start < b.period_end"
            " AND b.period_start < a.period_end"
            f" WHERE {a_live} AND {b_live} AND a.status IN ('attested', 'minted')"
            " AND b.status IN ('attested', 'minted')"
            " UNION ALL SELECT 'retired_twice', a.id, b.id FROM retirements a"
            " JOIN certificates ca ON ca.token_id = a.token_id AND ca.block_to IS NULL"
            " JOIN retirements b ON a.id < b.id AND a.serial_start < b.serial_end"
            " AND b.serial_start < a.serial_end"
            " JOIN certificates cb ON cb.token_id = b.token_id AND cb.block_to IS NULL"
            " AND cb.report_id = ca.report_id ORDER BY 1, 2, 3",
            params,
        )
        return [Conflict(kind=r["kind"], first_id=r["x"], second_id=r["y"]) for r in rows]

    @strawberry.field(
        description="Query 10: issued vs active, listed, retired and revoked Wh per facility and"
        " period: per vintage (default), per generation month or per generation period;"
        " `periodStart`/`periodEnd` keep certificates whose generation starts in [start, end)."
    )
    async def issuance_summary(
        self,
        info: Ctx,
        facility_id: int | None = None,
        group_by: IssuanceGrouping = IssuanceGrouping.VINTAGE,
        period_start: datetime | None = None,
        period_end: datetime | None = None,
    ) -> list[IssuanceRow]:
        for name, value in (("periodStart", period_start), ("periodEnd", period_end)):
            if value is not None and value.tzinfo is None:
                raise BadUserInput(f"{name} needs a time zone (e.g. 2025-01-01T00:00:00Z)")
        if period_start and period_end and period_start >= period_end:
            raise BadUserInput("periodStart must be before periodEnd")
        params: dict[str, Any] = {"fid": facility_id, "ps": period_start, "pe": period_end}
        start, end = ISSUANCE_PERIODS[group_by]
        rows = await info.context.reader.all(
            f"SELECT c.facility_id, {start} AS ps, {end} AS pe, min(c.vintage) AS vintage,"
            " sum(c.wh) AS issued,"
            " coalesce(sum(c.wh) FILTER (WHERE c.status = 'active'), 0) AS active,"
            " coalesce(sum(c.wh) FILTER (WHERE c.status = 'listed'), 0) AS listed,"
            " coalesce(sum(c.wh) FILTER (WHERE c.status = 'retired'), 0) AS retired,"
            " coalesce(sum(c.wh) FILTER (WHERE c.status = 'revoked'), 0) AS revoked"
            f" FROM certificates c WHERE {live('c', True, self._at, params)}"
            " AND c.status <> 'split' AND (CAST(:fid AS bigint) IS NULL OR c.facility_id = :fid)"
            " AND (CAST(:ps AS timestamptz) IS NULL OR c.period_start >= :ps)"
            " AND (CAST(:pe AS timestamptz) IS NULL OR c.period_start < :pe)"
            " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            params,
        )
        return [
            IssuanceRow(
                facility_id=r["facility_id"],
                vintage=r["vintage"],
                period_start=r["ps"].astimezone(UTC),
                period_end=r["pe"].astimezone(UTC),
                issued_wh=int(r["issued"]),
                active_wh=int(r["active"]),
                listed_wh=int(r["listed"]),
                retired_wh=int(r["retired"]),
                revoked_wh=int(r["revoked"]),
            )
            for r in rows
        ]

    @strawberry.field(description="Query 11: retirements whose certificate was later revoked.")
    async def revoked_retirements(self, info: Ctx) -> list[Retirement]:
        params: dict[str, Any] = {}
        rows = await info.context.reader.all(
            f"SELECT s.* FROM ({self._base(params)}) s JOIN certificates c ON c.token_id ="
            f" s.token_id AND {live('c', True, self._at, params)}"
            " WHERE c.revoked_height IS NOT NULL OR c.status = 'revoked'"
            " ORDER BY s.block_height, s.event_index",
            params,
        )
        entity = ENTITIES["Retirement"]
        return [entity.from_row(r, r["block_height"]) for r in rows]

    @strawberry.field(
        description="Query 9: active and listed certificates whose effective expiry (their own,"
        " else their boundary's rule in `expiry_rules`) falls within `withinDays` after `asOf`"
        " (default: the time of the report's block, the chain tip's without `block`; never the"
        " server's clock, so the answer changes only with the chain); `includeExpired` adds"
        " those already past. Filtered by `owner` as `holdings` counts (a listed certificate is"
        " its seller's), not by the report's beneficiary."
    )
    async def expiry_exposure(
        self,
        info: Ctx,
        within_days: int = 90,
        as_of: datetime | None = None,
        owner: str | None = None,
        include_expired: bool = False,
        first: int = 100,
    ) -> ExpiryExposure:
        ctx = info.context
        first = check_first(ctx, first)
        if not 0 <= within_days <= MAX_EXPIRY_WINDOW_DAYS:
            raise BadUserInput(f"withinDays must be between 0 and {MAX_EXPIRY_WINDOW_DAYS}")
        if as_of is not None and as_of.tzinfo is None:
            raise BadUserInput("asOf needs a time zone (e.g. 2026-01-01T00:00:00Z)")
        if as_of is None:
            # The chain's own clock (the block answered, else the tip), never the machine's:
            # the answer changes only when the chain does.
            row = await ctx.reader.one(
                "SELECT coalesce(block_time, burn_block_time) AS t FROM blocks WHERE canonical"
                " AND (CAST(:h AS integer) IS NULL OR block_height = :h)"
                " ORDER BY block_height DESC LIMIT 1",
                {"h": self._at},
            )
            if row is None or row["t"] is None:
                raise NotAvailable("no block is indexed yet: pass asOf")
            as_of = datetime.fromtimestamp(int(row["t"]), UTC)
        params: dict[str, Any] = {
            "asof": as_of,
            "days": within_days,
            "owner": owner,
            "expired": include_expired,
            "first": first,
        }
        c_live, f_live = live("c", True, self._at, params), live("f", True, self._at, params)
        window = (
            "FROM (SELECT c.*, f.market_boundary AS _boundary,"
            " recchain_certificate_expiry(c.expires_at, c.period_end, f.market_boundary) AS _exp"
            " FROM certificates c JOIN facilities f ON f.facility_id = c.facility_id"
            f" AND {f_live} WHERE {c_live} AND c.status IN ('active', 'listed')"
            f" AND (CAST(:owner AS text) IS NULL OR ({_holdings_condition(self._at, params)}))) s"
            " WHERE s._exp < CAST(:asof AS timestamptz) + make_interval(days => :days)"
            " AND (CAST(:expired AS boolean) OR s._exp >= CAST(:asof AS timestamptz))"
        )
        entity = ENTITIES["Certificate"]
        rows: list[Any] = []
        if first:
            # The window totals are computed before LIMIT: one statement gives page and totals.
            rows = list(
                await ctx.reader.all(
                    "SELECT s.*, count(*) OVER () AS _count, sum(s.wh) OVER () AS _total"
                    f" {window} ORDER BY s._exp, s.token_id LIMIT :first",
                    params,
                )
            )
            count = int(rows[0]["_count"]) if rows else 0
            total = int(rows[0]["_total"]) if rows else 0
        else:
            agg = await ctx.reader.one(
                f"SELECT count(*) AS n, coalesce(sum(s.wh), 0) AS wh {window}", params
            )
            count, total = (int(agg["n"]), int(agg["wh"])) if agg else (0, 0)
        return ExpiryExposure(
            as_of=as_of,
            within_days=within_days,
            count=count,
            total_wh=total,
            total_mwh=mwh(total),
            certificates=[
                ExpiringCertificate(
                    certificate=entity.from_row(r, self._at),
                    market_boundary=r["_boundary"],
                    expires_at=r["_exp"],
                    days_left=(r["_exp"] - as_of).total_seconds() / 86400,
                    basis="certificate" if r["expires_at"] is not None else "boundary",
                )
                for r in rows
            ],
        )


# -- market (query 12) ------------------------------------------------------------------------


@strawberry.type(description="Trade aggregates; prices in the currency's smallest unit per MWh.")
class TradeStats:
    key: str | None = strawberry.field(description="Group value (null for the whole market).")
    trade_count: int = strawberry.field(description="Number of sales.")
    volume_wh: BigInt = strawberry.field(description="Energy traded, Wh.")
    notional: BigInt = strawberry.field(description="Sum of prices.")
    fees: BigInt = strawberry.field(description="Sum of platform fees.")
    vwap_per_mwh: BigDecimal | None = strawberry.field(
        description="Volume-weighted average price per MWh."
    )


@strawberry.type(description="Daily open/high/low/close of the price per MWh.")
class Candle:
    day: date = strawberry.field(description="UTC day.")
    open: BigDecimal = strawberry.field(description="First trade's price per MWh.")
    high: BigDecimal = strawberry.field(description="Highest price per MWh.")
    low: BigDecimal = strawberry.field(description="Lowest price per MWh.")
    close: BigDecimal = strawberry.field(description="Last trade's price per MWh.")
    volume_wh: BigInt = strawberry.field(description="Energy traded, Wh.")
    vwap_per_mwh: BigDecimal = strawberry.field(description="VWAP per MWh of the day.")


@strawberry.type(description="Open fixed-price listings at one price per MWh.")
class DepthLevel:
    price_per_mwh: BigDecimal = strawberry.field(description="Asking price per MWh.")
    listings: int = strawberry.field(description="Open listings at this price.")
    wh: BigInt = strawberry.field(description="Energy offered, Wh.")


@strawberry.type(description="Market statistics of one currency (query 12 of docs/domain.md).")
class MarketStats:
    currency: str = strawberry.field(description="STX or a SIP-010 contract id.")
    overall: TradeStats = strawberry.field(description="All matching trades.")
    by_energy_source: list[TradeStats] = strawberry.field(description="Per energy source.")
    by_technology: list[TradeStats] = strawberry.field(description="Per technology (I-REC TC).")
    by_vintage: list[TradeStats] = strawberry.field(description="Per vintage.")
    by_boundary: list[TradeStats] = strawberry.field(description="Per market boundary.")
    daily: list[Candle] = strawberry.field(description="Daily OHLC, oldest first.")
    depth: list[DepthLevel] = strawberry.field(
        description="Open fixed-price listings, cheapest first (top 50 levels)."
    )


PPM = "(s.price * 1000000.0 / nullif(s.wh, 0))"


def _vwap(notional: Any, wh: Any) -> Decimal | None:
    if not wh:
        return None
    return (Decimal(notional) * Decimal(1_000_000) / Decimal(wh)).quantize(Decimal("0.000001"))


async def market_stats(
    ctx: Context,
    currency: str,
    energy_source: str | None,
    vintage: int | None,
    boundary: str | None,
    since: datetime | None,
    until: datetime | None,
    at: int | None,
    technology: str | None = None,
) -> MarketStats:
    params: dict[str, Any] = {"cur": currency}
    conds = ["s.currency = :cur"]
    if at is not None:
        params["_at"] = at
        conds.append("s.block_height <= :_at")
    for name, value, expr in (
        ("es", energy_source, "f.energy_source"),
        ("tc", technology, "f.technology"),
        ("vin", vintage, "c.vintage"),
        ("mb", boundary, "f.market_boundary"),
        ("since", since, "s.block_time >= "),
        ("until", until, "s.block_time < "),
    ):
        if value is not None:
            params[name] = value
            conds.append(f"{expr} :{name}" if expr.endswith(" ") else f"{expr} = :{name}")
    # Attributes as they were at the sale's block.
    base = (
        "SELECT s.*, c.vintage, f.energy_source, f.technology, f.market_boundary FROM sales s"
        " JOIN certificates c ON c.token_id = s.token_id AND c.block_from <= s.block_height"
        " AND (c.block_to IS NULL OR c.block_to > s.block_height)"
        " LEFT JOIN facilities f ON f.facility_id = c.facility_id"
        " AND f.block_from <= s.block_height"
        " AND (f.block_to IS NULL OR f.block_to > s.block_height)"
        f" WHERE {' AND '.join(conds)}"
    )
    dims = {
        "es": "energy_source",
        "tc": "technology",
        "vin": "vintage::text",
        "mb": "market_boundary",
    }
    group = " ".join(f"WHEN GROUPING({e}) = 0 THEN '{g}'" for g, e in dims.items())
    key = " ".join(f"WHEN GROUPING({e}) = 0 THEN {e}" for e in dims.values())
    sets = ", ".join(f"({e})" for e in dims.values())
    groups = await ctx.reader.all(
        f"SELECT CASE {group} ELSE 'all' END AS g, CASE {key} END AS k, count(*) AS n,"
        " coalesce(sum(wh), 0) AS wh, coalesce(sum(price), 0) AS px, coalesce(sum(fee), 0) AS fee"
        f" FROM ({base}) x GROUP BY GROUPING SETS ({sets}, ()) ORDER BY 1, 2",
        params,
    )
    by: dict[str, list[TradeStats]] = {"es": [], "tc": [], "vin": [], "mb": [], "all": []}
    for r in groups:
        by[r["g"]].append(
            TradeStats(
                key=None if r["g"] == "all" else r["k"],
                trade_count=int(r["n"]),
                volume_wh=int(r["wh"]),
                notional=int(r["px"]),
                fees=int(r["fee"]),
                vwap_per_mwh=_vwap(r["px"], r["wh"]),
            )
        )
    candles = await ctx.reader.all(
        "SELECT (s.block_time AT TIME ZONE 'UTC')::date AS day,"
        f" (array_agg({PPM} ORDER BY s.block_height, s.event_index))[1] AS o,"
        f" max({PPM}) AS h, min({PPM}) AS l,"
        f" (array_agg({PPM} ORDER BY s.block_height DESC, s.event_index DESC))[1] AS c,"
        " sum(s.wh) AS wh, sum(s.price) AS px"
        f" FROM ({base}) s WHERE s.block_time IS NOT NULL GROUP BY 1 ORDER BY 1",
        params,
    )
    q = Decimal("0.000001")
    depth_params: dict[str, Any] = {"cur": currency}
    depth = await ctx.reader.all(
        "SELECT round(l.price * 1000000.0 / c.wh, 6) AS ppm, count(*) AS n, sum(c.wh) AS wh"
        " FROM listings l JOIN certificates c ON c.token_id = l.token_id"
        f" AND {live('c', True, at, depth_params)}"
        f" WHERE {live('l', True, at, depth_params)} AND l.status = 'active'"
        " AND l.kind = 'fixed' AND l.currency = :cur AND c.wh > 0"
        " GROUP BY 1 ORDER BY 1 LIMIT 50",
        depth_params,
    )
    overall = (
        by["all"][0]
        if by["all"]
        else TradeStats(key=None, trade_count=0, volume_wh=0, notional=0, fees=0, vwap_per_mwh=None)
    )
    return MarketStats(
        currency=currency,
        overall=overall,
        by_energy_source=by["es"],
        by_technology=by["tc"],
        by_vintage=by["vin"],
        by_boundary=by["mb"],
        daily=[
            Candle(
                day=r["day"],
                open=Decimal(r["o"]).quantize(q),
                high=Decimal(r["h"]).quantize(q),
                low=Decimal(r["l"]).quantize(q),
                close=Decimal(r["c"]).quantize(q),
                volume_wh=int(r["wh"]),
                vwap_per_mwh=_vwap(r["px"], r["wh"]) or Decimal(0),
            )
            for r in candles
        ],
        depth=[
            DepthLevel(price_per_mwh=Decimal(r["ppm"]), listings=int(r["n"]), wh=int(r["wh"]))
            for r in depth
        ],
    )


# -- search (query 13) ------------------------------------------------------------------------


@strawberry.type(description="A search hit: exactly one of facility, certificate, listing is set.")
class SearchHit:
    score: float = strawberry.field(description="Relevance (full-text rank or similarity).")
    kind: str = strawberry.field(description="facility | certificate | listing.")
    facility: Facility | None = strawberry.field(description="The matching facility.")
    certificate: Certificate | None = strawberry.field(description="A matching certificate.")
    listing: Listing | None = strawberry.field(description="A matching open listing.")


async def search(ctx: Context, text: str, first: int) -> list[SearchHit]:
    check_first(ctx, first)
    text = text.strip()
    if not text or len(text) > 200:
        raise BadUserInput("search text must be 1..200 characters")
    params: dict[str, Any] = {"q": text, "n": first}
    facilities = await ctx.reader.all(
        f"SELECT f.*, greatest(ts_rank(to_tsvector('simple', {FACILITY_DOC}), query),"
        f" word_similarity(:q, {FACILITY_DOC})) AS score"
        " FROM facilities f, plainto_tsquery('simple', :q) query"
        f" WHERE f.block_to IS NULL AND (to_tsvector('simple', {FACILITY_DOC}) @@ query"
        # Typo tolerance: trigram word similarity at the read connection's threshold (db.py),
        # through `<%` so that the trigram index of migration 0004 serves it.
        f" OR :q <% {FACILITY_DOC})"
        " ORDER BY score DESC, f.facility_id LIMIT :n",
        params,
    )
    fe, ce, le = ENTITIES["Facility"], ENTITIES["Certificate"], ENTITIES["Listing"]
    hits = [
        SearchHit(
            score=float(r["score"]),
            kind="facility",
            facility=fe.from_row(r, None),
            certificate=None,
            listing=None,
        )
        for r in facilities
    ]
    scores = {r["facility_id"]: float(r["score"]) for r in facilities}
    token = int(text) if text.isdigit() and len(text) < 19 else None
    if scores or token is not None:
        p2: dict[str, Any] = {"ids": list(scores), "tok": token, "n": first}
        certs = await ctx.reader.all(
            "SELECT c.* FROM certificates c WHERE c.block_to IS NULL"
            " AND c.status IN ('active', 'listed')"
            " AND (c.facility_id = ANY(:ids) OR c.token_id = CAST(:tok AS bigint))"
            " ORDER BY c.token_id LIMIT :n",
            p2,
        )
        for r in certs:
            score = 1.0 if r["token_id"] == token else scores.get(r["facility_id"], 0) * 0.9
            hits.append(
                SearchHit(
                    score=score,
                    kind="certificate",
                    facility=None,
                    certificate=ce.from_row(r, None),
                    listing=None,
                )
            )
        lst = await ctx.reader.all(
            "SELECT l.*, c.facility_id AS _fid FROM listings l JOIN certificates c ON"
            " c.token_id = l.token_id AND c.block_to IS NULL WHERE l.block_to IS NULL"
            " AND l.status = 'active' AND (c.facility_id = ANY(:ids)"
            " OR l.token_id = CAST(:tok AS bigint)) ORDER BY l.listing_id LIMIT :n",
            p2,
        )
        for r in lst:
            score = 1.0 if r["token_id"] == token else scores.get(r["_fid"], 0) * 0.95
            hits.append(
                SearchHit(
                    score=score,
                    kind="listing",
                    facility=None,
                    certificate=None,
                    listing=le.from_row(r, None),
                )
            )
    hits.sort(key=lambda h: -h.score)
    return hits[:first]


# -- root fields ------------------------------------------------------------------------------


# -- hourly matching (query 5) ----------------------------------------------------------------

MAX_HOURS = 8784  # one leap year


@strawberry.input(description="Consumption in one UTC hour.")
class HourlyConsumptionInput:
    hour: datetime = strawberry.field(description="Start of the hour (UTC, on the hour).")
    wh: BigInt = strawberry.field(description="Energy consumed in that hour, Wh (>= 0).")


@strawberry.type(description="One hour of consumption and the hourly certificates matching it.")
class HourlyMatch:
    hour: datetime = strawberry.field(description="Start of the hour (UTC).")
    consumed_wh: BigInt = strawberry.field(description="Consumption, Wh.")
    matched_wh: BigInt = strawberry.field(
        description="min(consumption, Wh retired from certificates generated in this hour)."
    )
    unmatched_wh: BigInt = strawberry.field(description="consumedWh - matchedWh.")


@strawberry.type(description="Query 5: 24/7 carbon-free energy matching, hour by hour.")
class HourlyMatching:
    beneficiary: str = strawberry.field(description="Beneficiary name or principal.")
    bidding_zone: str = strawberry.field(description="Bidding zone (facility grid zone).")
    at_height: int | None = strawberry.field(description="The block (null = current).")
    consumed_wh: BigInt = strawberry.field(description="Total consumption, Wh.")
    matched_wh: BigInt = strawberry.field(description="Total matched, Wh.")
    unmatched_wh: BigInt = strawberry.field(description="Total unmatched, Wh.")
    share_matched: float = strawberry.field(
        description="matchedWh / consumedWh, 0..1 (0 when nothing was consumed)."
    )
    unmatched_hour_count: int = strawberry.field(
        description="Hours whose consumption is not fully matched."
    )
    hours: list[HourlyMatch] = strawberry.field(description="Every input hour, in time order.")
    unmatched_hours: list[datetime] = strawberry.field(
        description="Start of every hour not fully matched, in time order."
    )


# Hourly certificates: a generation period inside one UTC hour (end exclusive). The retirement's
# claim period, when given, must cover the whole hour. Certificate and facility are read as they
# were at the retirement's block, as in the statement.
HOURLY_SQL = """
WITH consumption AS (
  SELECT u.hour, u.wh FROM unnest(CAST(:hours AS timestamptz[]), CAST(:whs AS numeric[]))
    AS u(hour, wh)
), supply AS (
  SELECT h.hour, sum(r.wh) AS wh
  FROM retirements r
  JOIN certificates c ON c.token_id = r.token_id AND c.block_from <= r.block_height
    AND (c.block_to IS NULL OR c.block_to > r.block_height)
  JOIN facilities f ON f.facility_id = r.facility_id AND f.block_from <= r.block_height
    AND (f.block_to IS NULL OR f.block_to > r.block_height)
  CROSS JOIN LATERAL (SELECT date_trunc('hour', c.period_start, 'UTC') AS hour) h
  WHERE (r.beneficiary_name = :beneficiary OR r.beneficiary_principal = :beneficiary)
    AND {at}
    AND f.grid_zone = :zone
    AND c.period_end > c.period_start
    AND c.period_end <= h.hour + interval '1 hour'
    AND h.hour = ANY(CAST(:hours AS timestamptz[]))
    AND (r.claim_start IS NULL OR r.claim_start <= h.hour)
    AND (r.claim_end IS NULL OR r.claim_end >= h.hour + interval '1 hour')
  GROUP BY h.hour
), matched AS (
  SELECT c.hour, c.wh AS consumed, least(c.wh, coalesce(s.wh, 0)) AS matched
  FROM consumption c LEFT JOIN supply s ON s.hour = c.hour
)
SELECT hour, consumed, matched,
  sum(consumed) OVER () AS total_consumed, sum(matched) OVER () AS total_matched,
  count(*) FILTER (WHERE matched < consumed) OVER () AS unmatched_hours
FROM matched ORDER BY hour
"""


def _hourly_input(consumption: list[HourlyConsumptionInput]) -> tuple[list[datetime], list[int]]:
    if len(consumption) > MAX_HOURS:
        raise BadUserInput(
            f"consumption: at most {MAX_HOURS} hours (one leap year), got {len(consumption)}",
            max=MAX_HOURS,
        )
    hours: list[datetime] = []
    whs: list[int] = []
    seen: set[datetime] = set()
    for item in consumption:
        # A timestamp without an offset is taken as UTC, the unit of the matching.
        hour = (item.hour if item.hour.tzinfo else item.hour.replace(tzinfo=UTC)).astimezone(UTC)
        if hour.minute or hour.second or hour.microsecond:
            raise BadUserInput(f"consumption: {item.hour.isoformat()} is not on a UTC hour")
        if hour in seen:
            raise BadUserInput(f"consumption: hour {hour.isoformat()} given twice")
        if int(item.wh) < 0:
            raise BadUserInput(f"consumption: negative Wh at {hour.isoformat()}")
        seen.add(hour)
        hours.append(hour)
        whs.append(int(item.wh))
    return hours, whs


async def hourly_matching(
    ctx: Context,
    beneficiary: str,
    bidding_zone: str,
    consumption: list[HourlyConsumptionInput],
    at: int | None,
) -> HourlyMatching:
    if not beneficiary.strip():
        raise BadUserInput("beneficiary must not be empty")
    hours, whs = _hourly_input(consumption)
    params: dict[str, Any] = {
        "hours": hours,
        "whs": whs,
        "beneficiary": beneficiary,
        "zone": bidding_zone,
    }
    cond = live("r", False, at, params)
    rows = await ctx.reader.all(HOURLY_SQL.format(at=cond), params) if hours else []
    out = [
        HourlyMatch(
            hour=r["hour"].astimezone(UTC),
            consumed_wh=int(r["consumed"]),
            matched_wh=int(r["matched"]),
            unmatched_wh=int(r["consumed"]) - int(r["matched"]),
        )
        for r in rows
    ]
    consumed = int(rows[0]["total_consumed"]) if rows else 0
    matched = int(rows[0]["total_matched"]) if rows else 0
    return HourlyMatching(
        beneficiary=beneficiary,
        bidding_zone=bidding_zone,
        at_height=at,
        consumed_wh=consumed,
        matched_wh=matched,
        unmatched_wh=consumed - matched,
        share_matched=matched / consumed if consumed else 0.0,
        unmatched_hour_count=int(rows[0]["unmatched_hours"]) if rows else 0,
        hours=out,
        unmatched_hours=[h.hour for h in out if h.unmatched_wh > 0],
    )


@strawberry.type
class AnalyticsQuery:
    @strawberry.field(
        description="Query 6: every custody change of a token, oldest first; a split child's"
        " history starts with its ancestors' whole history up to the split (mint, listings,"
        " escrow, sales, transfers)."
    )
    async def ownership_history(
        self,
        info: Ctx,
        token_id: int,
        first: int = 100,
        after: str | None = None,
        block: BlockInput | None = None,
    ) -> Connection[Transfer]:
        at = await info.context.at(block)
        params: dict[str, Any] = {"tok": token_id}
        entity = ENTITIES["Transfer"]
        return await paginate(
            info.context,
            prefix=_lineage(at, params),
            from_sql="transfers t JOIN lineage l ON t.token_id = l.token_id"
            " AND t.block_height <= l.cap",
            alias="t",
            params=params,
            conditions=[live("t", False, at, params)],
            order=[("t.block_height", False), ("t.event_index", False), ("t.id", False)],
            signature=f"history:{token_id}",
            first=first,
            after=after,
            build=lambda r: entity.from_row(r, at),
        )

    @strawberry.field(
        description="Query 6 for a serial interval [serialStart, serialEnd): the certificates"
        " holding its parts at `block`, each with its provenance (at most 1,000 parts)."
    )
    async def serial_provenance(
        self, info: Ctx, serial_start: BigInt, serial_end: BigInt, block: BlockInput | None = None
    ) -> SerialProvenance:
        at = await info.context.at(block)
        return await serial_provenance(info.context, int(serial_start), int(serial_end), at)

    @strawberry.field(description="An owner's certificates at a block (query 8), with totals.")
    async def holdings(
        self,
        info: Ctx,
        owner: str,
        block: BlockInput | None = None,
        where: CertificateFilter | None = None,  # type: ignore[valid-type]
        first: int = 100,
        after: str | None = None,
    ) -> Holdings:
        ctx = info.context
        at = await ctx.at(block)
        params: dict[str, Any] = {"owner": owner}
        cert = ENTITIES["Certificate"]
        cond = _holdings_condition(at, params)
        if where is not None:
            cond += " AND " + SqlWhere(cert, at, params).compile(where, "c")
        fac_live = live("f", True, at, params)
        grouped = await ctx.reader.all(
            _grouped_sql(
                HOLDING_DIMS,
                "SELECT c.status, c.vintage, f.energy_source, f.technology, f.market_boundary,"
                " c.wh AS wh_ FROM certificates c LEFT JOIN facilities f"
                f" ON f.facility_id = c.facility_id AND {fac_live} WHERE {cond}",
            ),
            params,
        )
        total, breakdown = _breakdowns(grouped, HOLDING_DIMS)
        page = await paginate(
            ctx,
            from_sql="certificates c",
            alias="c",
            params=dict(params),
            conditions=[cond],
            order=[("c.token_id", False)],
            signature=f"holdings:{owner}",
            first=first,
            after=after,
            build=lambda r: cert.from_row(r, at),
        )
        return Holdings(
            owner=owner, at_height=at, total_wh=total, breakdown=breakdown, certificates=page
        )

    @strawberry.field(
        description="Query 1: what a beneficiary retired in a period or reporting year, totals in"
        " Wh and MWh by market boundary, energy source and vintage, every line with serials and"
        " txids."
    )
    async def retirement_statement(
        self,
        info: Ctx,
        beneficiary: str,
        period_start: datetime | None = None,
        period_end: datetime | None = None,
        reporting_year: int | None = None,
        block: BlockInput | None = None,
    ) -> RetirementStatement:
        at = await info.context.at(block)
        return await retirement_statement(
            info.context, beneficiary, period_start, period_end, reporting_year, at
        )

    @strawberry.field(description="Compliance checks (queries 2, 3, 4, 7, 9, 10, 11).")
    async def compliance_report(
        self,
        info: Ctx,
        beneficiary: str | None = None,
        reporting_year: int | None = None,
        block: BlockInput | None = None,
    ) -> ComplianceReport:
        at = await info.context.at(block)
        return ComplianceReport(beneficiary=beneficiary, reporting_year=reporting_year, _at=at)

    @strawberry.field(
        description="Query 5 (24/7 CFE): hourly consumption matched by retired hourly"
        " certificates of the same bidding zone, as of `block`; at most 8,784 hours, each on a"
        " UTC hour and given once (pass them as variables: a year inline exceeds `max_tokens`)."
    )
    async def hourly_matching(
        self,
        info: Ctx,
        beneficiary: str,
        bidding_zone: str,
        consumption: list[HourlyConsumptionInput],
        block: BlockInput | None = None,
    ) -> HourlyMatching:
        at = await info.context.at(block)
        return await hourly_matching(info.context, beneficiary, bidding_zone, consumption, at)

    @strawberry.field(
        description="Query 12: VWAP per MWh overall and by technology, energy source, vintage"
        " and boundary (attributes as at each sale's block), daily OHLC (UTC days), open"
        " fixed-price depth and fees, in one currency; the filters narrow the trades."
    )
    async def market_stats(
        self,
        info: Ctx,
        currency: str = "STX",
        energy_source: str | None = None,
        vintage: int | None = None,
        boundary: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        block: BlockInput | None = None,
        technology: str | None = None,
    ) -> MarketStats:
        at = await info.context.at(block)
        return await market_stats(
            info.context, currency, energy_source, vintage, boundary, since, until, at, technology
        )

    @strawberry.field(
        description="Query 13: ranked full-text and typo-tolerant search over facilities,"
        " certificates and open listings."
    )
    async def search(self, info: Ctx, text: str, first: int = 20) -> list[SearchHit]:
        return await search(info.context, text, first)
