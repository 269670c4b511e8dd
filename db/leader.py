"""Leader election: one active indexer, any number of hot standbys, PostgreSQL as the referee.

The active process holds a *session* advisory lock (`pg_try_advisory_lock`) on a dedicated
connection that does nothing else. PostgreSQL releases a session lock only when it is unlocked
or when the session ends, so the lock lives exactly as long as the holder's connection: a
`kill -9`, an OOM kill or a crashed node closes the socket and the lock is free at once (a
silently vanished host is detected by the TCP keepalives set below). Standbys poll with
`pg_try_advisory_lock` rather than blocking in `pg_advisory_lock`, so a standby stays
cancellable, reconnects by itself when the database restarts, and never holds a backend stuck
in a lock wait.

Losing the connection while leading means another process may already lead, so the holder
must stop writing: `Leadership.lost` is set and `run_as_leader` cancels the work. Noticing
takes up to a check interval, and a paused process (SIGSTOP, a long GC, a frozen VM) notices
only when it runs again, so writes are also fenced in the database: whoever takes the lock bumps
the name's epoch in `leader_epochs` (a fencing token), and every write transaction of the
leader calls `Leadership.check(conn)` first, which reads the epoch `FOR SHARE` (held until the
transaction ends). The bump waits for a transaction that holds that share lock, so the previous
leader's last batch commits before the new leader's first one begins; if it does not end within
`BUMP_WAIT_S` (its process is paused or cut off) the new leader ends that session, which rolls
it back and frees its row locks. A check after the bump finds another epoch and raises `Fenced`.
So two leaders never commit in the same window, whatever the timing.

Usage, in the indexer:

    await run_as_leader(database_url, "indexer", lambda leadership: follow_chain(...))
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg

from db.outage import Outage
from db.session import to_libpq_url

log = logging.getLogger("recchain.leader")

T = TypeVar("T")

# Server-side keepalives for the lock session (user-settable GUCs): a holder whose host
# disappears without closing its socket loses the lock after about idle + interval * count
# seconds instead of the operating system's default of two hours.
# The lock session is idle between checks by design: a server-wide idle_session_timeout must not
# end a leadership (the data connections are subject to it, and reconnect).
KEEPALIVE_OPTIONS = (
    "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"
    " -c idle_session_timeout=0 -c idle_in_transaction_session_timeout=0"
)
# How long the epoch bump waits for the previous leader's open write transaction before it ends
# that session (it lost the lock; its transaction would fail its check anyway).
BUMP_WAIT_S = 5.0


class LeadershipLost(RuntimeError):
    """The lock connection failed while leading: another process may be the leader now."""


class LeaderBusy(RuntimeError):
    """Another process holds the lock and the caller asked not to wait for it."""


class Fenced(LeadershipLost):
    """A write transaction found that another process took the lock since: it must roll back."""


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for `name` (the type pg_advisory_lock takes).

    Derived by hashing so that different names cannot collide by construction the way small
    hand-picked integers do across applications sharing one database.
    """
    digest = hashlib.sha256(f"recchain.leader:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def holder_label(name: str) -> str:
    """The `application_name` of the lock session: who holds it shows in pg_stat_activity."""
    return f"recchain-leader:{name}:{socket.gethostname()}:{os.getpid()}"[:63]


@dataclass
class Leadership:
    """Held while this process is the leader for `name`."""

    name: str
    key: int
    backend_pid: int
    epoch: int = 0
    lost: asyncio.Event = field(default_factory=asyncio.Event)

    def ensure(self) -> None:
        """Raise `LeadershipLost` if the lock connection has failed; call before writing."""
        if self.lost.is_set():
            raise LeadershipLost(f"leadership of {self.name!r} lost")

    async def check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """First in a write transaction on `conn`: raise `Fenced` unless this process still holds
        the lock's epoch. The share lock it takes lasts until the transaction ends, so a
        successor's bump waits for it."""
        self.ensure()
        cur = await conn.execute(
            "SELECT 1 FROM leader_epochs WHERE name = %s AND epoch = %s FOR SHARE",
            (self.name, self.epoch),
        )
        if await cur.fetchone() is None:
            self.lost.set()
            raise Fenced(f"leadership of {self.name!r} taken over (epoch {self.epoch} is stale)")


async def _connect(url: str, name: str) -> psycopg.AsyncConnection[tuple[object, ...]]:
    return await psycopg.AsyncConnection.connect(
        to_libpq_url(url),
        autocommit=True,
        application_name=holder_label(name),
        options=KEEPALIVE_OPTIONS,
        connect_timeout=10,
    )


async def _try_lock(conn: psycopg.AsyncConnection[tuple[object, ...]], key: int) -> bool:
    row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))).fetchone()
    return bool(row and row[0])


async def _bump_epoch(conn: psycopg.AsyncConnection[tuple[object, ...]], name: str) -> int:
    """Take the next epoch of `name` (on the lock connection, autocommit)."""
    while True:
        try:
            await conn.execute(f"SET lock_timeout = '{int(BUMP_WAIT_S * 1000)}ms'")
            cur = await conn.execute(
                "INSERT INTO leader_epochs AS e (name, epoch, holder) VALUES (%s, 1, %s) "
                "ON CONFLICT (name) DO UPDATE SET epoch = e.epoch + 1, holder = EXCLUDED.holder, "
                "acquired_at = now() RETURNING epoch",
                (name, holder_label(name)),
            )
            row = await cur.fetchone()
            await conn.execute("SET lock_timeout = 0")
            assert row is not None
            return int(row[0])  # type: ignore[call-overload]
        except psycopg.errors.LockNotAvailable:
            # The previous leader is inside a write transaction (paused, or its host cut off):
            # its session ends here, so its transaction rolls back instead of committing later.
            cur = await conn.execute(
                "SELECT a.pid, pg_terminate_backend(a.pid) FROM leader_epochs e "
                "JOIN pg_stat_activity a ON a.backend_xid = e.xmax "
                # xids are the cluster's, and a share-locked row's xmax can be a MultiXactId that
                # equals some other database's transaction id: never end a session elsewhere.
                "WHERE e.name = %s AND a.pid <> pg_backend_pid()"
                " AND a.datname = current_database()",
                (name,),
            )
            ended = [r[0] for r in await cur.fetchall()]
            log.warning(
                "leader epoch: the previous leader's write transaction held it; ended its session",
                extra={"leader": name, "backend_pids": ended},
            )


