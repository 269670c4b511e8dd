"""Chain position types: `Block` and the `_meta` answer every response can carry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import strawberry
from sqlalchemy import RowMapping

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


@strawberry.type(description="Where the answer stands on the chain.")
class Meta:
    block: Block | None = strawberry.field(
        description="The block the answer reflects (the canonical tip, or the `block` asked for);"
        " null before the first block is indexed."
    )
    finalized_height: int | None = strawberry.field(
        description="Highest height deeper than the finality horizon: never rolled back."
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


def _replica_lag(ctx: Context) -> float | None:
    replica = getattr(ctx.hub, "replica", None)
    return None if replica is None else replica.lag_seconds


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
        finalized_height=max(0, tip_block.height - ctx.settings.indexer.finality_depth),
        lag_seconds=lag,
        tip_height=tip_block.height,
        replica_lag_seconds=_replica_lag(ctx),
    )
