"""Write-behind state of one DB transaction: versioned entities, fact rows and raw chain rows.

Handlers read and change entities through `EntityCache`; nothing reaches PostgreSQL until
`stage` turns the buffers into `Steps` (one UPDATE per table closing superseded versions, and the
COPY text of new versions, facts, transactions and events) and `send` runs them. A catch-up batch
of hundreds of blocks therefore costs a handful of statements; at the tip a batch is one block.
Staging is pure Python, so catch-up builds batch N+1's steps while another connection sends
batch N's (`indexer.pipeline`); `carry` hands the entity states batch N left to batch N+1, which
cannot read them from the database before N commits. The versioning rules are those of
`db.models.base.Versioned`: a change at height h closes the current version at h and opens a new
one from h, and several changes in one block update that block's version in place.
"""

from __future__ import annotations

import json
import operator
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import abc as pg_abc
from psycopg import sql
from psycopg.adapt import Transformer
from psycopg.pq import Format

try:  # binary COPY rows formatted without a live COPY (private to psycopg, hence the guard)
    from psycopg._copy_base import _binary_signature as _SIGNATURE
    from psycopg._copy_base import _binary_trailer as _TRAILER
    from psycopg._copy_base import format_row_binary
except ImportError:  # pragma: no cover - another psycopg layout: text COPY
    format_row_binary = None
from sqlalchemy import types as sa_types

from db.models import domain
from db.models.base import FACT_TABLES, VERSIONED_TABLES
from db.models.chain import Event as EventModel
from db.models.chain import Transaction as TransactionModel

# Entity key column of each versioned table.
KEYS: dict[str, str] = {
    "verifiers": "principal",
    "facilities": "facility_id",
    "generation_reports": "report_id",
    "certificates": "token_id",
    "listings": "listing_id",
}
_MODELS = {m.__tablename__: m for m in (
    domain.Verifier, domain.Facility, domain.GenerationReport, domain.Certificate, domain.Listing,
    domain.Transfer, domain.Bid, domain.Sale, domain.Retirement,
)}  # fmt: skip
_SURROGATE = {"vid", "id"}
# Column lists come from the models, the single definition of the schema.
COLUMNS: dict[str, list[str]] = {
    name: [c.name for c in model.__table__.columns if c.name not in _SURROGATE]
    for name, model in _MODELS.items()
}
STATE_COLUMNS: dict[str, list[str]] = {
    t: [c for c in COLUMNS[t] if c not in ("block_from", "block_to")] for t in VERSIONED_TABLES
}
# What the pipeline writes of each chain row, in this order (the rest of the columns stay NULL).
CHAIN_COLUMNS: dict[str, list[str]] = {
    "transactions": [
        "index_block_hash", "txid", "block_height", "tx_index", "status", "raw_result", "raw_tx",
        "canonical", "sender", "contract_id", "function_name", "fee", "nonce",
    ],
    "events": [
        "index_block_hash", "txid", "event_index", "tx_index", "block_height", "type",
        "contract_id", "topic", "kind", "sender", "recipient", "amount", "raw_value", "canonical",
    ],
}  # fmt: skip
assert all(
    set(cols) <= {c.name for c in model.__table__.columns}
    for cols, model in zip(CHAIN_COLUMNS.values(), (TransactionModel, EventModel), strict=True)
)
assert set(KEYS) == set(VERSIONED_TABLES)


# A staged statement: ("copy", COPY statement, its data) or ("exec", statement, parameters).
Step = tuple[str, sql.Composed, Any]
# Entity states by table and key: what a batch leaves for the next one (see `EntityCache.stage`).
Carry = dict[str, dict[Any, dict[str, Any]]]


def _key_type(table: str) -> str:
    return "text" if table == "verifiers" else "bigint"


assert all(
    isinstance(_MODELS[t].__table__.c[KEYS[t]].type, sa_types.Text) == (_key_type(t) == "text")
    for t in VERSIONED_TABLES
)


