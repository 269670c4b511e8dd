"""Compliance checks over retirements and certificates, the fields of `complianceReport`
(docs/domain.md): Scope 2 quality (query 2), RE100 (3), the CDP roll-up (4), the double-counting
audit (7), expiry exposure (9), issuance per facility and period (10) and retirements whose
certificate was revoked later (11). The retirements considered are those of the retirement
statement (`claims.statement_sql`)."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import strawberry

from graphql_api.context import BlockInput
from graphql_api.errors import BadUserInput, NotAvailable
from graphql_api.query import ENTITIES, check_first, live
from graphql_api.questions.claims import StatementLine, statement_line, statement_sql
from graphql_api.questions.history import holdings_condition
from graphql_api.scalars import BigDecimal, BigInt
from graphql_api.types import Certificate, Ctx, Retirement, mwh


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
        out = []
        for r in rows:
            reasons = []
            if abs(r["vintage"] - r["reporting_year"]) > vintage_window_years:
                reasons.append("vintage_outside_window")
            if r["market_boundary"] != r["consumption_boundary"]:
                reasons.append("boundary_mismatch")
            out.append(Scope2Exception(line=statement_line(r), reasons=reasons))
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
            f" AND (CAST(:owner AS text) IS NULL OR ({holdings_condition(self._at, params)}))) s"
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


@strawberry.type
class ComplianceQuery:
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
