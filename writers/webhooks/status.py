"""The sender's HTTP face on `webhooks.metrics_port`: `/metrics` (Prometheus), `/healthz`
(liveness: the process answers; never touches the database, so an outage, which the sender
rides out by itself, does not get it restarted) and `/readyz` (200 while the sender holds its
database connections, 503 with the reason otherwise).

Readiness is the sender's own state rather than a probe query: what matters is whether this
sender can deliver, and it cannot without its connections (the lock connection above all)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from writers.webhooks.sender import Sender


def status_app(sender: Sender) -> Starlette:
    async def metrics_endpoint(_: Request) -> Response:
        return Response(generate_latest(sender.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def health(_: Request) -> Response:
        return JSONResponse({"ok": True})

    async def ready(_: Request) -> Response:
        reason = sender.not_ready()
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
