"""The observer's side of `recchain index`: leading or standing by, and a data connection that
heals itself.

Every `recchain index --source observer` process listens from start-up. Only the one holding the
leader lock (db/leader.py) writes; the others answer the node 503, so stacks-node keeps retrying
and a proxy in front of the processes (ops/nginx, a Kubernetes Service) sends the retry to the
leader. The leader's writes carry its fencing token (`Indexer.fence`), so a process that lost
the lock can no longer commit.

The leader's data connection may be ended by PostgreSQL at any time (a restart,
`pg_terminate_backend`, `idle_session_timeout` on a quiet chain). A request that meets a dead
connection reconnects once at once and is processed again (nothing of it was committed: the
pipeline writes one transaction per batch), so an idle timeout costs the node nothing; while the
database cannot be reached the node is answered 503 with a Retry-After, and each request (and
each `/readyz`) tries to reconnect. A restart of the server ends the leader lock session too:
the process stands by (indexer/run.py) and leads again once the server is back. `/readyz` is 200
only for a leader whose data connection answers; `/healthz` fails only for a process that is
stuck (a request in work for longer than `STUCK_S`), which a restart cures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.leader import Leadership, LeadershipLost
from db.outage import Outage, is_unavailable
from indexer import metrics
from indexer.pipeline import Indexer
from indexer.requests import Outcome, Request, header_of
from infra.config import Settings

log = logging.getLogger("recchain.indexer")

# A request in work this long means the process no longer makes progress (a hung statement the
# server never ends, a deadlocked loop): liveness fails so the supervisor restarts it.
STUCK_S = 120.0
# How long a readiness probe waits for a request in work before answering from what it knows.
PROBE_WAIT_S = 2.0


class Unavailable(Exception):
    """This process cannot write now (standby, database unreachable, leadership lost): 503."""

    def __init__(self, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class IndexerService:
    """Owns the leader's `Indexer` and its data connection; serialises requests."""

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.held: Leadership | None = None
        self.indexer: Indexer | None = None
        self._conn: AsyncConnection | None = None
        self.lock = asyncio.Lock()
        self.busy_since: float | None = None
        self.seen_height = 0  # highest block the node has sent (applied or not)
        # Shared with the leader lock loop (indexer/run.py), which meets an outage first when
        # no request is in work; reachable is not up until a data connection works.
        self.outage = Outage(
            log,
            "database (indexer)",
            on_change=lambda up: metrics.UP.set(up and self.indexer is not None),
        )
        metrics.UP.set(0)

    # ------------------------------------------------------------------ leadership
    async def lead(self, held: Leadership) -> None:
        """Run while this process leads (cancelled by `run_as_leader` when it stops)."""
        self.held = held
        try:
            async with self.lock:
                with contextlib.suppress(Unavailable):
                    await self._connected()  # ready before the first request, if it can be
            # After the connection, so a leader's gauges (the tip) are read when it says it leads.
            metrics.LEADER.set(1)
            await asyncio.Event().wait()
        finally:
            self.held = None  # requests arriving from now on are refused at once
            metrics.LEADER.set(0)
            with contextlib.suppress(Exception):
                await asyncio.shield(self._drop_when_idle())

    async def _drop_when_idle(self) -> None:
        # After the request in work, if any: closing the connection under it made it fail with
        # "This Connection is closed", answered 500, where its fence or its dead session says
        # 503. Waiting is safe: the fence keeps it from committing once a successor leads, and
        # it ends soon (its session is gone, or the successor's epoch bump ends it).
        async with self.lock:
            await self._drop()

    def standby_reason(self) -> str:
        """Why a process that does not lead cannot write."""
        if self.outage.down:
            # A leader whose database went away lost its lock session with it: nobody may lead.
            return f"database unavailable: {self.outage.last_error}"
        return "standby: another indexer process leads"

    # ------------------------------------------------------------------ the data connection
    async def _connected(self) -> Indexer:
        held = self.held
        if held is None:
            raise Unavailable(self.standby_reason())
        if held.lost.is_set():
            raise Unavailable("leadership lost: this process is stepping down")
        if self.indexer is not None:
            return self.indexer
        try:
            conn = await self.engine.connect()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            raise Unavailable(self._down(exc), self.outage.delay()) from exc
        try:
            indexer = Indexer(conn, self.settings)
            indexer.fence = held  # before start(): it may write (deferred indexes)
            await indexer.start()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            if isinstance(exc, Exception) and is_unavailable(exc):
                raise Unavailable(self._down(exc), self.outage.delay()) from exc
            raise
        self._conn, self.indexer = conn, indexer
        self.outage.ok()
        metrics.UP.set(1)
        return indexer

    def _down(self, exc: BaseException) -> str:
        self.outage.failed(exc)
        return f"database unavailable: {self.outage.last_error}"

    async def _drop(self) -> None:
        conn, self._conn, self.indexer = self._conn, None, None
        metrics.UP.set(0)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()

    # ------------------------------------------------------------------ requests
    async def process(self, requests: Sequence[Request]) -> list[Outcome]:
        """Apply `requests` as the leader; raise `Unavailable` when that cannot be done now."""
        async with self.lock:
            self.busy_since = time.monotonic()
            try:
                return await self._process(requests)
            finally:
                self.busy_since = None

    async def _process(self, requests: Sequence[Request]) -> list[Outcome]:
        for attempt in range(2):
            indexer = await self._connected()
            try:
                outcomes = await indexer.process(requests)
            except LeadershipLost as exc:  # fenced: another process took the lock
                await self._drop()
                raise Unavailable(f"leadership lost: {exc}") from exc
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                # The connection died under the request (idle timeout, terminated backend,
                # restart): nothing of the batch committed. Reconnect once and do it again.
                reason = self._down(exc)
                await self._drop()
                if attempt:
                    raise Unavailable(reason, self.outage.delay()) from exc
                continue
            self.outage.ok()
            self._show_lag(indexer, requests)
            return outcomes
        raise AssertionError("unreachable")

    async def hold_body(self, path: str, size: int, limit: int) -> None:
        async with self.lock:
            indexer = await self._connected()
            try:
                await indexer.hold_body(path, size, limit)
            except Exception:
                await self._drop()
                raise

    def _show_lag(self, indexer: Indexer, requests: Sequence[Request]) -> None:
        # The observer learns the node's tip only from what it sends: blocks it sent that are
        # not applied (orphans waiting for a parent, a held chain) are the lag. Read after the
        # pipeline parsed the blocks (`header_of` then reuses the parsed block).
        for request in requests:
            if request.path == "/new_block":
                height = header_of(request)[1]
                self.seen_height = max(self.seen_height, height or 0)
        tip = indexer.tip[1] if indexer.tip else 0
        metrics.LAG.set(max(self.seen_height - tip, 0))

    # ------------------------------------------------------------------ probes
    def liveness(self) -> str | None:
        """None if alive, else why not."""
        since = self.busy_since
        if since is not None and time.monotonic() - since > STUCK_S:
            return f"a request has been in work for {time.monotonic() - since:.0f} s"
        return None

    async def readiness(self) -> str | None:
        """None if this process can write now (leader, data connection answering)."""
        if self.held is None:
            return self.standby_reason()
        try:
            await asyncio.wait_for(self.lock.acquire(), PROBE_WAIT_S)
        except TimeoutError:
            return self.liveness()  # in work: ready unless stuck
        try:
            indexer = await self._connected()
            try:
                await indexer.ping()
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                self._down(exc)
                await self._drop()
                await self._connected()  # reconnect now rather than on the next request
            self.outage.ok()
            return None
        except Unavailable as exc:
            return exc.reason
        finally:
            self.lock.release()
