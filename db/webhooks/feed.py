"""The webhook outbox's feed, called by the indexer inside the transaction of each batch.

The indexer knows which heights a committed batch changed: everything above `low` (the tip
before the batch, or the lowest fork point it rolled back to) up to the new tip. `feed` turns
what the tables now hold in that range into events, set-based, for every endpoint at once:
one statement per delivery mode that builds the documents (`docs.py`), matches them against
every filter (`jsonb_path_exists` on the compiled paths), numbers them per endpoint in
chain order and inserts them. Endpoints delivered at finality get the heights that became
final in the batch instead (`db.finality`). Because the rows and the events commit together,
nothing can be lost between the commit and the send, and a batch rolled back leaves no event.

`retract` runs where a fork rolls blocks back: every endpoint that was given events of those
blocks gets one `rollback` event naming them (`retracts`), numbered after them; those not yet
delivered are marked `retracted` and never sent.

With no endpoint registered, `feed` costs one query on an empty table and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg

from db.channels import WEBHOOKS
from db.finality import final_height
from db.webhooks.docs import DOC_SQL
from infra.config import Settings


@dataclass(frozen=True, slots=True)
class FeedSpan:
    """The heights one batch changed: (`low`, `tip`] at the tip; `prior` is the tip height
    before the batch (finality only moves from there)."""

    prior: int
    low: int
    tip: int


# Paused endpoints keep receiving events (they are held, not dropped).
_REGISTERED = (
    "SELECT DISTINCT e.delivery, f.kind FROM webhook_filters f"
    " JOIN webhook_endpoints e ON e.id = f.endpoint_id"
)

_INSERT = """
WITH docs AS ({docs}),
matched AS (
    SELECT DISTINCT ON (f.endpoint_id, d.height, d.rank, d.key)
           f.endpoint_id, d.kind, d.rank, d.height, d.hash, d.key, d.doc
    FROM docs d
    JOIN webhook_filters f
      ON f.kind = d.kind AND (f.path IS NULL OR jsonb_path_exists(d.doc, f.path, f.vars, true))
    JOIN webhook_endpoints e ON e.id = f.endpoint_id AND e.delivery = %(mode)s
    ORDER BY f.endpoint_id, d.height, d.rank, d.key
),
numbered AS (
    SELECT m.*, e.last_seq + row_number() OVER (
               PARTITION BY m.endpoint_id ORDER BY m.height, m.rank, m.key) AS seq
    FROM matched m JOIN webhook_endpoints e ON e.id = m.endpoint_id
),
ins AS (
    INSERT INTO webhook_events (endpoint_id, seq, type, block_height, index_block_hash, payload)
    SELECT endpoint_id, seq, kind, height, hash, doc FROM numbered
    RETURNING endpoint_id, seq
),
bumped AS (
    UPDATE webhook_endpoints e SET last_seq = x.seq
    FROM (SELECT endpoint_id, max(seq) AS seq FROM ins GROUP BY endpoint_id) x
    WHERE e.id = x.endpoint_id
    RETURNING e.id
)
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM bumped)
"""

_RETRACT = """
WITH gone AS (
    SELECT ev.id, ev.endpoint_id, ev.event_id, ev.seq FROM webhook_events ev
    WHERE ev.index_block_hash = ANY(%(rolled)s) AND ev.type <> 'rollback'
      AND ev.retracted_by IS NULL
),
per AS MATERIALIZED (
    SELECT g.endpoint_id, jsonb_agg(g.event_id ORDER BY g.seq) AS ids,
           gen_random_uuid() AS rollback_id
    FROM gone g GROUP BY g.endpoint_id
),
numbered AS (
    SELECT per.*, e.last_seq + 1 AS seq FROM per JOIN webhook_endpoints e ON e.id = per.endpoint_id
),
ins AS (
    INSERT INTO webhook_events (endpoint_id, seq, event_id, type, block_height,
                                index_block_hash, payload)
    SELECT n.endpoint_id, n.seq, n.rollback_id, 'rollback', %(height)s,
           coalesce((SELECT b.index_block_hash FROM blocks b
                     WHERE b.canonical AND b.block_height = %(height)s), ''),
           jsonb_build_object('forkHeight', %(height)s, 'rolledBack', %(rolled_json)s::jsonb,
                              'retracts', n.ids)
    FROM numbered n
    RETURNING endpoint_id
),
marked AS (
    UPDATE webhook_events ev
    SET retracted_by = per.rollback_id,
        status = CASE WHEN ev.status = 'pending' THEN 'retracted' ELSE ev.status END
    FROM gone g JOIN per ON per.endpoint_id = g.endpoint_id
    WHERE ev.id = g.id
    RETURNING ev.id
),
bumped AS (
    UPDATE webhook_endpoints e SET last_seq = n.seq FROM numbered n WHERE e.id = n.endpoint_id
    RETURNING e.id
)
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM marked), (SELECT count(*) FROM bumped)
"""

_STATEMENTS: dict[frozenset[str], str] = {}


def _statement(kinds: frozenset[str]) -> str:
    sql = _STATEMENTS.get(kinds)
    if sql is None:
        docs = " UNION ALL ".join(DOC_SQL[k] for k in sorted(kinds))
        sql = _STATEMENTS[kinds] = _INSERT.format(docs=docs)
    return sql


async def _registered(pg: psycopg.AsyncConnection[Any]) -> dict[str, frozenset[str]]:
    cur = await pg.execute(_REGISTERED)
    modes: dict[str, set[str]] = {}
    for mode, kind in await cur.fetchall():
        modes.setdefault(mode, set()).add(kind)
    return {m: frozenset(k) for m, k in modes.items()}


async def feed(pg: psycopg.AsyncConnection[Any], span: FeedSpan, settings: Settings) -> int:
    """Queue the events of the heights `span` changed, inside the caller's transaction;
    returns how many were queued."""
    modes = await _registered(pg)
    if not modes:
        return 0
    ranges = {
        "tip": (span.low, span.tip),
        "final": (
            await final_height(pg, span.prior, settings),
            await final_height(pg, span.tip, settings),
        ),
    }
    queued = 0
    for mode, kinds in modes.items():
        lo, hi = ranges[mode]
        if hi <= lo:
            continue
        cur = await pg.execute(_statement(kinds), {"lo": lo, "hi": hi, "mode": mode})
        row = await cur.fetchone()
        queued += int(row[0]) if row else 0
    if queued:
        await pg.execute("SELECT pg_notify(%s, '')", (WEBHOOKS,))
    return queued


async def retract(pg: psycopg.AsyncConnection[Any], rolled: list[str], height: int) -> int:
    """Queue one rollback event per endpoint that was given events of the `rolled` blocks
    (everything above `height` was just rolled back); returns how many were queued. Call it
    after the blocks are marked non-canonical, inside the same transaction."""
    if not rolled:
        return 0
    cur = await pg.execute(
        _RETRACT, {"rolled": rolled, "height": height, "rolled_json": json.dumps(rolled)}
    )
    row = await cur.fetchone()
    queued = int(row[0]) if row else 0
    if queued:
        await pg.execute("SELECT pg_notify(%s, '')", (WEBHOOKS,))
    return queued
