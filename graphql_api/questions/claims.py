"""What a beneficiary's retirements (its claims) add up to: the retirement statement over a
period or reporting year (query 1 of docs/domain.md, also served as CSV by the app) and 24/7
hourly matching of consumption (query 5). `statement_sql` is also the base of the compliance
checks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import strawberry

from graphql_api.context import BlockInput, Context
from graphql_api.errors import BadUserInput
from graphql_api.query import ENTITIES, live
from graphql_api.questions.grouping import Breakdown, breakdowns, grouping_sets_sql
from graphql_api.scalars import BigDecimal, BigInt
from graphql_api.types import Ctx, Retirement, mwh

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


def statement_line(row: Any) -> StatementLine:
    """A row of `statement_sql` as a line; the retirement is read as of its own block."""
    return StatementLine(
        retirement=ENTITIES["Retirement"].from_row(row, row["block_height"]),
        facility_name=row["facility_name"],
        facility_country=row["facility_country"],
        market_boundary=row["market_boundary"],
        energy_source=row["energy_source"],
        technology=row["technology"],
        mwh=mwh(int(row["wh"])),
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
    grouped = await ctx.reader.all(grouping_sets_sql(STATEMENT_DIMS, base), params)
    total, breakdown = breakdowns(grouped, STATEMENT_DIMS)
    return RetirementStatement(
        beneficiary=beneficiary,
        total_wh=total,
        total_mwh=mwh(total),
        breakdown=breakdown,
        lines=[statement_line(r) for r in rows],
    )


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
class ClaimsQuery:
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
