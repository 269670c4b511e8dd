"""Batched loads for nested fields: one SQL statement per (relation, block) per operation."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from graphql_api.context import Context
from graphql_api.query import ENTITIES, live


async def one_by(ctx: Context, entity_name: str, column: str, key: Any, at: int | None) -> Any:
    """The `entity` row whose `column` equals `key`, valid at `at` (or None)."""
    if key is None:
        return None
    entity = ENTITIES[entity_name]

    async def load(keys: Sequence[Any]) -> list[Any]:
        # One key (a root lookup) as a plain parameter: dumping a one-element array costs more
        # than the rest of the statement's parameters.
        params: dict[str, Any]
        if len(keys) == 1:
            params, match = {"key": keys[0]}, f"t.{column} = :key"
        else:
            params, match = {"keys": list(keys)}, f"t.{column} = ANY(:keys)"
        cond = live("t", entity.versioned, at, params)
        rows = await ctx.reader.all(
            f"SELECT t.* FROM {entity.table} t WHERE {match} AND {cond}", params
        )
        found = {r[column]: entity.from_row(r, at) for r in rows}
        return [found.get(k) for k in keys]

    return await ctx.loader(f"one:{entity_name}:{column}:{at}", load).load(key)


async def many_by(
    ctx: Context,
    entity_name: str,
    column: str,
    key: Any,
    at: int | None,
    order: str,
    limit: int = 1000,
) -> list[Any]:
    """All `entity` rows whose `column` equals `key`, valid at `at`, in `order` (capped)."""
    entity = ENTITIES[entity_name]

    async def load(keys: Sequence[Any]) -> list[list[Any]]:
        params: dict[str, Any] = {"keys": list(keys)}
        cond = live("t", entity.versioned, at, params)
        # One statement for every parent; the window caps each parent's share.
        rows = await ctx.reader.all(
            f"SELECT * FROM (SELECT t.*, row_number() OVER (PARTITION BY t.{column}"
            f" ORDER BY {order}) AS _rn FROM {entity.table} t"
            f" WHERE t.{column} = ANY(:keys) AND {cond}) s WHERE _rn <= {int(limit)}"
            f" ORDER BY _rn",
            params,
        )
        grouped: dict[Any, list[Any]] = defaultdict(list)
        for r in rows:
            grouped[r[column]].append(entity.from_row(r, at))
        return [grouped.get(k, []) for k in keys]

    return await ctx.loader(f"many:{entity_name}:{column}:{at}:{order}:{limit}", load).load(key)
