"""Finality: the one place that decides which blocks can no longer be rolled back.

Two rules, the higher answer wins (docs/stacks.md, "Finality"):

- depth: a block `indexer.finality_depth` or more below the canonical tip is final (the indexer
  refuses forks deeper than that);
- Nakamoto: a canonical block the signers signed (`blocks.signer_count` > 0; stacks-node
  processes a Nakamoto block only once signers holding 70% of the stacked weight signed it, so
  Stacks alone never forks it) is final once its burn block is buried under
  `indexer.nakamoto_burn_confirmations` Bitcoin blocks: only a Bitcoin reorganisation deeper
  than that could undo it. Its descendants' finality follows from their own burn blocks.

Every reader of finality (the API's `_meta.finalizedHeight`, webhook delivery at finality, the
`finalized` flag of deliveries, the indexer's refusal of forks below the final height) calls
`finalized_height`, with the Nakamoto part read by `signed_final_height` (or its SQL, for the
API's reader).
"""

from __future__ import annotations

from typing import Any

import psycopg

from infra.config import Settings

# The highest canonical signed block, at or below the block at height `at`, whose burn block is
# `n` Bitcoin blocks below that block's. `{at}`/`{n}` become the driver's parameter markers.
_SIGNED_FINAL = (
    "SELECT b.block_height FROM blocks b WHERE b.canonical AND b.signer_count > 0 "
    "AND b.block_height <= {at} AND b.burn_block_height <= (SELECT t.burn_block_height "
    "FROM blocks t WHERE t.canonical AND t.block_height = {at}) - {n} "
    "ORDER BY b.block_height DESC LIMIT 1"
)
SIGNED_FINAL_SQL = _SIGNED_FINAL.format(at=":at", n=":n")  # SQLAlchemy text (the API's reader)


def finalized_height(
    tip_height: int | None, settings: Settings, signed_final: int | None = None
) -> int:
    """The highest final height given the canonical tip (0 before anything is final), and the
    Nakamoto-final height `signed_final_height` found (None: no signed block is final yet)."""
    if tip_height is None:
        return 0
    depth = max(0, tip_height - settings.indexer.finality_depth)
    if signed_final is None:
        return depth
    return max(depth, min(signed_final, tip_height))


def signed_params(at: int, settings: Settings) -> dict[str, int]:
    return {"at": at, "n": settings.indexer.nakamoto_burn_confirmations}


async def signed_final_height(
    pg: psycopg.AsyncConnection[Any], at: int | None, settings: Settings
) -> int | None:
    """The Nakamoto-final height as seen from the canonical block at height `at` (the tip)."""
    if at is None:
        return None
    cur = await pg.execute(
        _SIGNED_FINAL.format(at="%(at)s", n="%(n)s"), signed_params(at, settings)
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def final_height(
    pg: psycopg.AsyncConnection[Any], tip_height: int | None, settings: Settings
) -> int:
    """`finalized_height` with its Nakamoto part read on `pg`."""
    return finalized_height(
        tip_height, settings, await signed_final_height(pg, tip_height, settings)
    )
