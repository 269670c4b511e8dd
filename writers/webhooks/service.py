"""`recchain webhooks send`: one sender process, its status server on `webhooks.metrics_port`
(`/metrics`, `/healthz`, `/readyz`: writers/webhooks/status.py).

Any number of senders may share a database (each endpoint is worked by one of them at a
time); SIGTERM lets deliveries in flight finish before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys

import uvicorn

from db.session import database_url, to_libpq_url
from infra.config import Settings
from infra.httpserver import server_config
from writers.webhooks.metrics import WebhookMetrics
from writers.webhooks.sender import Sender
from writers.webhooks.status import status_app

READY = "webhook sender running"


def _listen(settings: Settings, port: int) -> socket.socket | None:
    host = settings.webhooks.metrics_host
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listening before READY is printed: whoever waits for that line may scrape at once.
        sock.listen(128)
    except OSError as exc:  # metrics are worth a warning, not a refusal to deliver
        sock.close()
        print(f"webhooks metrics port {port}: {exc}", file=sys.stderr)
        return None
    return sock


async def _serve_status(
    settings: Settings, sender: Sender, sock: socket.socket, stop: asyncio.Event
) -> None:
    host, port = sock.getsockname()[:2]
    config = server_config(
        status_app(sender), host=host, port=port, settings=settings.http,
        log_config=None, access_log=False,
    )  # fmt: skip
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await stop.wait()
    finally:
        server.should_exit = True
        await serving


async def send(settings: Settings, metrics_port: int | None = None) -> None:
    metrics = WebhookMetrics()
    port = settings.webhooks.metrics_port if metrics_port is None else metrics_port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    sender = Sender(to_libpq_url(database_url(settings)), settings, metrics)
    sock = _listen(settings, port) if port else None
    done = asyncio.Event()
    status = None
    if sock is not None:
        status = asyncio.create_task(_serve_status(settings, sender, sock, done))
    # Tests and scripts wait for this line on stderr.
    print(READY, file=sys.stderr, flush=True)
    try:
        await sender.run(stop)
    finally:
        done.set()
        if status is not None:
            await status
