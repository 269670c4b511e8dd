"""The metadata workers' HTTP face on `metadata.metrics_port`: `/metrics` (Prometheus),
`/healthz` (liveness: the process answers; never touches the database, so an outage does not
get a worker restarted that recovers by itself) and `/readyz` (200 only while the database
answers a query within a couple of seconds, 503 with the reason otherwise).
"""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from db.outage import Outage

READY_TIMEOUT_S = 2.0


def status_app(engine: AsyncEngine, outage: Outage) -> Starlette:
    async def metrics_endpoint(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def health(_: Request) -> Response:
        return JSONResponse({"ok": True})

    async def ready(_: Request) -> Response:
        try:
            async with asyncio.timeout(READY_TIMEOUT_S), engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            outage.failed(exc, "readiness check")
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            return JSONResponse(
                {"ready": False, "reason": f"database: {type(exc).__name__}: {detail}"},
                status_code=503,
            )
        outage.ok()
        return JSONResponse({"ready": True})

    return Starlette(
        routes=[
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/healthz", health, methods=["GET"]),
            Route("/readyz", ready, methods=["GET"]),
        ]
    )
