"""One relay process: the HTTP API, the broadcaster and the time-to-mined listener, sharing one
engine. The API wakes the broadcaster in-process on every accept; other processes' rows and
retries are found by polling, so any number of relay processes can share one database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Callable

import psycopg
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.channels import RELAY
from db.outage import Outage
from db.session import create_engine, database_url, to_libpq_url
from infra.config import Settings
from infra.httpserver import server_config
from writers.app import build_app
from writers.broadcaster import Broadcaster
from writers.metrics import RelayMetrics
from writers.node import NodeClient

log = logging.getLogger("recchain.relay")


async def watch_mined(
    url: str, engine: AsyncEngine, metrics: RelayMetrics, outage: Outage | None = None
) -> None:
    """Observe time-to-mined from the NOTIFYs the status trigger sends when the indexer marks a
    relayed transaction mined or failed."""
    outage = outage or Outage(log)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                to_libpq_url(url), autocommit=True, connect_timeout=10
            ) as conn:
                await conn.execute(f"LISTEN {RELAY}")
                outage.ok()
                async for note in conn.notifies():
                    payload = json.loads(note.payload)
                    if payload.get("status") not in ("mined", "failed"):
                        continue
                    async with engine.connect() as db:
                        seconds = (
                            await db.execute(
                                text(
                                    "SELECT extract(epoch FROM coalesce(mined_at, updated_at)"
                                    " - received_at) FROM relay_txs WHERE txid = :txid"
                                ),
                                {"txid": payload["txid"]},
                            )
                        ).scalar_one_or_none()
                    if seconds is not None:
                        metrics.time_to_mined.observe(float(seconds))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await outage.pause(outage.failed(exc, "relay status listener"))


async def serve(
    settings: Settings,
    host: str,
    port: int,
    node_url: str,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    url = database_url(settings)
    # A server that does not answer at all (not merely refusing) must not hang a checkout.
    engine = create_engine(url, connect_args={"connect_timeout": 10})
    metrics = RelayMetrics()
    node = NodeClient(node_url)
    # One per process: its loops and handlers report one outage together.
    outage = Outage(log, on_change=lambda up: metrics.database_up.set(1 if up else 0))
    broadcaster = Broadcaster(engine, node, metrics, outage=outage)
    app = build_app(settings, engine, metrics, on_accept=broadcaster.wake.set, outage=outage)
    server = uvicorn.Server(
        server_config(
            app, host=host, port=port, settings=settings.http, log_config=None, access_log=False
        )
    )
    stop = asyncio.Event()
    background = [
        asyncio.create_task(broadcaster.run(stop)),
        asyncio.create_task(watch_mined(url, engine, metrics, outage)),
    ]
    serving = asyncio.create_task(server.serve())
    try:
        # uvicorn exposes only a `started` flag, no event to await.
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if server.started and on_ready is not None:
            bound = server.servers[0].sockets[0].getsockname()
            on_ready(f"http://{bound[0]}:{bound[1]}")
        await serving
    finally:
        stop.set()
        await app.state.relay.accepts.aclose()
        background[1].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*background)
        await node.aclose()
        await engine.dispose()


def print_ready(base_url: str) -> None:
    # Tests and scripts wait for this exact line on stderr before talking to the relay.
    print(f"relay listening on {base_url}", file=sys.stderr, flush=True)
