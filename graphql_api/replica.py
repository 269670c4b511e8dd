"""Reading from a hot standby while notifications come from the primary.

NOTIFY does not work on a standby (a standby cannot LISTEN), so the API listens on the primary
(`database_url`) and reads from the replica (`api.read_database_url`). A notification is
delivered only after its transaction committed on the primary; the replica applies that commit
a little later. A push computed before then would show the state before the change, so every
query that follows a notification first waits until the replica has replayed the primary's WAL
as far as it had been written when the notification was received:

1. on receipt, the listener reads `pg_current_wal_insert_lsn()` on the primary (on the LISTEN
   connection itself). The notified commit record was inserted before the notification was
   delivered, so this position is at or past its end, whatever `synchronous_commit` the writer
   used;
2. the dispatcher waits until the replica's `pg_last_wal_replay_lsn()` reaches it
   (`Replica.wait`), then computes. One poller serves every waiter, so the notifications of
   one batch, and every topic they concern, share one wait.

A wait is bounded (`api.read_replica_push_wait_s`): a batch whose commit the replica has not
replayed by then is computed on the primary instead (hub.py), which has it, so a push is late
by at most the bound, never stale and never dropped, whatever the replica does (paused,
cut off, replaying a long conflict). Later batches wait for the replica again: each carries a
later position, so a subscriber never sees the state go back. The replica is assumed to be one
server: a URL that spreads connections over several standbys would check one and read another.

The same component samples the replica's lag every second for `_meta`, `/metrics` and
`/readyz`: the age of the oldest primary WAL position (sampled once a second) that the replica
has not replayed yet, and the distance in bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import deque
from typing import Any

from psycopg import AsyncConnection

from graphql_api import metrics

log = logging.getLogger(__name__)

# WAL page header sizes (XLogPageHeaderData / XLogLongPageHeaderData, MAXALIGNed), stable since
# PostgreSQL 9.x; the long one starts each segment.
SHORT_PAGE_HEADER = 24
LONG_PAGE_HEADER = 40
SAMPLE_INTERVAL_S = 1.0
# Replay polls start fast (a streaming replica on a LAN replays within a millisecond or two)
# and slow down to this while the replica stays behind.
POLL_MAX_S = 0.02


def parse_lsn(text: str) -> int:
    """`16/B374D848` -> a byte position."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def reached(
    replayed: int, target: int, block_size: int = 8192, segment_size: int = 16 << 20
) -> bool:
    """Whether a replica that replayed up to `replayed` has everything before `target`.

    `target` is an insert position, which after a record ending exactly on a page boundary
    points past the next page's header, while a replica that replayed that record reports the
    boundary itself. No record ends inside a header, so the boundary is as good as the target.
    """
    if replayed >= target:
        return True
    offset = target % block_size
    page = target - offset
    header = LONG_PAGE_HEADER if page % segment_size == 0 else SHORT_PAGE_HEADER
    return offset == header and replayed >= page


