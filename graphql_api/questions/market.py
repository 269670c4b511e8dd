"""Market data (query 12 of docs/domain.md): volume-weighted prices per MWh overall and by
technology, energy source, vintage and boundary, daily OHLC candles, open fixed-price depth and
fees, in one currency."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import strawberry

from graphql_api.context import BlockInput, Context
from graphql_api.query import live
from graphql_api.questions.grouping import grouping_sets_sql
from graphql_api.scalars import BigDecimal, BigInt
from graphql_api.types import Ctx, price_per_mwh


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
    groups = await ctx.reader.all(
        grouping_sets_sql(
            dims,
            base,
            "count(*) AS n, coalesce(sum(wh), 0) AS wh, coalesce(sum(price), 0) AS px,"
            " coalesce(sum(fee), 0) AS fee",
        )
        + " ORDER BY 1, 2",
        params,
    )
    by: dict[str, list[TradeStats]] = {"es": [], "tc": [], "vin": [], "mb": [], "total": []}
    for r in groups:
        by[r["_set"]].append(
            TradeStats(
                key=None if r["_set"] == "total" else r["_key"],
                trade_count=int(r["n"]),
                volume_wh=int(r["wh"]),
                notional=int(r["px"]),
                fees=int(r["fee"]),
                vwap_per_mwh=price_per_mwh(r["px"], r["wh"]),
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
        by["total"][0]
        if by["total"]
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
                vwap_per_mwh=price_per_mwh(r["px"], r["wh"]) or Decimal(0),
            )
            for r in candles
        ],
        depth=[
            DepthLevel(price_per_mwh=Decimal(r["ppm"]), listings=int(r["n"]), wh=int(r["wh"]))
            for r in depth
        ],
    )


@strawberry.type
class MarketQuery:
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
