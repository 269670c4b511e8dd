"""`recchain webhooks send`: one sender process, its status server on `webhooks.metrics_port`
(`/metrics`, `/healthz`, `/readyz`: writers/webhooks/status.py).

Any number of senders may share a database (each endpoint is worked by one of them at a
time); SIGTERM lets deliveries in flight finish before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from db.session import database_url, to_libpq_url
from infra.config import Settings
from infra.status import serving
from writers.webhooks.metrics import WebhookMetrics
from writers.webhooks.sender import Sender
from writers.webhooks.status import status_app

READY = "webhook sender running"


async def send(settings: Settings, metrics_port: int | None = None) -> None:
    metrics = WebhookMetrics()
    port = settings.webhooks.metrics_port if metrics_port is None else metrics_port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    sender = Sender(to_libpq_url(database_url(settings)), settings, metrics)
    host = settings.webhooks.metrics_host
    async with serving(status_app(sender), host, port, settings.http, "webhooks metrics"):
        # Tests and scripts wait for this line on stderr.
        print(READY, file=sys.stderr, flush=True)
        await sender.run(stop)
