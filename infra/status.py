"""A background role's status server: `/metrics` (Prometheus), `/healthz` (liveness: the process
answers; it touches nothing, so an outage the role rides out by itself does not get it restarted)
and `/readyz` (200, or 503 with the reason the role gives)."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra.config import HttpSettings
from infra.httpserver import server_config


def status_app(
    not_ready: Callable[[], Awaitable[str | None]], registry: CollectorRegistry = REGISTRY
) -> Starlette:
    """`not_ready()`: why the role cannot work right now, or None when it can."""

    async def metrics_endpoint(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def health(_: Request) -> Response:
        return JSONResponse({"ok": True})

    async def ready(_: Request) -> Response:
        reason = await not_ready()
        if reason is not None:
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        return JSONResponse({"ready": True})

    return Starlette(
        routes=[
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/healthz", health, methods=["GET"]),
            Route("/readyz", ready, methods=["GET"]),
        ]
    )


@asynccontextmanager
async def serving(
    app: Starlette, host: str, port: int, http: HttpSettings, what: str
) -> AsyncIterator[None]:
    """`app` served on `host:port` while the block runs, listening before it starts (whoever
    waits for the role's start-up line may scrape at once). Port 0 serves nothing; a port that
    cannot be bound is one line on stderr, not a refusal to work: status is worth a warning."""
    if not port:
        yield
        return
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        print(f"{what} port {port}: {exc}", file=sys.stderr)
        yield
        return
    config = server_config(
        app, host=host, port=port, settings=http, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield
    finally:
        server.should_exit = True
        await task
