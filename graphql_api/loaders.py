"""Batched loads for nested fields: one SQL statement per (relation, block, page) per operation."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from graphql_api.context import Context
from graphql_api.query import (
    ENTITIES,
    Connection,
    Edge,
    Entity,
    PageInfo,
    Pin,
    check_first,
    cursor_signature,
    decode_cursor,
    guarded,
    keyset,
    live,
    pin_columns,
    pinned_height,
    row_pin,
    unguarded,
)


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


@dataclass(frozen=True)
class Relation:
    """A relation field that returns a connection: the rows of `entity` whose `column` is the
    parent's key, in `order` (columns of `t`, descending?; ending with a unique column)."""

    name: str  # Type.field, named in its cursors
    entity: str
    column: str
    order: tuple[tuple[str, bool], ...]


async def page_by(
    ctx: Context,
    relation: Relation,
    key: Any,
    at: int | None,
    first: int,
    after: str | None,
) -> Connection[Any]:
    """One keyset page of `relation` for the parent whose key is `key`, valid at `at`. Every
    parent asking for the same page of `relation` in an operation is served by one statement,
    and their `totalCount`s, when asked, by another.

    A cursor names a position in the relation's order, so it resumes any parent's list of that
    relation; from another list or ordering it is refused, as on root lists. It also names the
    block its first page read (query.Pin), which later pages read, whatever block the parent
    is read at now; a parent read at another explicit block is a contradiction, refused."""
    check_first(ctx, first)
    entity, column, order = ENTITIES[relation.entity], relation.column, relation.order
    sig = cursor_signature(f"{relation.name}|" + ",".join(f"{c}:{d}" for c, d in order))
    # Decoded here, not in the batch: a bad cursor is this field's error.
    values = decode_cursor(sig, after, len(order)) if after else None
    at, pin = pinned_height(at, after)

    async def load(keys: Sequence[Any]) -> list[Connection[Any]]:
        params: dict[str, Any] = {"keys": list(keys)}
        conds = [f"t.{column} = ANY(:keys)", live("t", entity.versioned, at, params)]
        if values is not None:
            counter = [0]

            def bind(value: Any) -> str:
                counter[0] += 1
                params[f"k{counter[0]}"] = value
                return f":k{counter[0]}"

            conds.append(keyset(order, values, bind, {f"t.{c}" for c in entity.nullable}))
        order_sql = ", ".join(f"{c} {'DESC' if d else 'ASC'}" for c, d in order)
        cols = ", ".join(f"{c} AS _o{i}" for i, (c, _) in enumerate(order))
        cols += pin_columns(at, pin, params)
        # One statement for every parent; the window cuts each parent's page (and one row more,
        # which tells whether a next page exists).
        window = (
            f"SELECT * FROM (SELECT t.*, {cols}, row_number() OVER (PARTITION BY t.{column}"
            f" ORDER BY {order_sql}) AS _rn FROM {entity.table} t"
            f" WHERE {' AND '.join(conds)}) s WHERE _rn <= {first + 1} ORDER BY _rn"
        )
        rows: Sequence[Any] = []
        if first > 0:
            sql = guarded(window, pin, params, "p._rn")
            rows = unguarded(await ctx.reader.all(sql, params), pin, "_rn")
        grouped: dict[Any, list[Any]] = defaultdict(list)
        for r in rows:
            grouped[r[column]].append(r)
        pinned = row_pin(rows[0], pin) if rows else pin
        return [page(k, grouped.get(k, []), pinned) for k in keys]

    def page(parent: Any, rows: list[Any], pinned: Pin | None) -> Connection[Any]:
        edges = [
            Edge(
                node=entity.from_row(r, at),
                _key=(sig, [r[f"_o{i}"] for i in range(len(order))], pinned),
            )
            for r in rows[:first]
        ]
        return Connection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=len(rows) > first,
                has_previous_page=after is not None,
                start_cursor=edges[0].cursor() if edges else None,
                end_cursor=edges[-1].cursor() if edges else None,
            ),
            _count=lambda: count_by(ctx, entity, column, parent, at, pin),
        )

    name = f"page:{relation.name}:{at}:{first}:{after}"
    result: Connection[Any] = await ctx.loader(name, load).load(key)
    return result


async def count_by(
    ctx: Context, entity: Entity, column: str, key: Any, at: int | None, pin: Pin | None = None
) -> int:
    """How many `entity` rows have `column` = `key` at `at`: a relation's `totalCount`, batched
    over the parents of the operation."""

    async def load(keys: Sequence[Any]) -> list[int]:
        params: dict[str, Any] = {"keys": list(keys)}
        counts = (
            f"SELECT t.{column} AS _k, count(*) AS n FROM {entity.table} t"
            f" WHERE t.{column} = ANY(:keys) AND {live('t', entity.versioned, at, params)}"
            f" GROUP BY t.{column}"
        )
        sql = guarded(counts, pin, params, "p._k")
        rows = unguarded(await ctx.reader.all(sql, params), pin, "_k")
        found = {r["_k"]: int(r["n"]) for r in rows}
        return [found.get(k, 0) for k in keys]

    pinned = "" if pin is None else pin.hash
    name = f"count:{entity.name}:{column}:{at}:{pinned}"
    result: int = await ctx.loader(name, load).load(key)
    return result
