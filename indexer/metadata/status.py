"""The metadata workers' HTTP face on `metadata.metrics_port` (infra/status.py): `/metrics`,
`/healthz`, and `/readyz`, 200 only while the database answers a query within a couple of
seconds, 503 with the reason otherwise.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from db.outage import Outage
from infra import status

READY_TIMEOUT_S = 2.0


def status_app(engine: AsyncEngine, outage: Outage) -> Starlette:
    async def not_ready() -> str | None:
        try:
            async with asyncio.timeout(READY_TIMEOUT_S), engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            outage.failed(exc, "readiness check")
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            return f"database: {type(exc).__name__}: {detail}"
        outage.ok()
        return None

    return status.status_app(not_ready)
