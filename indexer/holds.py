"""`chain_holds`: what holds the chain (a refused block it needs, a fork beyond the finality
horizon, a body over the size limit), opened and counted by the commit that meets it and resolved
by the commit that removes its cause; mirrored in `recchain_indexer_holds`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from db.models.chain import HOLD_KINDS
from indexer import metrics

if TYPE_CHECKING:
    from indexer.batch import Commit

log = logging.getLogger("recchain.indexer")


@dataclass(slots=True)
class Hold:
    """A row of `chain_holds` to open (or count one more attempt of)."""

    kind: str
    reason: str
    path: str
    block_hash: str | None = None
    height: int | None = None
    raw_id: int | None = None


OPEN_HOLD = (
    "INSERT INTO chain_holds (kind, reason, event_path, index_block_hash, block_height, "
    "raw_request_id) VALUES (%s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (kind, event_path, (coalesce(index_block_hash, ''))) WHERE resolved_at IS NULL "
    "DO UPDATE SET attempts = chain_holds.attempts + 1, last_seen = now(), "
    "reason = EXCLUDED.reason, "
    "raw_request_id = coalesce(EXCLUDED.raw_request_id, chain_holds.raw_request_id)"
)


async def open_holds(pg: psycopg.AsyncConnection[Any], holds: Sequence[Hold]) -> None:
    """Open each hold, or count one more attempt of the same open one."""
    async with pg.cursor() as cur:
        await cur.executemany(
            OPEN_HOLD,
            [(h.kind, h.reason[:2000], h.path, h.block_hash, h.height, h.raw_id) for h in holds],
        )


async def settle_holds(pg: psycopg.AsyncConnection[Any], commit: Commit) -> dict[str, int]:
    """Open the batch's holds and resolve those whose cause is gone: the block they wait for
    is stored, the tip passed a refused block's height without it (its branch lost), or a body
    of that path was accepted (the limit was raised). Returns the open ones by kind."""
    if commit.holds:
        await open_holds(pg, commit.holds)
    await pg.execute(
        "UPDATE chain_holds SET resolved_at = now() WHERE resolved_at IS NULL AND ("
        "index_block_hash = ANY(%s) OR (kind = 'refused_block' AND block_height < %s) "
        "OR (kind = 'body_too_large' AND event_path = ANY(%s)))",
        (commit.stored, commit.tip[1] if commit.tip else 0, sorted(commit.paths)),
    )
    return await count_holds(pg)


async def count_holds(pg: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    cur = await pg.execute(
        "SELECT kind, count(*) FROM chain_holds WHERE resolved_at IS NULL GROUP BY kind"
    )
    return {str(kind): int(n) for kind, n in await cur.fetchall()}


def show_holds(counts: dict[str, int]) -> None:
    for kind in HOLD_KINDS:
        metrics.HOLDS.labels(kind).set(counts.get(kind, 0))
