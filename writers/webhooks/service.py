"""`recchain webhooks send`: one sender process, its metrics on `webhooks.metrics_port`.

Any number of senders may share a database (each endpoint is worked by one of them at a
time); SIGTERM lets deliveries in flight finish before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from prometheus_client import start_http_server

from db.session import database_url, to_libpq_url
from infra.config import Settings
from writers.webhooks.metrics import WebhookMetrics
from writers.webhooks.sender import Sender

READY = "webhook sender running"


async def send(settings: Settings, metrics_port: int | None = None) -> None:
    metrics = WebhookMetrics()
    port = settings.webhooks.metrics_port if metrics_port is None else metrics_port
    if port:
        try:
            start_http_server(port, addr=settings.webhooks.metrics_host, registry=metrics.registry)
        except OSError as exc:  # metrics are worth a warning, not a refusal to deliver
            print(f"webhooks metrics port {port}: {exc}", file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    sender = Sender(to_libpq_url(database_url(settings)), settings, metrics)
    # Tests and scripts wait for this line on stderr.
    print(READY, file=sys.stderr, flush=True)
    await sender.run(stop)
