"""Database access for one request: a read-only snapshot with a per-statement timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import RowMapping, TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

from graphql_api.errors import LimitExceeded

QUERY_CANCELED = "57014"


class Reader:
    """Runs the SQL of one GraphQL operation.

    `snapshot=True` (HTTP) keeps one REPEATABLE READ, READ ONLY transaction for the whole
    operation, so every root field of a response sees the same chain tip even while the indexer
    commits. `snapshot=False` (websocket pushes) takes a pooled connection per statement, so an
    idle subscriber holds no connection. Either way `statement_timeout` is SET LOCAL: it bounds
    this request only and never leaks into the pool.
    """

    def __init__(self, engine: AsyncEngine, timeout_ms: int, *, snapshot: bool = True) -> None:
        self.engine = engine
        self.timeout_ms = int(timeout_ms)
        self.snapshot = snapshot
        self._conn: AsyncConnection | None = None
        # Resolvers of one operation run concurrently; a connection runs one statement at a time.
        self._lock = asyncio.Lock()

    async def _begin(self, conn: AsyncConnection) -> None:
        # One round trip for all settings (no parameters: the simple protocol allows several).
        # JIT compilation costs far more than it saves on these short, indexed queries.
        mode = "ISOLATION LEVEL REPEATABLE READ, READ ONLY" if self.snapshot else "READ ONLY"
        await conn.exec_driver_sql(
            f"SET TRANSACTION {mode}; SET LOCAL statement_timeout = {self.timeout_ms};"
            " SET LOCAL jit = off"
        )

    async def all(
        self, stmt: str | Executable, params: Mapping[str, Any] | None = None
    ) -> Sequence[RowMapping]:
        query: Executable = text(stmt) if isinstance(stmt, str) else stmt
        try:
            async with self._lock:
                if self.snapshot:
                    if self._conn is None:
                        conn = await self.engine.connect()
                        await conn.begin()
                        await self._begin(conn)
                        self._conn = conn
                    result = await self._conn.execute(query, dict(params or {}))
                    return result.mappings().all()
                async with self.engine.connect() as conn, conn.begin():
                    await self._begin(conn)
                    result = await conn.execute(query, dict(params or {}))
                    return result.mappings().all()
        except Exception as exc:
            # The transaction is aborted: later statements of this operation start afresh.
            if self.snapshot:
                await self.close()
            if getattr(getattr(exc, "orig", None), "sqlstate", None) == QUERY_CANCELED:
                raise LimitExceeded(
                    f"query exceeded the statement timeout of {self.timeout_ms} ms",
                    limit="statement_timeout",
                ) from exc
            raise

    async def one(
        self, stmt: str | TextClause, params: Mapping[str, Any] | None = None
    ) -> RowMapping | None:
        rows = await self.all(stmt, params)
        return rows[0] if rows else None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Read-only: rollback is the cheap, always-correct way to end the transaction.
            await conn.rollback()
            await conn.close()
