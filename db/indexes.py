"""Secondary indexes deferred while a catch-up replay fills an empty database.

Maintaining an index row by row costs PostgreSQL far more than building it once from the
finished table (a sort, then sequential writes), and most of the cost is in the indexes whose
keys are random (txids, owners, token ids): each insert lands on another page, and once an
index outgrows the buffer cache every insert reads and writes one. A replay into a database
whose deferrable tables are empty (`empty`) therefore drops those indexes and builds them when
it ends (`defer`, `restore`). It drops them only when its first batch with rows for those tables
is sent: an archive of others' traffic brings none, and dropping and building a few dozen
indexes would cost it more than the rest of its run.

Deferred are the non-unique indexes of the chain and domain tables, except those led by a
height column (`block_height`, `block_from`, `block_to`): a rollback during the replay reads
through them, and their keys only grow, so keeping them costs little. Unique indexes stay: they
are integrity rules, and the indexer's own lookups (payload dedup, current versions, blocks) go
through them.

Each dropped index's definition is recorded in `deferred_indexes` in the transaction that drops
it, so a replay killed at any point leaves a record of what to build: a resumed replay keeps
them deferred and builds them at its end, any other indexer start and `recchain migrate` build
them first. Each index is built and its record deleted in one transaction, so an interrupted
build is simply redone.
"""

from __future__ import annotations

from typing import Any

import psycopg

from db.models.base import FACT_TABLES, VERSIONED_TABLES

DEFERRABLE_TABLES = ("transactions", "events", *VERSIONED_TABLES, *FACT_TABLES)
KEPT_LEADING_COLUMNS = ("block_height", "block_from", "block_to")
# Building an index sorts its keys: with more memory the sort stays in memory.
BUILD_MEMORY = "256MB"

# An expression index (indkey[0] = 0) has no leading column and is deferred like the others.
_CANDIDATES = """
SELECT ci.relname, t.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index i
JOIN pg_class ci ON ci.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]
WHERE t.relname = ANY(%s) AND t.relnamespace = current_schema()::regnamespace
  AND NOT i.indisunique AND NOT i.indisprimary AND i.indisvalid
  AND coalesce(a.attname, '') <> ALL(%s)
ORDER BY t.relname, ci.relname
"""


async def pending(pg: psycopg.AsyncConnection[Any]) -> int:
    """How many deferred indexes wait to be built."""
    cur = await pg.execute("SELECT count(*) FROM deferred_indexes")
    return int((await cur.fetchone())[0])  # type: ignore[index]


async def empty(pg: psycopg.AsyncConnection[Any]) -> bool:
    """No row in any deferrable table: dropping and building their indexes costs next to
    nothing then, and it is the only state in which deferring saves work."""
    probes = psycopg.sql.SQL(" OR ").join(
        psycopg.sql.SQL("EXISTS (SELECT 1 FROM {})").format(psycopg.sql.Identifier(table))
        for table in DEFERRABLE_TABLES
    )
    cur = await pg.execute(psycopg.sql.SQL("SELECT NOT ({})").format(probes))
    return bool((await cur.fetchone())[0])  # type: ignore[index]


async def defer(pg: psycopg.AsyncConnection[Any]) -> int:
    """Drop the deferrable indexes, recording each (inside the caller's transaction, which
    commits them together). Returns how many were dropped."""
    cur = await pg.execute(_CANDIDATES, (list(DEFERRABLE_TABLES), list(KEPT_LEADING_COLUMNS)))
    found = await cur.fetchall()
    for name, table, definition in found:
        await pg.execute(
            "INSERT INTO deferred_indexes (name, table_name, definition) VALUES (%s, %s, %s)",
            (name, table, definition),
        )
        await pg.execute(psycopg.sql.SQL("DROP INDEX {}").format(psycopg.sql.Identifier(name)))
    return len(found)


async def deferred(pg: psycopg.AsyncConnection[Any]) -> list[tuple[str, str]]:
    """(name, definition) of every deferred index, in the order they are built."""
    cur = await pg.execute(_RECORDED)
    return [(str(name), str(definition)) for name, definition in await cur.fetchall()]


async def build(pg: psycopg.AsyncConnection[Any], name: str, definition: str) -> bool:
    """Build one deferred index and delete its record, inside the caller's transaction (which
    commits both). False when another process built it meanwhile."""
    # Two processes building at once: the second waits here, then finds the record gone.
    await pg.execute(_LOCK)
    cur = await pg.execute("DELETE FROM deferred_indexes WHERE name = %s", (name,))
    if not cur.rowcount:
        return False
    await pg.execute(f"SET LOCAL maintenance_work_mem = '{BUILD_MEMORY}'")
    await pg.execute(_if_not_exists(definition))
    return True


def restore_sync(conn: psycopg.Connection[Any]) -> int:
    """Build every deferred index on a blocking connection (`recchain migrate` does before any
    migration runs, so that none meets a missing index). Returns how many were built."""
    if conn.execute("SELECT to_regclass('deferred_indexes')").fetchone() == (None,):
        conn.commit()
        return 0
    rows = conn.execute(_RECORDED).fetchall()
    conn.commit()
    built = 0
    for name, definition in rows:
        with conn.transaction():
            conn.execute(_LOCK)
            if not conn.execute("DELETE FROM deferred_indexes WHERE name = %s", (name,)).rowcount:
                continue
            conn.execute(f"SET LOCAL maintenance_work_mem = '{BUILD_MEMORY}'")
            conn.execute(_if_not_exists(definition))
            built += 1
    return built


_RECORDED = "SELECT name, definition FROM deferred_indexes ORDER BY table_name, name"
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('recchain.deferred_indexes'))"


def _if_not_exists(definition: str) -> str:
    # pg_get_indexdef's form: "CREATE [UNIQUE] INDEX name ON ..." (only non-unique ones here).
    assert definition.startswith("CREATE INDEX "), definition
    return "CREATE INDEX IF NOT EXISTS " + definition.removeprefix("CREATE INDEX ")