@dataclass(slots=True)
class _Entry:
    # Current version before this batch (from the database or the previous batch), if any.
    db_row: dict[str, Any] | None
    close_db_at: int | None = None
    # Versions opened in this batch: [block_from, block_to, row]
    versions: list[list[Any]] = field(default_factory=list)

    def current(self) -> dict[str, Any] | None:
        if self.versions:
            return self.versions[-1][2]
        return self.db_row


class EntityCache:
    def __init__(self, carry: Carry | None = None) -> None:
        self._carry = carry or {}
        self._entries: dict[str, dict[Any, _Entry]] = {t: {} for t in VERSIONED_TABLES}
        self.facts: dict[str, list[tuple[Any, ...]]] = {t: [] for t in FACT_TABLES}
        self.chain_rows: dict[str, list[tuple[Any, ...]]] = {t: [] for t in CHAIN_COLUMNS}
        # What changed, for the NOTIFY payload: table -> entity ids.
        self.changes: dict[str, set[Any]] = defaultdict(set)

    # ------------------------------------------------------------------ reads
    async def prefetch(
        self, conn: psycopg.AsyncConnection[Any], table: str, keys: set[Any]
    ) -> None:
        entries = self._entries[table]
        carried = self._carry.get(table, {})
        missing = []
        for k in keys:
            if k in entries:
                continue
            if k in carried:  # newer than the database's, which may not have it yet
                entries[k] = _Entry(db_row=carried[k])
            else:
                missing.append(k)
        if not missing:
            return
        key = KEYS[table]
        cols = STATE_COLUMNS[table]
        query = sql.SQL("SELECT {cols} FROM {t} WHERE {k} = ANY(%b) AND block_to IS NULL").format(
            cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
            t=sql.Identifier(table),
            k=sql.Identifier(key),
        )
        cur = await conn.execute(query, (missing,))
        for row in await cur.fetchall():
            values = dict(zip(cols, row, strict=True))
            entries[values[key]] = _Entry(db_row=values)
        for k in missing:
            entries.setdefault(k, _Entry(db_row=None))

    async def get(
        self, conn: psycopg.AsyncConnection[Any], table: str, key: Any
    ) -> dict[str, Any] | None:
        entry = self._entries[table].get(key)
        if entry is None:
            await self.prefetch(conn, table, {key})
            entry = self._entries[table][key]
        current = entry.current()
        return None if current is None else dict(current)

    # ------------------------------------------------------------------ writes
    def put(self, table: str, row: dict[str, Any], height: int) -> None:
        """Make `row` (every state column) the entity's state from `height` on.

        The entity must have been read with `get`/`prefetch` first (so its DB version is known).
        """
        key = row[KEYS[table]]
        entry = self._entries[table][key]
        self.changes[table].add(key)
        if entry.versions and entry.versions[-1][0] == height:
            entry.versions[-1][2] = row
            return
        if entry.versions:
            entry.versions[-1][1] = height
        elif entry.db_row is not None:
            entry.close_db_at = height
        entry.versions.append([height, None, row])

    def fact(self, table: str, row: dict[str, Any]) -> None:
        self.facts[table].append(tuple(map(row.get, COLUMNS[table])))

    def chain(self, table: str, row: tuple[Any, ...]) -> None:
        """A transactions/events row, its values in `CHAIN_COLUMNS` order."""
        self.chain_rows[table].append(row)

    def pending(self) -> bool:
        return (
            any(self._entries[t] for t in VERSIONED_TABLES)
            or any(self.facts[t] for t in FACT_TABLES)
            or any(self.chain_rows[t] for t in CHAIN_COLUMNS)
        )

    def stage(self, steps: list[Step]) -> Carry:
        """Append the statements writing everything buffered to `steps`, start empty, and return
        the current state of every entity this batch changed (the next batch's `carry`).

        Superseded versions are closed by key (the current version is the one with no
        `block_to`), not by `vid`: a version written by a batch still in flight has no vid here.
        """
        carry: Carry = {}
        for table in VERSIONED_TABLES:
            entries = self._entries[table]
            closes = [(e.close_db_at, k) for k, e in entries.items() if e.close_db_at]
            if closes:
                key = sql.Identifier(KEYS[table])
                steps.append(
                    (
                        "exec",
                        sql.SQL(
                            "UPDATE {t} SET block_to = v.h FROM (SELECT unnest(%b::int[]) AS h, "
                            "unnest(%b::{kt}[]) AS k) v WHERE {t}.{key} = v.k "
                            "AND {t}.block_to IS NULL"
                        ).format(t=sql.Identifier(table), key=key, kt=sql.SQL(_key_type(table))),
                        ([h for h, _ in closes], [k for _, k in closes]),
                    )
                )
            state_cols = STATE_COLUMNS[table]
            get = operator.itemgetter(*state_cols)
            try:
                rows: list[tuple[Any, ...]] = [
                    (*get(state), block_from, block_to)
                    for e in entries.values()
                    for block_from, block_to, state in e.versions
                ]
            except KeyError:  # a handler left a column out: it is NULL
                rows = [
                    (*[state.get(c) for c in state_cols], block_from, block_to)
                    for e in entries.values()
                    for block_from, block_to, state in e.versions
                ]
            stage_copy(steps, table, [*state_cols, "block_from", "block_to"], rows)
            carry[table] = {k: e.versions[-1][2] for k, e in entries.items() if e.versions}
            entries.clear()
        for table in FACT_TABLES:
            stage_copy(steps, table, COLUMNS[table], self.facts[table])
            self.facts[table] = []
        for table, chain_cols in CHAIN_COLUMNS.items():
            stage_copy(steps, table, chain_cols, self.chain_rows[table])
            self.chain_rows[table] = []
        return carry

    async def flush(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Write everything buffered (inside the caller's transaction) and start empty."""
        steps: list[Step] = []
        self.stage(steps)
        await send(conn, steps)


_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def _text(value: str) -> str:
    # Tests for absence are C scans; payloads almost never need escaping, so this rarely copies.
    for char, escaped in _ESCAPES:
        if char in value:
            value = value.replace(char, escaped)
    return value


def _field(value: Any) -> str:
    """One value in COPY text format (the types the models' columns take)."""
    if value is None:
        return "\\N"
    t = type(value)
    if t is str:
        return _text(value)
    if t is int or t is Decimal:
        return str(value)
    if t is bool:
        return "t" if value else "f"
    if t is datetime or t is date:
        return value.isoformat()
    if t is bytes or t is memoryview:
        return "\\\\x" + bytes(value).hex()
    if t is dict or t is list:
        # JSONB columns (facilities.registry_ids).
        return _text(json.dumps(value, separators=(",", ":")))
    return _text(str(value))


def copy_text(rows: Iterable[Sequence[Any]]) -> str:
    """Rows as one COPY text-format buffer: formatting here and sending it in one write costs a
    fraction of psycopg's per-row `write_row` (which dumps every value through its adapters)."""
    # The common cases inline (a function call per value would double the cost).
    lines = [
        "\t".join(
            [
                v
                if type(v) is str
                and "\\" not in v
                and "\t" not in v
                and "\n" not in v
                and "\r" not in v
                else "\\N"
                if v is None
                else str(v)
                if type(v) is int
                else _field(v)
                for v in row
            ]
        )
        for row in rows
    ]
    lines.append("")
    return "\n".join(lines)


def stage_copy(
    steps: list[Step], table: str, cols: list[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Stage a COPY of `rows`, formatted now (by the thread that stages, so that the one that
    sends only moves bytes: a writer thread that formats competes for the GIL, and PostgreSQL
    waits for its data meanwhile)."""
    if not rows:
        return
    data = _binary_copy(table, cols, rows)
    if data is None:
        steps.append(("copy", _copy_query(table, cols, binary=False), copy_text(rows).encode()))
    else:
        steps.append(("copy", _copy_query(table, cols, binary=True), data))


def _copy_query(table: str, cols: Sequence[str], binary: bool) -> sql.Composed:
    return sql.SQL("COPY {t} ({cols}) FROM STDIN{fmt}").format(
        t=sql.Identifier(table),
        cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
        fmt=sql.SQL(" (FORMAT BINARY)" if binary else ""),
    )


# Column type oids of the tables the pipeline COPYs into (`load_column_types`).
_COLUMN_TYPES: dict[str, dict[str, int]] = {}
# Per (table, columns): the transformer with the columns' binary dumpers, and the positions
# and bounds of the narrow integer columns (see `_fits`).
_Binary = tuple[pg_abc.Transformer, list[tuple[int, int]]]
_TRANSFORMERS: dict[tuple[str, tuple[str, ...]], _Binary | None] = {}
# int2 and int4 oids and their bounds: psycopg's binary dumpers for them wrap a larger value
# silently, where PostgreSQL would refuse its text.
_NARROW = {21: 2**15, 23: 2**31}


async def load_column_types(conn: psycopg.AsyncConnection[Any], tables: Iterable[str]) -> None:
    """Read the column types binary COPY needs (once per process: the schema is Alembic's)."""
    wanted = [t for t in tables if t not in _COLUMN_TYPES]
    if not wanted:
        return
    cur = await conn.execute(
        "SELECT c.relname, a.attname, a.atttypid FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE a.attrelid = ANY(SELECT to_regclass(t)::oid FROM unnest(%s::text[]) t) "
        "AND a.attnum > 0 AND NOT a.attisdropped",
        (wanted,),
    )
    for table, col, oid in await cur.fetchall():
        _COLUMN_TYPES.setdefault(table, {})[col] = oid


def _transformer(table: str, cols: Sequence[str]) -> _Binary | None:
    key = (table, tuple(cols))
    if key not in _TRANSFORMERS:
        types = _COLUMN_TYPES.get(table, {})
        binary: _Binary | None = None
        if format_row_binary is not None and all(c in types for c in cols):
            tx = Transformer(psycopg.adapters)
            try:
                tx.set_dumper_types([types[c] for c in cols], Format.BINARY)
            except psycopg.ProgrammingError:  # a type without a binary dumper
                pass
            else:
                narrow = [(i, _NARROW[types[c]]) for i, c in enumerate(cols) if types[c] in _NARROW]
                binary = (tx, narrow)
        _TRANSFORMERS[key] = binary
    return _TRANSFORMERS[key]


def _fits(rows: Sequence[Sequence[Any]], narrow: list[tuple[int, int]]) -> bool:
    """Whether every value of the int2/int4 columns is in range (C-level min/max per column)."""
    for i, bound in narrow:
        values = list(map(operator.itemgetter(i), rows))
        try:
            if min(values) < -bound or max(values) >= bound:
                return False
        except TypeError:  # NULLs among them (a non-int fails in the dumper)
            ints = [v for v in values if type(v) is int]
            if ints and (min(ints) < -bound or max(ints) >= bound):
                return False
    return True


def _binary_copy(
    table: str, cols: Sequence[str], rows: Sequence[Sequence[Any]]
) -> bytearray | None:
    """The whole binary COPY stream of `rows` (psycopg's C dumpers for the columns' types:
    several times cheaper than COPY text built in Python, and cheaper for PostgreSQL to parse),
    or None if the types are unknown or a value does not fit its column (the text format then
    lets PostgreSQL judge it, as it always did)."""
    binary = _transformer(table, cols)
    if binary is None or format_row_binary is None or not _fits(rows, binary[1]):
        return None
    tx = binary[0]
    out = bytearray(_SIGNATURE)
    try:
        for row in rows:
            format_row_binary(row, tx, out)
    except (TypeError, ValueError, OverflowError, psycopg.Error):
        return None
    out += _TRAILER
    return out


async def send(conn: psycopg.AsyncConnection[Any], steps: list[Step]) -> None:
    """Run staged steps in order, inside the caller's transaction."""
    async with conn.cursor() as cur:
        for kind, what, arg in steps:
            if kind == "copy":
                async with cur.copy(what) as copy:
                    await copy.write(arg)
            else:
                await cur.execute(what, arg)


async def copy_rows(
    conn: psycopg.AsyncConnection[Any], table: str, cols: list[str], rows: list[tuple[Any, ...]]
) -> None:
    """COPY `rows` in text format (lenient about Python types: any value prints as text)."""
    if rows:
        async with conn.cursor() as cur, cur.copy(_copy_query(table, cols, False)) as copy:
            await copy.write(copy_text(rows))
