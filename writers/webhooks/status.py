"""The sender's HTTP face on `webhooks.metrics_port` (infra/status.py): `/metrics`, `/healthz`,
and `/readyz`, 200 while the sender holds its database connections, 503 with the reason
otherwise.

Readiness is the sender's own state rather than a probe query: what matters is whether this
sender can deliver, and it cannot without its connections (the lock connection above all)."""

from __future__ import annotations

from starlette.applications import Starlette

from infra import status
from writers.webhooks.sender import Sender


def status_app(sender: Sender) -> Starlette:
    async def not_ready() -> str | None:
        return sender.not_ready()

    return status.status_app(not_ready, sender.metrics.registry)
