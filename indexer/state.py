"""Write-behind state of one DB transaction: versioned entities, fact rows and raw chain rows.

Handlers read and change entities through `EntityCache`; nothing reaches PostgreSQL until
`flush`, which closes superseded versions with one UPDATE per table and writes new versions, facts,
transactions and events with `COPY`. A catch-up batch of hundreds of blocks therefore costs a
handful of statements; at the tip a batch is one block. The versioning rules are those of
`db.models.base.Versioned`: a change at height h closes the current version at h and opens a new
one from h, and several changes in one block update that block's version in place.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

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
        "canonical",
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


@dataclass(slots=True)
class _Entry:
    db_vid: int | None  # current version in the database, if any
    db_row: dict[str, Any] | None
    close_db_at: int | None = None
    # Versions opened in this batch: [block_from, block_to, row]
    versions: list[list[Any]] = field(default_factory=list)

    def current(self) -> dict[str, Any] | None:
        if self.versions:
            return self.versions[-1][2]
        return self.db_row


class EntityCache:
    def __init__(self) -> None:
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
        missing = [k for k in keys if k not in entries]
        if not missing:
            return
        key = KEYS[table]
        cols = STATE_COLUMNS[table]
        query = sql.SQL(
            "SELECT vid, {cols} FROM {t} WHERE {k} = ANY(%s) AND block_to IS NULL"
        ).format(
            cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
            t=sql.Identifier(table),
            k=sql.Identifier(key),
        )
        cur = await conn.execute(query, (missing,))
        for row in await cur.fetchall():
            values = dict(zip(cols, row[1:], strict=True))
            entries[values[key]] = _Entry(db_vid=row[0], db_row=values)
        for k in missing:
            entries.setdefault(k, _Entry(db_vid=None, db_row=None))

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
        self.facts[table].append(tuple(row.get(c) for c in COLUMNS[table]))

    def chain(self, table: str, row: tuple[Any, ...]) -> None:
        """A transactions/events row, its values in `CHAIN_COLUMNS` order."""
        self.chain_rows[table].append(row)

    def pending(self) -> bool:
        return (
            any(self._entries[t] for t in VERSIONED_TABLES)
            or any(self.facts[t] for t in FACT_TABLES)
            or any(self.chain_rows[t] for t in CHAIN_COLUMNS)
        )

    async def flush(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Write everything buffered (inside the caller's transaction) and start empty."""
        for table in VERSIONED_TABLES:
            entries = self._entries[table]
            closes = [(e.close_db_at, e.db_vid) for e in entries.values() if e.close_db_at]
            if closes:
                async with conn.cursor() as cur:
                    await cur.execute(
                        sql.SQL(
                            "UPDATE {t} SET block_to = v.h FROM "
                            "(SELECT unnest(%s::int[]) AS h, unnest(%s::bigint[]) AS vid) v "
                            "WHERE {t}.vid = v.vid"
                        ).format(t=sql.Identifier(table)),
                        ([h for h, _ in closes], [v for _, v in closes]),
                    )
            state_cols = STATE_COLUMNS[table]
            rows: list[tuple[Any, ...]] = [
                (*[state.get(c) for c in state_cols], block_from, block_to)
                for e in entries.values()
                for block_from, block_to, state in e.versions
            ]
            await copy_rows(conn, table, [*state_cols, "block_from", "block_to"], rows)
            entries.clear()
        for table in FACT_TABLES:
            await copy_rows(conn, table, COLUMNS[table], self.facts[table])
            self.facts[table] = []
        for table, chain_cols in CHAIN_COLUMNS.items():
            await copy_rows(conn, table, chain_cols, self.chain_rows[table])
            self.chain_rows[table] = []


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


async def copy_rows(
    conn: psycopg.AsyncConnection[Any], table: str, cols: list[str], rows: list[tuple[Any, ...]]
) -> None:
    if not rows:
        return
    query = sql.SQL("COPY {t} ({cols}) FROM STDIN").format(
        t=sql.Identifier(table), cols=sql.SQL(", ").join(map(sql.Identifier, cols))
    )
    async with conn.cursor() as cur, cur.copy(query) as copy:
        await copy.write(copy_text(rows))
