"""The state an `Indexer` keeps between batches: its connection, the in-memory block index
(tip, known blocks, orphans), the open holds, and the reset that reloads them after a failed
batch. The methods declared here and raising NotImplementedError are those the mixins call
across modules; `indexer.pipeline.Indexer` provides them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy.ext.asyncio import AsyncConnection

from db.leader import Leadership
from indexer import metrics
from indexer.block import Block
from indexer.holds import count_holds, show_holds
from indexer.requests import Outcome, Request
from indexer.state import (
    CHAIN_COLUMNS,
    COLUMNS,
    Carry,
    load_column_types,
)
from infra.config import Settings

if TYPE_CHECKING:
    from indexer.batch import Batch, Commit
    from indexer.catchup import CatchUpWriter
    from indexer.forks import Known

log = logging.getLogger("recchain.indexer")


class IndexerCore:
    """Owns one database connection (and, between `start_ahead` and `stop_ahead`, the writer's);
    not safe for concurrent `process`/`process_ahead` calls (serialise them)."""

    def __init__(
        self, conn: AsyncConnection, settings: Settings, *, enqueue_metadata: bool = True
    ) -> None:
        self.conn = conn
        self.enqueue_metadata = enqueue_metadata
        self.settings = settings
        self.watched = settings.watched_contracts
        self.tip: tuple[str, int] | None = None
        self._known: dict[str, Known] = {}
        # Hashes looked up in this batch and not found (cleared per batch: blocks may arrive).
        self._absent: set[str] = set()
        # parent hash -> orphans waiting for it that this process has seen (DB ones are queried).
        self._orphans: dict[str, list[str]] = {}
        self._has_relay = False
        # Whether `mempool_txs` holds pending rows: without any, marking a batch's transactions
        # mined is skipped (catch-up of an archive without mempool requests).
        self._has_mempool = False
        self._db_orphans = 0
        self._pg: psycopg.AsyncConnection[Any] | None = None
        self._tip_time: int | None = None
        self.last_events = 0  # watched events applied by the last `process` call
        # Catch-up pipelining (see the module docstring).
        self._writer: CatchUpWriter | None = None
        self._ahead = False  # inside `process_ahead`: paths needing in-flight rows bail out
        self._carry: Carry | None = None
        # Set by `defer_indexes(on_first_rows=True)`: the deferrable indexes are dropped before
        # the first catch-up batch that writes events (`_defer_now`).
        self._defer_on_rows = False
        # The key under which request positions are committed (`recchain replay` names its
        # archive); None: positions are not kept.
        self.source: str | None = None
        self._open_holds: dict[str, int] = {}
        # Requests of a batch already answered, refused on its redo: (position, path, reason).
        self.late_rejections: list[tuple[int | None, str, str]] = []
        # Set while leading (`recchain index`): every write transaction checks it first, so a
        # process that lost the lock cannot commit beside its successor (db/leader.py).
        self.fence: Leadership | None = None

    @property
    def pg(self) -> psycopg.AsyncConnection[Any]:
        assert self._pg is not None, "call start() first"
        return self._pg

    async def _begin(self) -> None:
        # Statements go through the raw psycopg connection (COPY); SQLAlchemy must still know a
        # transaction is open so that commit/rollback and the metadata session's savepoint work.
        if not self.conn.in_transaction():
            await self.conn.begin()

    async def _fence(self, pg: psycopg.AsyncConnection[Any]) -> None:
        # First in every write transaction: its share lock on the epoch lasts until the commit,
        # so a successor's takeover waits for this transaction, or ends it (db/leader.py).
        if self.fence is not None:
            await self.fence.check(pg)

    async def ping(self) -> None:
        """One round trip on the data connection (readiness: raises if it is dead)."""
        await self._begin()
        await self.pg.execute("SELECT 1")
        await self.conn.commit()

    async def _load(self) -> None:
        self._known.clear()
        self._orphans.clear()
        cur = await self.pg.execute(
            "SELECT index_block_hash, block_height, coalesce(block_time, burn_block_time) "
            "FROM blocks WHERE canonical ORDER BY block_height DESC LIMIT 1"
        )
        row = await cur.fetchone()
        self.tip = (row[0], row[1]) if row else None
        if row is not None:  # from the start, not only after the next block
            metrics.TIP.set(row[1])
            if row[2]:
                metrics.set_tip_time(row[2])
        cur = await self.pg.execute("SELECT to_regclass('relay_txs') IS NOT NULL")
        self._has_relay = bool((await cur.fetchone())[0])  # type: ignore[index]
        cur = await self.pg.execute(
            "SELECT EXISTS (SELECT 1 FROM mempool_txs WHERE status = 'pending')"
        )
        self._has_mempool = bool((await cur.fetchone())[0])  # type: ignore[index]
        cur = await self.pg.execute("SELECT count(*) FROM blocks WHERE orphan")
        self._db_orphans = int((await cur.fetchone())[0])  # type: ignore[index]
        self._open_holds = await count_holds(self.pg)
        show_holds(self._open_holds)
        metrics.ORPHANS.set(self._db_orphans)
        await load_column_types(self.pg, ["raw_requests", "blocks", *CHAIN_COLUMNS, *COLUMNS])

    async def _reset(self, count: bool = True) -> None:
        """After a failed or abandoned batch: roll back and reload the in-memory block index,
        which may describe rows that were never committed."""
        await self.conn.rollback()
        self._carry = None
        await self._begin()
        await self._load()
        await self.conn.commit()
        if count:
            metrics.ERRORS.labels("transaction").inc()

    def _committed(self, commit: Commit) -> None:
        if commit.open_holds is not None:
            self._open_holds = commit.open_holds
            show_holds(commit.open_holds)
        metrics.ORPHANS.set(self._db_orphans)
        metrics.BLOCKS.inc(commit.blocks)
        metrics.EVENTS.inc(commit.events)
        if commit.tip is not None:
            metrics.TIP.set(commit.tip[1])
        if commit.tip_time:
            metrics.set_tip_time(commit.tip_time)
        for depth in commit.fork_heights:
            metrics.FORK_DEPTH.observe(depth)

    def _log_ignored(self, batch: Batch) -> None:
        if batch.ignored:
            log.info(
                "%d block(s) below indexer.start_height %d stored raw, not applied",
                batch.ignored, self.settings.indexer.start_height,
            )  # fmt: skip

    # ---- provided by the other mixins and by Indexer
    async def _defer_now(self) -> None:
        raise NotImplementedError

    async def _known_block(self, block_hash: str) -> Known | None:
        raise NotImplementedError

    async def _process_plain(self, requests: Sequence[Request]) -> list[Outcome]:
        raise NotImplementedError

    async def _apply(self, batch: Batch, block: Block) -> None:
        raise NotImplementedError

    async def _flush(self, batch: Batch) -> None:
        raise NotImplementedError

    async def _one_by_one(self, requests: Sequence[Request]) -> list[Outcome]:
        raise NotImplementedError

    async def _process(self, batch: Batch, requests: Sequence[Request]) -> list[Outcome]:
        raise NotImplementedError

    def _seal(self, batch: Batch) -> Commit:
        raise NotImplementedError

    async def _write(
        self, commit: Commit, conn: AsyncConnection, pg: psycopg.AsyncConnection[Any]
    ) -> None:
        raise NotImplementedError

    async def process(self, requests: Sequence[Request]) -> list[Outcome]:
        raise NotImplementedError
