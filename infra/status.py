"""A background role's status server: `/metrics` (Prometheus), `/healthz` (liveness: the process
answers; it touches nothing, so an outage the role rides out by itself does not get it restarted)
and `/readyz` (200, or 503 with the reason the role gives)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


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
