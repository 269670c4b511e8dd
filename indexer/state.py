"""Write-behind state of one DB transaction: versioned entities, fact rows and raw chain rows.

Handlers read and change entities through `EntityCache`; nothing reaches PostgreSQL until
`flush`, which closes superseded versions with one UPDATE per table and writes new versions, facts,
transactions and events with `COPY`. A catch-up batch of hundreds of blocks therefore costs a
handful of statements; at the tip a batch is one block. The versioning rules are those of
`db.models.base.Versioned`: a change at height h closes the current version at h and opens a new
one from h, and several changes in one block update that block's version in place.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

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
CHAIN_COLUMNS: dict[str, list[str]] = {
    "transactions": [c.name for c in TransactionModel.__table__.columns],
    "events": [c.name for c in EventModel.__table__.columns],
}
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

    def chain(self, table: str, row: dict[str, Any]) -> None:
        self.chain_rows[table].append(tuple(row.get(c) for c in CHAIN_COLUMNS[table]))

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
            cols = COLUMNS[table]
            rows: list[tuple[Any, ...]] = []
            for e in entries.values():
                for block_from, block_to, state in e.versions:
                    state = {**state, "block_from": block_from, "block_to": block_to}
                    rows.append(tuple(_adapt(state.get(c)) for c in cols))
            await copy_rows(conn, table, cols, rows)
            entries.clear()
        for table in FACT_TABLES:
            await copy_rows(conn, table, COLUMNS[table], self.facts[table])
            self.facts[table] = []
        for table, chain_cols in CHAIN_COLUMNS.items():
            await copy_rows(conn, table, chain_cols, self.chain_rows[table])
            self.chain_rows[table] = []


def _adapt(value: Any) -> Any:
    # JSONB columns (facilities.registry_ids) hold dicts; COPY needs the explicit wrapper.
    return Jsonb(value) if isinstance(value, dict) else value


async def copy_rows(
    conn: psycopg.AsyncConnection[Any], table: str, cols: list[str], rows: list[tuple[Any, ...]]
) -> None:
    if not rows:
        return
    query = sql.SQL("COPY {t} ({cols}) FROM STDIN").format(
        t=sql.Identifier(table), cols=sql.SQL(", ").join(map(sql.Identifier, cols))
    )
    async with conn.cursor() as cur, cur.copy(query) as copy:
        for row in rows:
            await copy.write_row(row)
