"""Database access for one operation: a read-only snapshot (or a single statement on its own)
with a statement timeout, over a small pool of psycopg connections owned by the API."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from psycopg import AsyncConnection as PgConnection
from psycopg.cursor_async import AsyncCursor
from psycopg.pq import ExecStatus, TransactionStatus
from psycopg.rows import RowMaker
from sqlalchemy import TextClause, text
from sqlalchemy.dialects.postgresql.psycopg import PGDialectAsync_psycopg
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement, Executable

from db.session import to_libpq_url
from graphql_api.errors import LimitExceeded

QUERY_CANCELED = "57014"
TUPLES_OK = ExecStatus.TUPLES_OK
Row = dict[str, Any]
_DIALECT = PGDialectAsync_psycopg()
# Connections older than this are replaced when handed out: a replica switch or DNS change
# reaches the API without a restart (what the engine's pool_recycle did before).
MAX_AGE_S = 300.0


@lru_cache(maxsize=4096)
def _driver_sql(stmt: str) -> str:
    """`:name` binds as psycopg's `%(name)s`, compiled once per distinct statement."""
    return str(text(stmt).compile(dialect=_DIALECT))


# `search`'s typo tolerance: the `<%` operator, which the trigram index serves, matches at this
# word similarity (pg_trgm's default, 0.6, misses one-letter typos in short words).
WORD_SIMILARITY = 0.3


def session_settings(timeout_ms: int) -> bytes:
    """What every API read connection sets once (see ReadPool)."""
    return (
        f"SET statement_timeout = {int(timeout_ms)}; SET jit = off;"
        " SET default_transaction_read_only = on;"
        f" SET pg_trgm.word_similarity_threshold = {WORD_SIMILARITY}"
    ).encode()


def _dict_rows(cursor: AsyncCursor[Any]) -> RowMaker[Row]:
    """Rows as dicts, like psycopg's dict_row, with the names read straight off the result:
    dict_row builds `cursor.description` (a Column object per column) for every statement."""
    res = cursor.pgresult
    if res is None or not res.nfields:
        return lambda values: {}
    names = [(res.fname(i) or b"").decode() for i in range(res.nfields)]
    return lambda values: dict(zip(names, values, strict=True))


class ReadPool:
    """Autocommit psycopg connections for API reads, at most `size` open.

    The settings every API read needs are set once per connection, not per transaction:
    `statement_timeout` (the API's own, so it never reaches connections of other roles),
    `jit = off` (JIT compilation costs far more than it saves on these short, indexed queries)
    and `default_transaction_read_only`. Handing a connection out is a list pop; SQLAlchemy's
    pool and its adaption layer cost about as much as running the statement.
    """

    def __init__(self, conninfo: str, size: int, timeout_ms: int) -> None:
        self.conninfo = conninfo
        self.size = max(1, size)
        self.timeout_ms = int(timeout_ms)
        self._idle: list[PgConnection[Any]] = []
        self._born: dict[PgConnection[Any], float] = {}
        self._waiters: deque[asyncio.Future[PgConnection[Any] | None]] = deque()
        self._open = 0
        self._closed = False
        self._setup = session_settings(self.timeout_ms)

    async def _connect(self) -> PgConnection[Any]:
        conn = await PgConnection.connect(self.conninfo, autocommit=True)
        try:
            await conn.execute(self._setup)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def acquire(self) -> PgConnection[Any]:
        if self._closed:
            raise RuntimeError("the read pool is closed")
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - self._born[conn] < MAX_AGE_S and not conn.closed:
                return conn
            await self._discard(conn)
        if self._open < self.size:
            self._open += 1
        else:
            waiter: asyncio.Future[PgConnection[Any] | None]
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                # Handed something just as we were cancelled: pass it on.
                if waiter.done() and not waiter.cancelled():
                    given = waiter.result()
                    if given is not None:
                        await self.release(given)
                    else:
                        self._open -= 1
                        self._wake()
                raise
            if handed is not None:
                return handed
            # None: a discarded connection freed its slot for us to open a new one.
        try:
            conn = await self._connect()
        except BaseException:
            self._open -= 1
            self._wake()
            raise
        self._born[conn] = time.monotonic()
        return conn

    def _wake(self) -> None:
        """Give a free slot to the first live waiter, which opens a connection in it."""
        while self._waiters and self._open < self.size:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._open += 1
                waiter.set_result(None)

    async def _discard(self, conn: PgConnection[Any]) -> None:
        self._born.pop(conn, None)
        self._open -= 1
        try:
            await conn.close()
        finally:
            self._wake()

    async def release(self, conn: PgConnection[Any], *, discard: bool = False) -> None:
        """Back to the pool; `discard` (or a connection not idle and healthy) closes it."""
        if (
            discard
            or self._closed
            or conn.closed
            or conn.info.transaction_status != TransactionStatus.IDLE
        ):
            await self._discard(conn)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    async def close(self) -> None:
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RuntimeError("the read pool is closed"))
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._discard(conn)


# One pool per (engine, statement timeout): the engine names the database and bounds the
# number of connections (its pool size); the pools go when the engine does.
_POOLS: weakref.WeakKeyDictionary[AsyncEngine, dict[int, ReadPool]] = weakref.WeakKeyDictionary()


