"""`recchain bench subscribe --clients N`: how many concurrent subscribers one API process
holds, and commit-to-delivery latency of one change to all of them.

The API runs as its own process; N graphql-transport-ws clients connect from this process and
subscribe. Each round commits a new canonical block and its NOTIFY in one transaction (what the
indexer does), and measures, per client, the time from that commit to the push arriving.
Client-side parsing shares this machine, so the figures are an upper bound for the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import time
from typing import Any

import psycopg
import websockets
from sqlalchemy import make_url

from db.channels import BLOCKS
from db.migrate import upgrade
from db.session import database_url, to_libpq_url
from ops.bench.e2e import free_port
from ops.bench.query import start_api
from recchain.config import get_settings

SUBSCRIPTIONS = {
    "blocks": "subscription { blocks { block { height hash } } }",
    "listings": "subscription($w: ListingFilter) { listingUpdates(where: $w) { kind listingId"
    " listing { price status } } }",
}


class Round:
    """Counts deliveries of one round's block; `done` is set when every client has it."""

    def __init__(self) -> None:
        self.height = 0
        self.remaining = 0
        self.done = asyncio.Event()

    def start(self, height: int, clients: int) -> None:
        self.height, self.remaining = height, clients
        self.done.clear()

    def arrived(self, height: int) -> None:
        if height == self.height:
            self.remaining -= 1
            if self.remaining == 0:
                self.done.set()


ROUND = Round()


class Client:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.arrivals: dict[int, float] = {}

    async def read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            if msg.get("type") == "next":
                block = msg["payload"]["data"]["blocks"]["block"]
                self.arrivals[block["height"]] = time.perf_counter()
                ROUND.arrived(block["height"])


async def connect(url: str) -> Client:
    ws = await websockets.connect(
        url,
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        max_queue=None,
        ping_interval=None,
        open_timeout=60,
    )
    await ws.send(json.dumps({"type": "connection_init"}))
    while json.loads(await ws.recv())["type"] != "connection_ack":
        pass
    await ws.send(
        json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTIONS["blocks"]}})
    )
    return Client(ws)


def _prepare(name: str) -> str:
    server = database_url(get_settings())
    with psycopg.connect(to_libpq_url(server), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    return url


def _commit_block(conn: psycopg.Connection[Any], height: int) -> float:
    h = f"0x{height:064x}"
    with conn.transaction():
        conn.execute(
            "INSERT INTO blocks (index_block_hash, block_hash, block_height,"
            " parent_index_block_hash, block_time, canonical) VALUES (%s, %s, %s, %s, %s, true)",
            (h, h, height, f"0x{height - 1:064x}", int(time.time())),
        )
        conn.execute(
            "SELECT pg_notify(%s, %s)",
            (BLOCKS, json.dumps({"height": height, "hash": h, "rolled_back": [], "changes": {}})),
        )
    return time.perf_counter()


async def bench(url: str, clients: int, rounds: int, batch: int) -> dict[str, Any]:
    port = free_port()
    proc: subprocess.Popen[bytes] = start_api(url, port)
    ws_url = f"ws://127.0.0.1:{port}/graphql"
    conns: list[Client] = []
    readers: list[asyncio.Task[None]] = []
    try:
        started = time.perf_counter()
        for i in range(0, clients, batch):
            made = await asyncio.gather(*(connect(ws_url) for _ in range(min(batch, clients - i))))
            conns.extend(made)
            readers.extend(asyncio.create_task(c.read()) for c in made)
        connect_s = time.perf_counter() - started
        await asyncio.sleep(1.0)  # let the last subscriptions register
        latencies: list[float] = []
        missing = 0
        api_cpu0, client_cpu0 = _cpu_seconds(proc.pid), time.process_time()
        with psycopg.connect(to_libpq_url(url)) as conn:
            for r in range(1, rounds + 1):
                ROUND.start(r, clients)
                committed = await asyncio.to_thread(_commit_block, conn, r)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ROUND.done.wait(), 30)
                got = [c.arrivals[r] - committed for c in conns if r in c.arrivals]
                missing += clients - len(got)
                latencies.extend(got)
        latencies.sort()
        # Where the push time goes: the API process versus this (client) process.
        api_cpu = _cpu_seconds(proc.pid) - api_cpu0
        client_cpu = time.process_time() - client_cpu0

        def pct(q: float) -> float:
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

        return {
            "clients": clients,
            "rounds": rounds,
            "connect_seconds": round(connect_s, 1),
            "delivered": len(latencies),
            "missing": missing,
            "latency_ms": {
                "p50": pct(0.5),
                "p99": pct(0.99),
                "max": round(latencies[-1] * 1000, 1),
                "mean": round(statistics.mean(latencies) * 1000, 1),
            }
            if latencies
            else None,
            "api_rss_mb": _rss_mb(proc.pid),
            "api_cpu_ms_per_push": round(api_cpu * 1000 / max(1, len(latencies)), 3),
            "client_cpu_ms_per_push": round(client_cpu * 1000 / max(1, len(latencies)), 3),
        }
    finally:
        for t in readers:
            t.cancel()
        await asyncio.gather(*(c.ws.close() for c in conns), return_exceptions=True)
        proc.terminate()
        proc.wait(timeout=30)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def run(args: argparse.Namespace) -> int:
    url = _prepare(args.database)
    report = asyncio.run(bench(url, args.clients, args.rounds, args.batch))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        lat = report["latency_ms"] or {}
        print(
            f"{report['clients']} subscribers connected in {report['connect_seconds']}s;"
            f" API RSS {report['api_rss_mb']} MB"
        )
        print(
            f"commit -> delivery over {report['rounds']} rounds: p50 {lat.get('p50')} ms,"
            f" p99 {lat.get('p99')} ms, max {lat.get('max')} ms; missing {report['missing']}"
        )
        print(
            f"CPU per push: API {report['api_cpu_ms_per_push']} ms,"
            f" client {report['client_cpu_ms_per_push']} ms"
        )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("subscribe", help="concurrent subscribers and commit-to-delivery latency")
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=200, help="connections opened concurrently")
    p.add_argument("--database", default="recchain_bench_subscribe")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run)