async def _backend_pid(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> int:
    row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


async def _watch(
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    leadership: Leadership,
    check_interval: float,
    check_timeout: float,
) -> None:
    # A live session still holds its session lock, so "the connection answers" is the whole
    # check. A check that hangs (half-open TCP) counts as lost: stepping down early is safe,
    # leading without the lock is not.
    while True:
        await asyncio.sleep(check_interval)
        try:
            await asyncio.wait_for(conn.execute("SELECT 1"), check_timeout)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.error(
                "leader lock connection failed; stepping down",
                extra={"leader": leadership.name, "error": type(exc).__name__},
            )
            leadership.lost.set()
            return


@asynccontextmanager
async def leadership(
    url: str,
    name: str = "indexer",
    *,
    poll_interval: float = 1.0,
    check_interval: float = 2.0,
    check_timeout: float = 10.0,
    wait: bool = True,
    outage: Outage | None = None,
) -> AsyncIterator[Leadership]:
    """Wait until this process holds the `name` lock, then yield; release it on exit.

    While waiting, retries every `poll_interval` seconds (reconnecting if the database is
    unreachable). While held, checks the lock connection every `check_interval` seconds and
    sets `Leadership.lost` when it fails. With `wait=False`, a lock held by another process
    raises `LeaderBusy` at once (a one-off writer such as `recchain replay`). With `outage` (the
    process's own), an unreachable database is reported to it, one line per outage, instead of
    a line per attempt.
    """
    key = lock_key(name)
    announced_standby = False
    while True:
        try:
            conn = await _connect(url, name)
        except (psycopg.Error, OSError) as exc:
            if outage is not None:
                outage.failed(exc, "leader lock")
            else:
                log.warning(
                    "leader lock: database unreachable, retrying",
                    extra={"leader": name, "error": type(exc).__name__},
                )
            # Not the outage's backoff: the lock is taken within a poll of the server's return.
            await asyncio.sleep(poll_interval)
            continue
        if outage is not None:
            outage.ok()
        try:
            while not await _try_lock(conn, key):
                if not wait:
                    raise LeaderBusy(f"another process holds the {name!r} lock")
                if not announced_standby:
                    log.info("standing by: another process leads", extra={"leader": name})
                    announced_standby = True
                await asyncio.sleep(poll_interval)
            break
        except (psycopg.Error, OSError) as exc:
            log.warning(
                "leader lock: connection lost while standing by, reconnecting",
                extra={"leader": name, "error": type(exc).__name__},
            )
            await conn.close()
            await asyncio.sleep(poll_interval)
        except BaseException:
            await conn.close()
            raise

    try:
        epoch = await _bump_epoch(conn, name)
        held = Leadership(name=name, key=key, backend_pid=await _backend_pid(conn), epoch=epoch)
    except BaseException:
        await conn.close()  # the lock goes with the session: a restart competes again
        raise
    log.info(
        "acquired leadership",
        extra={"leader": name, "backend_pid": held.backend_pid, "epoch": epoch},
    )
    watcher = asyncio.create_task(_watch(conn, held, check_interval, check_timeout))
    try:
        yield held
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        if not held.lost.is_set():
            # Closing the session would release the lock too; unlocking first makes the
            # hand-over explicit and does not depend on how the pool treats the socket.
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        with contextlib.suppress(psycopg.Error, OSError):
            await conn.close()
        log.info("released leadership", extra={"leader": name})


async def run_as_leader(
    url: str,
    name: str,
    work: Callable[[Leadership], Awaitable[T]],
    outage: Outage | None = None,
    **options: Any,
) -> T:
    """Become the leader for `name`, run `work`, and cancel it if leadership is lost.

    Raises `LeadershipLost` in that case; the caller should exit (a supervisor restarts it as a
    standby) rather than retry in-process with possibly stale state, unless what `work` built
    is gone with it (the observer's `IndexerService` builds its state afresh each term).
    """
    async with leadership(url, name, outage=outage, **options) as held:
        task: asyncio.Task[T] = asyncio.ensure_future(work(held))
        lost = asyncio.create_task(held.lost.wait())
        try:
            done, _ = await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            lost.cancel()
            raise
        if task in done:
            lost.cancel()
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise LeadershipLost(f"leadership of {name!r} lost")


async def current_holder(url: str, name: str) -> str | None:
    """`application_name` of the session holding the `name` lock, or None: for operators."""
    key = lock_key(name)
    # A bigint advisory key is stored as classid = high 32 bits, objid = low 32 bits,
    # objsubid = 1 (pg_locks documentation).
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    classid, objid = unsigned >> 32, unsigned & 0xFFFFFFFF
    async with await psycopg.AsyncConnection.connect(to_libpq_url(url), autocommit=True) as conn:
        row = await (
            await conn.execute(
                """
                SELECT a.application_name
                FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                  AND l.classid::bigint = %s AND l.objid::bigint = %s
                  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                """,
                (classid, objid),
            )
        ).fetchone()
    return None if row is None else str(row[0])
