"""The overlapped catch-up writer: a thread with its own loop and connection commits batch N
while the caller decides, handles and stages batch N+1 (`CatchUp.process_ahead`, used by
`recchain replay`). Commit order and the one-transaction-per-batch rule are those of `process`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.session import create_engine
from indexer import metrics
from indexer.batch import UNSTORABLE, Batch, Commit
from indexer.core import IndexerCore
from indexer.requests import Outcome, Request
from indexer.state import (
    EntityCache,
)

log = logging.getLogger("recchain.indexer")


class NeedsSerial(Exception):
    """Raised inside `process_ahead` by a path that must see the rows of batches in flight."""


class CatchUpWriter:
    """A thread with its own event loop and connection that commits staged batches in order, so
    that PostgreSQL works on batch N while the caller's thread prepares batch N+1 (the thread
    waits on the socket almost all the time, which leaves the GIL to the caller)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="catch-up writer", daemon=True
        )
        self.thread.start()
        self.conn: AsyncConnection | None = None
        self._engine: AsyncEngine | None = None
        self.pending: asyncio.Future[Commit] | None = None
        self.hashes: set[bytes] = set()  # payload hashes of the batch in flight
        self.requests: Sequence[Request] = ()  # the batch in flight, to redo it if it fails

    def run(self, coro: Any) -> asyncio.Future[Any]:
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def open(self) -> AsyncConnection:
        self._engine = create_engine(self.url, pool_size=1, max_overflow=0)
        self.conn = await self._engine.connect()
        return self.conn

    async def _close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        if self._engine is not None:
            await self._engine.dispose()

    async def close(self) -> None:
        try:
            await self.run(self._close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            await asyncio.to_thread(self.thread.join)
            self.loop.close()


def _load_metadata_queue() -> None:
    """Import the metadata queue on the caller's thread before the first batch that enqueues
    jobs reaches the writer (whose import would hold up the batch behind it); an archive that
    never enqueues one never pays for it."""
    with contextlib.suppress(ImportError):
        from indexer.metadata import queue  # noqa: F401


class CatchUp(IndexerCore):
    """`process_ahead`: batches committed on the writer thread, one in flight."""

    async def start_ahead(self) -> None:
        """Enable `process_ahead`: open the writer's own connection (to the same database)."""
        assert self._writer is None
        url = self.conn.engine.url.render_as_string(hide_password=False)
        writer = CatchUpWriter(url)
        try:
            await writer.run(writer.open())
        except BaseException:
            await writer.close()
            raise
        self._writer = writer

    async def stop_ahead(self) -> None:
        """Wait for the batches in flight to commit (raising a failure of theirs) and close the
        writer."""
        writer = self._writer
        if writer is None:
            return
        try:
            await self._drain()
        finally:
            self._writer = None
            self._carry = None
            await writer.close()

    async def process_ahead(self, requests: Sequence[Request]) -> list[Outcome]:
        """Like `process`, but the batch commits later, on the writer, in submission order; the
        outcomes are final unless a later call (or `stop_ahead`) raises the writer's failure, in
        which case nothing from that batch on was committed."""
        writer = self._writer
        assert writer is not None, "call start_ahead() first"
        batch = Batch(cache=EntityCache(self._carry))
        self._absent.clear()
        await self._begin()
        self._ahead = True
        try:
            outcomes = await self._process(batch, requests)
            commit = self._seal(batch)
            await self.conn.commit()  # only reads ran here; ends their snapshot
        except NeedsSerial:
            self._ahead = False
            await self.conn.rollback()
            await self._drain()
            await self._reset(count=False)  # undo this attempt's in-memory decisions
            return await self._serially(requests)
        except BaseException:
            self._ahead = False
            try:
                await self._drain()
            finally:
                await self._reset()
            raise
        finally:
            self._ahead = False
        # One batch in flight: the carry and dedup cover exactly that one.
        if await self._drain():  # redone request by request: this batch was staged on it
            await self._reset(count=False)
            return await self._serially(requests)
        if self._defer_on_rows and commit.events:
            try:
                await self._defer_now()  # nothing is in flight here
            except BaseException:
                await self._reset()  # this batch was decided in memory, never sent
                raise
        if commit.jobs or commit.refresh:
            _load_metadata_queue()
        self._log_ignored(batch)
        self.last_events = batch.events
        self._carry = commit.carry
        writer.hashes = batch.hashes
        writer.requests = requests
        writer.pending = writer.run(self._commit_on_writer(writer, commit))
        return outcomes

    async def _serially(self, requests: Sequence[Request]) -> list[Outcome]:
        """`process`, for a batch that cannot go ahead (nothing is in flight after it)."""
        outcomes = await self.process(requests)
        if self._defer_on_rows and self.last_events:
            await self._defer_now()  # this batch's rows are kept up row by row: few of them
        return outcomes

    async def _drain(self) -> bool:
        """Wait for the batch in flight. True when PostgreSQL refused its rows
        (`UNSTORABLE`) and it was redone request by request, refusing the culprit alone; the
        outcomes already returned for it then miss those refusals (`late_rejections`)."""
        writer = self._writer
        if writer is None or writer.pending is None:
            return False
        pending, writer.pending = writer.pending, None
        requests, writer.requests = writer.requests, ()
        try:
            self._committed(await pending)
        except UNSTORABLE:
            self._carry = None
            writer.hashes = set()
            await self._reset(count=False)
            redone = await self._one_by_one(requests)
            self.late_rejections += [
                (r.position, r.path, o.reason or "rejected")
                for r, o in zip(requests, redone, strict=True)
                if o.status == "rejected"
            ]
            return True
        except BaseException:
            self._carry = None
            raise
        finally:
            writer.hashes = set()
        return False

    async def _commit_on_writer(self, writer: CatchUpWriter, commit: Commit) -> Commit:
        """Runs on the writer's loop; reads nothing the caller's thread changes."""
        conn = writer.conn
        assert conn is not None
        if not conn.in_transaction():
            await conn.begin()
        try:
            pg = (await conn.get_raw_connection()).driver_connection
            assert pg is not None
            # The checkpoint commits in the same transaction as the rows, so a crash of the
            # server that loses the last commits loses them together: catch-up restarts from the
            # older checkpoint and redoes exactly those batches. Not waiting for the WAL flush
            # at each commit is therefore safe here (never at the tip, where an observer is
            # answered only after a durable commit).
            await pg.execute("SET LOCAL synchronous_commit = off")
            await self._fence(pg)
            await self._write(commit, conn, pg)
            await conn.commit()
        except BaseException:
            metrics.ERRORS.labels("transaction").inc()
            await conn.rollback()
            raise
        return commit