def read_pool(engine: AsyncEngine, timeout_ms: int) -> ReadPool:
    pools = _POOLS.setdefault(engine, {})
    pool = pools.get(timeout_ms)
    if pool is None or pool._closed:
        size = engine.pool.size() if hasattr(engine.pool, "size") else 10
        conninfo = to_libpq_url(engine.url.render_as_string(hide_password=False))
        pool = pools[timeout_ms] = ReadPool(conninfo, size, timeout_ms)
    return pool


async def close_read_pools(engine: AsyncEngine) -> None:
    """Close the engine's read pools (application shutdown, tests)."""
    for pool in _POOLS.pop(engine, {}).values():
        await pool.close()


class NeedsSnapshot(Exception):
    """An optimistic operation asked for a second statement: run it again with a snapshot."""


class Reader:
    """Runs the SQL of one GraphQL operation.

    `snapshot=True` (HTTP) keeps one REPEATABLE READ, READ ONLY transaction for the whole
    operation, so every root field of a response sees the same chain tip even while the indexer
    commits. `snapshot=False` (websocket pushes) runs each statement on its own in autocommit
    (one statement is its own snapshot), so an idle subscriber holds no connection.

    `optimistic=True` is for operations that usually run a single statement (a lookup by key):
    that statement runs alone in autocommit, which is exactly as consistent, and saves the
    BEGIN and ROLLBACK round trips, two thirds of the database work of such a request. A second
    statement is refused with `NeedsSnapshot` (and `needs_snapshot` set): the caller throws the
    result away and runs the operation again with `snapshot=True`. Reads have no side effects,
    so the answer is always the one a snapshot gives.

    Statements go straight to psycopg, one round trip each, no pipeline: the snapshot's BEGIN
    is a round trip of its own and the operation ends with ROLLBACK (read-only: always correct
    and cheapest). Measured against pipelining BEGIN with the first statement, the plain
    sequence costs less CPU per request (psycopg's pipeline mode has more Python per statement
    than a round trip on a local socket costs), and CPU is what bounds requests/s.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        timeout_ms: int,
        *,
        snapshot: bool = True,
        optimistic: bool = False,
    ) -> None:
        self.pool = read_pool(engine, int(timeout_ms))
        self.timeout_ms = int(timeout_ms)
        self.snapshot = snapshot
        self.optimistic = optimistic
        self.needs_snapshot = False
        self._statements = 0
        self._begun = 0  # snapshot transactions begun (an error ends one; the next begins anew)
        self._conn: PgConnection[Any] | None = None
        # Resolvers of one operation run concurrently; a connection runs one statement at a time.
        self._lock = asyncio.Lock()

    async def _execute(self, conn: PgConnection[Any], sql: str | bytes, params: Any) -> list[Row]:
        cur = conn.cursor(row_factory=_dict_rows)
        await cur.execute(sql, params)
        # Not `cur.description`: it builds a Column object per column on every call.
        res = cur.pgresult
        return await cur.fetchall() if res is not None and res.status == TUPLES_OK else []

    async def all(
        self, stmt: str | Executable, params: Mapping[str, Any] | None = None
    ) -> Sequence[Row]:
        values = dict(params or {})
        if isinstance(stmt, str):
            sql = _driver_sql(stmt)
        else:
            assert isinstance(stmt, ClauseElement)
            compiled = stmt.compile(dialect=_DIALECT)
            sql, values = str(compiled), {**compiled.params, **values}
        try:
            async with self._lock:
                if self.optimistic:
                    self._statements += 1
                    if self._statements > 1:
                        self.needs_snapshot = True
                        raise NeedsSnapshot
                if self.optimistic or not self.snapshot:
                    conn = await self.pool.acquire()
                    try:
                        return await self._execute(conn, sql, values or None)
                    finally:
                        await self.pool.release(conn)
                if self._conn is None:
                    conn = await self.pool.acquire()
                    try:
                        await self._execute(conn, SNAPSHOT_BEGIN, None)
                    except BaseException:
                        await self.pool.release(conn, discard=True)
                        raise
                    self._conn = conn
                    self._begun += 1
                return await self._execute(self._conn, sql, values or None)
        except Exception as exc:
            # The transaction is aborted: later statements of this operation start afresh.
            if self._conn is not None:
                await self.close()
            if getattr(exc, "sqlstate", None) == QUERY_CANCELED:
                raise LimitExceeded(
                    f"query exceeded the statement timeout of {self.timeout_ms} ms",
                    limit="statement_timeout",
                ) from exc
            raise

    @property
    def in_one_snapshot(self) -> bool:
        """Whether everything read so far, and the next statement, share one snapshot."""
        if not self.snapshot or self.optimistic:
            return False
        return self._begun == 0 or (self._begun == 1 and self._conn is not None)

    async def one(
        self, stmt: str | TextClause, params: Mapping[str, Any] | None = None
    ) -> Row | None:
        rows = await self.all(stmt, params)
        return rows[0] if rows else None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await self._execute(conn, b"ROLLBACK", None)
        except BaseException:
            await self.pool.release(conn, discard=True)
            raise
        await self.pool.release(conn)


SNAPSHOT_BEGIN = b"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
