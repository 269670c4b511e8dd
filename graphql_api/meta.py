"""Chain position types: `Block` and the `_meta` answer every response can carry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import strawberry
from sqlalchemy import RowMapping

from db.finality import SIGNED_FINAL_SQL, finalized_height, signed_params
from graphql_api.context import BlockInput, Context

BLOCK_COLUMNS = (
    "index_block_hash, block_hash, block_height, parent_index_block_hash, burn_block_hash,"
    " burn_block_height, burn_block_time, block_time, canonical, tx_count, event_count"
)


def _ts(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(int(value), tz=UTC)


@strawberry.type(description="A Stacks block the indexer has recorded.")
class Block:
    height: int = strawberry.field(description="Stacks block height.")
    hash: str = strawberry.field(description="Index block hash (unique across forks).")
    block_hash: str = strawberry.field(description="Stacks block hash.")
    parent_hash: str = strawberry.field(description="Index block hash of the parent.")
    burn_block_height: int | None = strawberry.field(description="Bitcoin block height.")
    burn_block_hash: str | None = strawberry.field(description="Bitcoin block hash.")
    time: datetime | None = strawberry.field(
        description="Block time (falls back to the Bitcoin block time)."
    )
    canonical: bool = strawberry.field(description="Whether the block is on the canonical chain.")
    tx_count: int = strawberry.field(description="Transactions touching watched contracts.")
    event_count: int = strawberry.field(description="Events of watched contracts.")

    @classmethod
    def from_row(cls, row: RowMapping | dict[str, Any]) -> Block:
        return cls(
            height=int(row["block_height"]),
            hash=row["index_block_hash"],
            block_hash=row["block_hash"],
            parent_hash=row["parent_index_block_hash"],
            burn_block_height=row["burn_block_height"],
            burn_block_hash=row["burn_block_hash"],
            time=_ts(
                row["block_time"] if row["block_time"] is not None else row["burn_block_time"]
            ),
            canonical=bool(row["canonical"]),
            tx_count=int(row["tx_count"]),
            event_count=int(row["event_count"]),
        )


@strawberry.type(
    description="Something keeping the indexed chain from advancing (ops/RUNBOOK.md, Chain held)."
)
class ChainHold:
    kind: str = strawberry.field(
        description="`refused_block` (a block refused as corrupt or unstorable; its descendants"
        " wait for the genuine copy), `deep_fork` (a fork beyond the finality horizon) or"
        " `body_too_large` (a payload over the indexer's size limit)."
    )
    reason: str = strawberry.field(description="Why, as the indexer recorded it.")
    block_height: int | None = strawberry.field(description="Height of the block it concerns.")
    block_hash: str | None = strawberry.field(description="Index hash of the block it concerns.")
    since: datetime = strawberry.field(description="When it first happened.")
    attempts: int = strawberry.field(description="Times the source delivered it meanwhile.")


@strawberry.type(description="Where the answer stands on the chain.")
class Meta:
    block: Block | None = strawberry.field(
        description="The block the answer reflects (the canonical tip, or the `block` asked for);"
        " null before the first block is indexed."
    )
    finalized_height: int | None = strawberry.field(
        description="Highest final height: never rolled back (deeper than the finality horizon,"
        " or a signed Nakamoto block whose burn block is buried; docs/stacks.md)."
    )
    lag_seconds: float | None = strawberry.field(
        description="Seconds between now and the tip block's time (indexing lag)."
    )
    tip_height: int | None = strawberry.field(description="Height of the canonical tip.")
    replica_lag_seconds: float | None = strawberry.field(
        description="How far the read replica answering this API is behind the primary, in"
        " seconds (0 = caught up; sampled every second); null when the API reads the primary"
        " or the primary cannot be reached."
    )
    hold: ChainHold | None = strawberry.field(
        description="The oldest open hold of the chain; null while nothing holds it."
    )


def _replica_lag(ctx: Context) -> float | None:
    replica = getattr(ctx.hub, "replica", None)
    return None if replica is None else replica.lag_seconds


async def _hold(ctx: Context) -> ChainHold | None:
    row = await ctx.reader.one(
        "SELECT kind, reason, block_height, index_block_hash, first_seen, attempts"
        " FROM chain_holds WHERE resolved_at IS NULL ORDER BY first_seen LIMIT 1"
    )
    if row is None:
        return None
    return ChainHold(
        kind=row["kind"],
        reason=row["reason"],
        block_height=row["block_height"],
        block_hash=row["index_block_hash"],
        since=row["first_seen"],
        attempts=int(row["attempts"]),
    )


async def load_meta(ctx: Context, block: BlockInput | None) -> Meta:
    at = await ctx.at(block)
    tip = await ctx.reader.one(
        f"SELECT {BLOCK_COLUMNS} FROM blocks WHERE canonical ORDER BY block_height DESC LIMIT 1"
    )
    if tip is None:
        return Meta(
            block=None,
            finalized_height=None,
            lag_seconds=None,
            tip_height=None,
            replica_lag_seconds=_replica_lag(ctx),
            hold=await _hold(ctx),
        )
    tip_block = Block.from_row(tip)
    answer = tip_block
    if at is not None and at != tip_block.height:
        row = await ctx.reader.one(
            f"SELECT {BLOCK_COLUMNS} FROM blocks WHERE canonical AND block_height = :h",
            {"h": at},
        )
        answer = Block.from_row(row) if row is not None else tip_block
    lag = (
        None
        if tip_block.time is None
        else max(0.0, (datetime.now(tz=UTC) - tip_block.time).total_seconds())
    )
    return Meta(
        block=answer,
        finalized_height=finalized_height(
            tip_block.height, ctx.settings, await _signed_final(ctx, tip_block.height)
        ),
        lag_seconds=lag,
        tip_height=tip_block.height,
        replica_lag_seconds=_replica_lag(ctx),
        hold=await _hold(ctx),
    )


async def _signed_final(ctx: Context, tip: int) -> int | None:
    """The Nakamoto part of finality (db/finality.py), read on the request's reader."""
    row = await ctx.reader.one(SIGNED_FINAL_SQL, signed_params(tip, ctx.settings))
    return None if row is None else int(row["block_height"])
