"""Totals by several attributes in one statement: one GROUPING SETS query gives a row per value of
each attribute and the grand total. Holdings, the retirement statement and market statistics
group this way."""

from __future__ import annotations

from typing import Any

import strawberry

from graphql_api.scalars import BigDecimal, BigInt
from graphql_api.types import mwh


@strawberry.type(description="Energy grouped by one attribute.")
class Breakdown:
    dimension: str = strawberry.field(description="The grouping attribute.")
    key: str | None = strawberry.field(description="The attribute's value.")
    wh: BigInt = strawberry.field(description="Energy, Wh.")
    mwh: BigDecimal = strawberry.field(description="Energy, MWh.")
    count: int = strawberry.field(description="Number of certificates or retirements.")


def grouping_sets_sql(
    dims: dict[str, str], source: str, aggregates: str = "sum(wh_) AS wh, count(*) AS n"
) -> str:
    """`aggregates` over `source` per value of each expression of `dims` (name -> SQL over
    `source`'s columns) and in total: `_set` is the name of the row's dimension (`total` for the
    grand total), `_key` its value as text."""
    cases = " ".join(f"WHEN GROUPING({expr}) = 0 THEN '{name}'" for name, expr in dims.items())
    keys = " ".join(f"WHEN GROUPING({expr}) = 0 THEN ({expr})::text" for expr in dims.values())
    sets = ", ".join(f"({expr})" for expr in dims.values())
    return (
        f"SELECT CASE {cases} ELSE 'total' END AS _set, CASE {keys} END AS _key,"
        f" {aggregates} FROM ({source}) s GROUP BY GROUPING SETS ({sets}, ())"
    )


def breakdowns(rows: Any, dims: dict[str, str]) -> tuple[int, list[Breakdown]]:
    """The grand total and the Breakdowns of a `grouping_sets_sql` result with the default
    aggregates (`source` selects the energy as `wh_`), in the order of `dims`, then by value."""
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
