"""Staging and writing a batch: every row formatted as a binary COPY stream (`Staging._stage`,
`_seal`) before the first statement, then sent with the checkpoint, the holds, the webhook feed
and the NOTIFY in one transaction (`_write`) on whichever connection commits it."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from db.channels import BLOCKS
from db.webhooks import feed as webhooks
from indexer import metrics
from indexer.block import Block
from indexer.core import IndexerCore
from indexer.handlers import MetadataJob
from indexer.holds import Hold, settle_holds
from indexer.requests import note_skipped
from indexer.state import (
    Carry,
    EntityCache,
    Step,
    send,
    stage_copy,
)

log = logging.getLogger("recchain.indexer")


CHECKPOINT = "indexer"


NOTIFY_LIMIT = 7900  # PostgreSQL's NOTIFY payload limit is 8000 bytes


RAW_COLS = ["id", "received_at", "event_path", "payload", "payload_hash", "error"]


BLOCK_COLS = [
    "index_block_hash", "block_hash", "block_height", "parent_index_block_hash",
    "parent_block_hash", "burn_block_hash", "burn_block_height", "burn_block_time", "block_time",
    "canonical", "orphan", "tx_count", "event_count", "raw_request_id",
    "tenure_height", "consensus_hash", "signer_signature_hash", "signer_count",
]  # fmt: skip


NO_SUMMARY = (None, None, None, None, None)  # a burnchain operation: no Stacks bytes


@dataclass(slots=True)
class Batch:
    cache: EntityCache = field(default_factory=EntityCache)
    raw_rows: list[tuple[Any, ...]] = field(default_factory=list)
    # Blocks of this batch not yet written, by hash (a reorg looks them up once per block).
    new_blocks: dict[str, tuple[Block, int | None]] = field(default_factory=dict)
    jobs: list[MetadataJob] = field(default_factory=list)
    refresh: list[tuple[str, list[int] | None]] = field(default_factory=list)
    mined: dict[str, tuple[str, str | None, str, int]] = field(default_factory=dict)
    rolled_back: list[str] = field(default_factory=list)
    fork_heights: list[int] = field(default_factory=list)
    position: int | None = None
    blocks: int = 0
    events: int = 0
    ignored: int = 0  # blocks below indexer.start_height
    hashes: set[bytes] = field(default_factory=set)  # payloads stored by this batch
    cleared: list[int] = field(default_factory=list)  # refused raw requests accepted now
    holds: list[Hold] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)  # blocks written by this batch
    paths: set[str] = field(default_factory=set)  # event paths accepted by this batch
    # Webhook feed: the tip height before the batch, and the lowest height it rolled back to.
    feed_prior: int = 0
    feed_low: int = 0


@dataclass(slots=True)
class Commit:
    """Everything a batch writes, staged: sent by `Indexer._write` on any connection."""

    steps: list[Step]
    jobs: list[MetadataJob]
    refresh: list[tuple[str, list[int] | None]]
    tip: tuple[str, int] | None
    position: int | None
    notify: str | None
    carry: Carry
    blocks: int
    events: int
    fork_heights: list[int]
    tip_time: int | None
    source: str | None  # the replay position's key (`Indexer.source`)
    cleared: list[int]
    holds: list[Hold]
    stored: list[str]
    paths: set[str]
    feed: webhooks.FeedSpan | None
    open_holds: dict[str, int] | None = None  # after the commit, when holds were involved


# What PostgreSQL refuses to store whatever the retry: a value beyond its column, a NUL in text,
# a duplicate key inside one payload, an index entry over its size limit. The block is refused
# (recorded, `rejected`), never answered 500 on every retry of the node.
UNSTORABLE = (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.ProgramLimitExceeded)


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


def fit_notify(payload: dict[str, Any]) -> str:
    """NOTIFY payloads are capped; beyond the cap, listeners are told to re-read everything."""
    text = json.dumps(payload, default=str, separators=(",", ":"))
    if len(text) <= NOTIFY_LIMIT:
        return text
    slim = {k: v for k, v in payload.items() if k not in ("changes", "rolled_back")}
    slim["changes"] = {t: [] for t in payload.get("changes", {})}
    slim["rolled_back"] = payload.get("rolled_back", [])[:50]
    slim["truncated"] = True
    return json.dumps(slim, default=str, separators=(",", ":"))


class Staging(IndexerCore):
    """Turns a decided batch into staged statements and sends them."""

    def _stage(self, batch: Batch) -> tuple[list[Step], Carry]:
        """The statements writing what the batch buffered so far (pure Python: no I/O)."""
        steps: list[Step] = []
        stage_copy(steps, "raw_requests", RAW_COLS, batch.raw_rows)
        batch.raw_rows = []
        block_rows = []
        tx_rows = batch.cache.chain_rows["transactions"]
        event_rows = batch.cache.chain_rows["events"]
        for block, raw_id in batch.new_blocks.values():
            note_skipped(block)
            h = block.header
            known = self._known[block.hash]
            block_rows.append(
                (
                    h.index_block_hash, h.block_hash, h.block_height, h.parent_index_block_hash,
                    h.parent_block_hash, h.burn_block_hash, h.burn_block_height,
                    h.burn_block_time, h.block_time, known.canonical, known.orphan,
                    block.tx_count, block.event_count, raw_id, h.tenure_height,
                    h.consensus_hash, h.signer_signature_hash, h.signer_count,
                )
            )  # fmt: skip
            bh, height, canonical = block.hash, block.height, known.canonical
            # Values in `CHAIN_COLUMNS` order (raw_tx of stored transactions is checked hex).
            tx_rows += [
                (
                    bh, tx.txid, height, tx.tx_index, tx.status, tx.raw_result,
                    bytes.fromhex(tx.raw_tx[2:]) if tx.raw_tx else None, canonical,
                    *(NO_SUMMARY if (m := tx.summary) is None else
                      (m.sender, m.contract_id, m.function_name, m.fee, m.nonce)),
                )
                for tx in block.txs
            ]  # fmt: skip
            event_rows += [
                (
                    bh, ev.txid, ev.event_index, ev.tx_index, height, ev.type,
                    ev.asset_identifier or ev.contract_id, ev.topic, ev.kind, ev.sender,
                    ev.recipient, ev.amount, ev.raw_value, canonical,
                )
                for ev in block.events
            ]  # fmt: skip
            if known.orphan:
                self._db_orphans += 1
        stage_copy(steps, "blocks", BLOCK_COLS, block_rows)
        batch.stored.extend(batch.new_blocks)
        batch.new_blocks = {}
        carry = batch.cache.stage(steps)
        if self._has_mempool and batch.mined:
            txids = list(batch.mined)
            steps.append(
                (
                    "exec",
                    sql.SQL(
                        "UPDATE mempool_txs m SET status = 'mined', index_block_hash = v.bh "
                        "FROM (SELECT unnest(%b::text[]) AS txid, unnest(%b::text[]) AS bh) v "
                        "WHERE m.txid = v.txid AND m.status <> 'mined'"
                    ).format(),
                    (txids, [batch.mined[t][2] for t in txids]),
                )
            )
        if self._has_relay and batch.mined:
            txids = list(batch.mined)
            vals = [batch.mined[t] for t in txids]
            steps.append(
                (
                    "exec",
                    sql.SQL(
                        # The chain has the last word: a transaction in a canonical block
                        # was admitted, whatever refusal the relay recorded for a resend.
                        "UPDATE relay_txs r SET status = CASE WHEN v.st = 'success' THEN 'mined' "
                        "ELSE 'failed' END, tx_status = v.st, result = v.res, "
                        "index_block_hash = v.bh, block_height = v.h, mined_at = now(), "
                        "reason = CASE WHEN r.status = 'rejected' THEN NULL ELSE r.reason END, "
                        "reason_data = CASE WHEN r.status = 'rejected' THEN NULL "
                        "ELSE r.reason_data END, "
                        "updated_at = now() FROM (SELECT unnest(%b::text[]) AS txid, "
                        "unnest(%b::text[]) AS st, unnest(%b::text[]) AS res, "
                        "unnest(%b::text[]) AS bh, unnest(%b::int[]) AS h) v "
                        "WHERE r.txid = v.txid AND r.status NOT IN ('mined', 'failed')"
                    ).format(),
                    (
                        txids,
                        [v[0] for v in vals],
                        [v[1] for v in vals],
                        [v[2] for v in vals],
                        [v[3] for v in vals],
                    ),
                )
            )
        batch.mined = {}
        return steps, carry

    async def _flush(self, batch: Batch) -> None:
        await send(self.pg, self._stage(batch)[0])

    def _seal(self, batch: Batch) -> Commit:
        """Stage the rest of the batch: rows, checkpoint position and the NOTIFY payload."""
        steps, carry = self._stage(batch)
        notify = None
        tip_hash, tip_height = self.tip if self.tip else (None, 0)
        if batch.blocks or batch.rolled_back:
            notify = fit_notify(
                {
                    "height": tip_height,
                    "hash": tip_hash,
                    "canonical_tip": tip_hash,
                    "rolled_back": batch.rolled_back,
                    "changes": {t: sorted(ids, key=str) for t, ids in batch.cache.changes.items()},
                }
            )
        batch.cache.changes.clear()
        return Commit(
            steps=steps,
            jobs=batch.jobs,
            refresh=batch.refresh,
            tip=self.tip,
            position=batch.position,
            notify=notify,
            carry=carry,
            blocks=batch.blocks,
            events=batch.events,
            fork_heights=batch.fork_heights,
            tip_time=self._tip_time,
            source=self.source,
            cleared=batch.cleared,
            holds=batch.holds,
            stored=batch.stored,
            paths=batch.paths,
            feed=webhooks.FeedSpan(batch.feed_prior, batch.feed_low, tip_height)
            if batch.blocks or batch.rolled_back
            else None,
        )

    async def _write(
        self, commit: Commit, conn: AsyncConnection, pg: psycopg.AsyncConnection[Any]
    ) -> None:
        """Send a sealed batch inside `conn`'s open transaction (the caller commits)."""
        await send(pg, commit.steps)
        if (commit.jobs or commit.refresh) and self.enqueue_metadata:
            await self._metadata(conn, commit.jobs, commit.refresh)
        await self._checkpoint(pg, commit)
        if commit.cleared:
            await pg.execute(
                "UPDATE raw_requests SET error = NULL WHERE id = ANY(%s)", (commit.cleared,)
            )
        if commit.holds or self._open_holds:
            commit.open_holds = await settle_holds(pg, commit)
        if commit.feed is not None:  # webhook events commit with the rows they describe
            await webhooks.feed(pg, commit.feed, self.settings)
        if commit.notify is not None:
            await pg.execute("SELECT pg_notify(%s, %s)", (BLOCKS, commit.notify))

    async def _checkpoint(self, pg: psycopg.AsyncConnection[Any], commit: Commit) -> None:
        """The tip, and the source's position, in the batch's own transaction."""
        tip_hash, tip_height = commit.tip if commit.tip else (None, 0)
        await pg.execute(
            "INSERT INTO checkpoints (name, index_block_hash, block_height, updated_at) "
            "VALUES (%s, %s, %s, now()) ON CONFLICT (name) DO UPDATE SET "
            "index_block_hash = EXCLUDED.index_block_hash, block_height = "
            "EXCLUDED.block_height, updated_at = now()",
            (CHECKPOINT, tip_hash, tip_height),
        )
        if commit.source is not None and commit.position is not None:
            await pg.execute(
                "INSERT INTO replay_positions (source, position, updated_at) "
                "VALUES (%s, %s, now()) ON CONFLICT (source) DO UPDATE SET "
                "position = EXCLUDED.position, updated_at = now()",
                (commit.source, commit.position),
            )

    async def _metadata(
        self,
        conn: AsyncConnection,
        jobs: list[MetadataJob],
        refresh: list[tuple[str, list[int] | None]],
    ) -> None:
        try:
            from indexer.metadata import queue
        except ImportError:  # the resolver is optional; indexing never waits for it
            return
        # Its own savepoint: a failure in the queue must never block the chain (the jobs can be
        # re-derived from the tables); the session must not roll back the block transaction.
        session = AsyncSession(bind=conn, join_transaction_mode="create_savepoint")
        try:
            await queue.enqueue_many(
                session, [(job.uri, job.subject_kind, job.subject_id) for job in jobs]
            )
            for kind, ids in refresh:
                await queue.requeue_for_refresh(session, kind, ids)
            await session.commit()
        except Exception as exc:
            await session.rollback()
            metrics.ERRORS.labels("metadata").inc()
            log.error("metadata enqueue failed (%s); block data committed without it", exc)