class Replica:
    """The read replica as seen from one API process: replay waits and lag."""

    def __init__(self, primary_url: str, replica_url: str, max_lag_s: float) -> None:
        self.primary_url = primary_url
        self.replica_url = replica_url
        self.max_lag_s = max_lag_s
        self.block_size = 8192
        self.segment_size = 16 << 20
        self._primary: AsyncConnection[Any] | None = None
        self._replica: AsyncConnection[Any] | None = None
        self._primary_lock = asyncio.Lock()
        self._replica_lock = asyncio.Lock()
        self._replayed = -1  # last replay position seen
        self._in_recovery = True
        self._waiters: list[tuple[int, int, asyncio.Future[None], float]] = []
        self._seq = itertools.count()
        self._poller: asyncio.Task[None] | None = None
        self._sampler: asyncio.Task[None] | None = None
        # (monotonic time, primary position) samples the replica has not replayed yet.
        self._behind: deque[tuple[float, int]] = deque(maxlen=100_000)
        self.lag_seconds: float | None = None
        self.lag_bytes: int | None = None

    # -- connections ----------------------------------------------------------------------
    async def _primary_conn(self) -> AsyncConnection[Any]:
        if self._primary is None or self._primary.closed:
            self._primary = await AsyncConnection.connect(self.primary_url, autocommit=True)
        return self._primary

    async def _replica_conn(self) -> AsyncConnection[Any]:
        if self._replica is None or self._replica.closed:
            conn = await AsyncConnection.connect(self.replica_url, autocommit=True)
            try:
                cur = await conn.execute(
                    "SELECT current_setting('wal_block_size')::int,"
                    " current_setting('wal_segment_size')"
                )
                row = await cur.fetchone()
                if row is not None:
                    self.block_size = int(row[0])
                    self.segment_size = _size_bytes(str(row[1]))
            except BaseException:
                await conn.close()
                raise
            self._replica = conn
        return self._replica

    async def primary_lsn(self) -> int:
        """The primary's WAL insert position now (on a connection of our own)."""
        async with self._primary_lock:
            try:
                conn = await self._primary_conn()
                return await insert_lsn(conn)
            except Exception:
                await _close(self._primary)
                self._primary = None
                raise

    async def replay_lsn(self) -> int | None:
        """The replica's replay position; None when it is not in recovery (a primary)."""
        async with self._replica_lock:
            try:
                conn = await self._replica_conn()
                cur = await conn.execute(
                    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text"
                )
                row = await cur.fetchone()
            except Exception:
                await _close(self._replica)
                self._replica = None
                raise
        assert row is not None
        in_recovery, lsn = bool(row[0]), row[1]
        if not in_recovery:
            if self._in_recovery:
                log.warning(
                    "api.read_database_url names a server that is not a standby; reads are"
                    " treated as current"
                )
            self._in_recovery = False
            return None
        self._in_recovery = True
        value = parse_lsn(lsn) if lsn else 0
        self._replayed = max(self._replayed, value)
        return value

    # -- waiting --------------------------------------------------------------------------
    def _reached(self, target: int) -> bool:
        return not self._in_recovery or reached(
            self._replayed, target, self.block_size, self.segment_size
        )

    async def wait(self, target: int, bound_s: float | None = None) -> bool:
        """Until the replica has replayed up to `target`, or `bound_s` seconds: whether it has."""
        if self._replayed >= 0 and self._reached(target):
            return True
        started = time.monotonic()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (target, next(self._seq), future, started)
        heapq.heappush(self._waiters, entry)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="recchain-api-replica-wait")
        try:
            await asyncio.wait_for(asyncio.shield(future), bound_s)
        except TimeoutError:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)
                heapq.heapify(self._waiters)
            return False
        finally:
            metrics.REPLICA_WAIT.observe(time.monotonic() - started)
        return True

    async def _poll(self) -> None:
        delay = 0.0005
        while self._waiters:
            try:
                await self.replay_lsn()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the replica restarts: keep the waiters, try again
                log.warning("reading the replica's replay position failed (%s); retrying", exc)
                delay = 1.0
            while self._waiters and self._reached(self._waiters[0][0]):
                _, _, future, _ = heapq.heappop(self._waiters)
                if not future.done():
                    future.set_result(None)
            if not self._waiters:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_MAX_S) if delay < 1.0 else POLL_MAX_S

    # -- lag ------------------------------------------------------------------------------
    async def sample(self) -> None:
        """One lag sample: the primary's position now against the replica's replay."""
        now = time.monotonic()
        target = await self.primary_lsn()
        replayed = await self.replay_lsn()
        if replayed is None:
            self._behind.clear()
            self.lag_seconds, self.lag_bytes = 0.0, 0
        else:
            self._behind.append((now, target))
            while self._behind and reached(
                replayed, self._behind[0][1], self.block_size, self.segment_size
            ):
                self._behind.popleft()
            self.lag_seconds = round(now - self._behind[0][0], 3) if self._behind else 0.0
            self.lag_bytes = max(0, target - replayed) if self._behind else 0
        metrics.REPLICA_LAG_SECONDS.set(self.lag_seconds)
        metrics.REPLICA_LAG_BYTES.set(self.lag_bytes)

    async def _sample_forever(self) -> None:
        failing = False
        while True:
            try:
                await self.sample()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Unknown rather than a stale figure: `_meta` says null, readiness is not
                # failed for it (the replica may well be serving).
                self.lag_seconds = self.lag_bytes = None
                if not failing:
                    log.warning("replica lag unknown: %s", exc)
                failing = True
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    def start(self) -> None:
        if self._sampler is None or self._sampler.done():
            self._sampler = asyncio.create_task(
                self._sample_forever(), name="recchain-api-replica-lag"
            )

    @property
    def too_far_behind(self) -> bool:
        return self.lag_seconds is not None and self.lag_seconds > self.max_lag_s

    async def stop(self) -> None:
        for task in (self._sampler, self._poller):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._sampler = self._poller = None
        for _, _, future, _ in self._waiters:
            future.cancel()
        self._waiters.clear()
        await _close(self._primary)
        await _close(self._replica)
        self._primary = self._replica = None


async def insert_lsn(conn: AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT pg_current_wal_insert_lsn()::text")
    row = await cur.fetchone()
    assert row is not None
    return parse_lsn(row[0])


def _size_bytes(setting: str) -> int:
    """`16MB` (how `current_setting('wal_segment_size')` reads) -> bytes."""
    units = {"kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
    for unit, factor in units.items():
        if setting.endswith(unit):
            return int(setting[: -len(unit)]) * factor
    return int(setting)


async def _close(conn: AsyncConnection[Any] | None) -> None:
    if conn is not None and not conn.closed:
        with contextlib.suppress(Exception):
            await conn.close()
