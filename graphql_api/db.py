"""Database access for one request: a read-only snapshot with a per-statement timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from psycopg import AsyncConnection as PgConnection
from psycopg.rows import dict_row
from sqlalchemy import TextClause, text
from sqlalchemy.dialects.postgresql.psycopg import PGDialectAsync_psycopg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ClauseElement, Executable

from graphql_api.errors import LimitExceeded

QUERY_CANCELED = "57014"
Row = dict[str, Any]
_DIALECT = PGDialectAsync_psycopg()


@lru_cache(maxsize=4096)
def _driver_sql(stmt: str) -> str:
    """`:name` binds as psycopg's `%(name)s`, compiled once per distinct statement."""
    return str(text(stmt).compile(dialect=_DIALECT))


class Reader:
    """Runs the SQL of one GraphQL operation.

    `snapshot=True` (HTTP) keeps one REPEATABLE READ, READ ONLY transaction for the whole
    operation, so every root field of a response sees the same chain tip even while the indexer
    commits. `snapshot=False` (websocket pushes) takes a pooled connection per statement, so an
    idle subscriber holds no connection. Either way `statement_timeout` is SET LOCAL: it bounds
    this request only and never leaks into the pool.

    Statements go straight to the psycopg connection under the pooled SQLAlchemy one: the
    per-statement cost of SQLAlchemy's greenlet bridge and result wrapping was about as large
    as the rest of a simple request. The connection is switched to autocommit while borrowed so
    that BEGIN, its isolation level and the SET LOCALs travel in one round trip (psycopg would
    otherwise send its own BEGIN first). With a snapshot, BEGIN and the settings are not sent on
    their own: they are pipelined with the operation's first statement, so a simple request
    costs two round trips (BEGIN+settings+query, ROLLBACK) instead of three.
    """

    def __init__(self, engine: AsyncEngine, timeout_ms: int, *, snapshot: bool = True) -> None:
        self.engine = engine
        self.timeout_ms = int(timeout_ms)
        self.snapshot = snapshot
        self._conn: tuple[AsyncConnection, PgConnection[Any]] | None = None
        # BEGIN of the snapshot transaction not yet sent (it goes with the first statement).
        self._begin_pending = False
        # Resolvers of one operation run concurrently; a connection runs one statement at a time.
        self._lock = asyncio.Lock()
        mode = "ISOLATION LEVEL REPEATABLE READ, READ ONLY" if snapshot else "READ ONLY"
        # JIT compilation costs far more than it saves on these short, indexed queries.
        self._begin_statements = (
            f"BEGIN {mode}".encode(),
            f"SET LOCAL statement_timeout = {self.timeout_ms}".encode(),
            b"SET LOCAL jit = off",
        )
        self._begin_sql = b"; ".join(self._begin_statements)

    async def _open(self, *, begin: bool = True) -> tuple[AsyncConnection, PgConnection[Any]]:
        conn = await self.engine.connect()
        try:
            raw = await conn.get_raw_connection()
            driver: PgConnection[Any] = raw.driver_connection  # type: ignore[assignment]
            await driver.set_autocommit(True)
            if begin:
                await self._write(driver, self._begin_sql)
        except BaseException:
            await conn.invalidate()
            await conn.close()
            raise
        return conn, driver

    async def _write(self, driver: PgConnection[Any], sql: bytes) -> None:
        # No parameters: psycopg sends a simple query, several statements in one round trip.
        await driver.execute(sql)

    async def _release(self, conn: AsyncConnection, driver: PgConnection[Any]) -> None:
        try:
            # Read-only: rollback is the cheap, always-correct way to end the transaction.
            await self._write(driver, b"ROLLBACK")
            await driver.set_autocommit(False)
        except BaseException:
            await conn.invalidate()
            raise
        finally:
            await conn.close()

    async def _run(self, driver: PgConnection[Any], sql: str, params: dict[str, Any]) -> list[Row]:
        async with driver.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, params or None)
            return await cur.fetchall() if cur.description is not None else []

    async def _run_first(
        self, driver: PgConnection[Any], sql: str, params: dict[str, Any]
    ) -> list[Row]:
        """The snapshot's BEGIN, its settings and the first statement in one round trip."""
        async with driver.cursor(row_factory=dict_row) as cur:
            async with driver.pipeline():
                for stmt in self._begin_statements:
                    await driver.execute(stmt)
                await cur.execute(sql, params or None)
            return await cur.fetchall() if cur.description is not None else []

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
                if self.snapshot:
                    if self._conn is None:
                        self._conn = await self._open(begin=False)
                        self._begin_pending = True
                    if self._begin_pending:
                        self._begin_pending = False
                        return await self._run_first(self._conn[1], sql, values)
                    return await self._run(self._conn[1], sql, values)
                conn, driver = await self._open()
                try:
                    return await self._run(driver, sql, values)
                finally:
                    await self._release(conn, driver)
        except Exception as exc:
            # The transaction is aborted: later statements of this operation start afresh.
            if self.snapshot:
                await self.close()
            if getattr(exc, "sqlstate", None) == QUERY_CANCELED:
                raise LimitExceeded(
                    f"query exceeded the statement timeout of {self.timeout_ms} ms",
                    limit="statement_timeout",
                ) from exc
            raise

    async def one(
        self, stmt: str | TextClause, params: Mapping[str, Any] | None = None
    ) -> Row | None:
        rows = await self.all(stmt, params)
        return rows[0] if rows else None

    async def close(self) -> None:
        opened, self._conn = self._conn, None
        if opened is not None:
            await self._release(*opened)
