"""`python -m ops.bench webhooks`: deliveries/s of a real `recchain webhooks send` process to a
local receiver, and the latency from the indexer's commit of a block to its delivery.

Two phases on a fresh database, with `--endpoints` endpoints each subscribed to `block`:

1. Throughput: `--backlog` blocks are indexed with no sender running (`endpoints x backlog`
   events queued), then the sender starts; deliveries/s is counted from the receiver's first
   to its last delivery (the sender's start-up left out), with the sender's CPU per delivery
   and that of PostgreSQL.
2. Latency: with the sender running, `--rounds` blocks are indexed one at a time at the tip
   through the real pipeline (`Indexer.process`, as the observer does), paced `--interval`
   apart; each block's latency is from `process` returning (its commit) to the receiver having
   read the event of that block, for every endpoint: p50/p99/max.

The receiver (ops/bench/receiver.py) and the indexer share this process and its clock; the
sender is its own process, as deployed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
import uuid
from typing import Any

from pydantic import SecretStr
from sqlalchemy import make_url

from db.session import database_url, engine_scope, to_libpq_url
from db.webhooks import store
from indexer.pipeline import Indexer
from indexer.requests import Request
from infra.config import PROJECT_ROOT, Settings, WebhookSettings, get_settings
from ops.bench import chaingen
from ops.bench.ingest import BackendCpu, _create_db, _drop_db, process_cpu_seconds
from ops.bench.receiver import Delivery, Receiver
from writers.webhooks.service import READY


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _sender(url: str, concurrency: int) -> asyncio.subprocess.Process:
    env = dict(
        os.environ,
        DATABASE_URL=to_libpq_url(url),
        RECCHAIN_LOG_LEVEL="WARNING",
        RECCHAIN_WEBHOOKS__ALLOW_INTERNAL_HOSTS='["127.0.0.1"]',
        RECCHAIN_WEBHOOKS__CONCURRENCY=str(concurrency),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recchain.cli", "webhooks", "send", "--metrics-port", "0",
        cwd=PROJECT_ROOT, env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), 60)
        if not line:
            raise RuntimeError("the sender exited before running")
        if line.decode().startswith(READY):
            break

    async def drain() -> None:
        assert proc.stderr is not None
        while await proc.stderr.read(65536):
            pass

    asyncio.get_running_loop().create_task(drain())
    return proc


async def _run(
    url: str, endpoints: int, backlog: int, rounds: int, interval: float, concurrency: int
) -> dict[str, Any]:
    settings = Settings(
        database_url=SecretStr(url), webhooks=WebhookSettings(allow_internal_hosts=["127.0.0.1"])
    )
    arrivals: dict[tuple[str, int], float] = {}

    def seen(d: Delivery) -> None:
        body = d.json
        arrivals[(d.path, body["block"]["height"])] = d.received

    rx = Receiver(on_delivery=seen)
    await rx.start()
    paths = [f"/bench/{i}" for i in range(endpoints)]
    blocks = chaingen.Chain(seed=7, txs_per_block=2, snapshots=False).grow(
        None, backlog + rounds, "bench"
    )
    requests = chaingen.to_requests(blocks)
    out: dict[str, Any] = {"endpoints": endpoints, "backlog_blocks": backlog, "rounds": rounds}
    proc: asyncio.subprocess.Process | None = None
    async with engine_scope(url, pool_size=2) as engine:
        async with engine.begin() as conn:
            for p in paths:
                await store.add_endpoint(conn, url=rx.url(p), filters=["block"], settings=settings)
        async with engine.connect() as conn:
            indexer = Indexer(conn, settings, enqueue_metadata=False)
            await indexer.start()
            for path, body in requests[:backlog]:
                await indexer.process([Request(path, body)])
            queued = endpoints * backlog
            # 1. throughput
            with BackendCpu(make_db_name(url)) as pg:
                proc = await _sender(url, concurrency)
                cpu0 = process_cpu_seconds(proc.pid) or 0.0
                deadline = time.monotonic() + 600
                # The receiver offers no event to await; a short poll is fine for a benchmark.
                while len(rx.deliveries) < queued and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                cpu1 = process_cpu_seconds(proc.pid) or 0.0
            got = rx.deliveries[:queued]
            span = got[-1].received - got[0].received if len(got) > 1 else float("nan")
            out.update(
                queued=queued,
                delivered=len(got),
                deliveries_per_s=round((len(got) - 1) / span, 1) if span == span else None,
                sender_cpu_ms_per_delivery=round((cpu1 - cpu0) * 1000 / max(len(got), 1), 3),
                pg_cpu_ms_per_delivery=(
                    None if pg.seconds is None else round(pg.seconds * 1000 / max(len(got), 1), 3)
                ),
            )
            # 2. latency commit -> delivered, at the tip
            latencies: list[float] = []
            committed: dict[int, float] = {}
            for i, (path, body) in enumerate(requests[backlog:]):
                await indexer.process([Request(path, body)])
                committed[backlog + i + 1] = time.monotonic()
                await asyncio.sleep(interval)
            deadline = time.monotonic() + 60
            want = {(p, h) for p in paths for h in committed}
            while not want <= arrivals.keys() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            for p in paths:
                for h, t in committed.items():
                    if (p, h) in arrivals:
                        latencies.append((arrivals[(p, h)] - t) * 1000)
    if proc is not None and proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    await rx.stop()
    out.update(
        latency_samples=len(latencies),
        latency_missing=len(want) - len(latencies),
        commit_to_delivered_ms_p50=round(statistics.median(latencies), 2) if latencies else None,
        commit_to_delivered_ms_p99=round(_pct(latencies, 0.99), 2) if latencies else None,
        commit_to_delivered_ms_max=round(max(latencies), 2) if latencies else None,
        load_avg_1m=round(os.getloadavg()[0], 2),
    )
    return out


def make_db_name(url: str) -> str:
    return make_url(url).database or ""


def run(
    endpoints: int, backlog: int, rounds: int, interval: float, concurrency: int
) -> dict[str, Any]:
    server = database_url(get_settings())
    name = f"recchain_bench_webhooks_{uuid.uuid4().hex[:8]}"
    url = _create_db(server, name)
    try:
        return asyncio.run(_run(url, endpoints, backlog, rounds, interval, concurrency))
    finally:
        _drop_db(server, name)


def _cmd(args: argparse.Namespace) -> int:
    result = run(args.endpoints, args.backlog, args.rounds, args.interval, args.concurrency)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    return 0


def register(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = bench_sub.add_parser("webhooks", help="webhook deliveries/s and commit -> delivered")
    p.add_argument("--endpoints", type=int, default=4, help="endpoints, each subscribed to block")
    p.add_argument("--backlog", type=int, default=500, help="blocks queued before sending")
    p.add_argument("--rounds", type=int, default=200, help="blocks indexed one by one")
    p.add_argument("--interval", type=float, default=0.05, help="seconds between tip blocks")
    p.add_argument("--concurrency", type=int, default=32, help="webhooks.concurrency")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(handler=_cmd)
