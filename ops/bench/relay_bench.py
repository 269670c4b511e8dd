"""Accepted submissions per second on one relay process.

Signs N distinct, valid contract calls with @stacks/transactions (contracts/vectors/relay.mjs
--bench N), serves the relay API in this process on loopback against a fresh database on the
PostgreSQL named by DATABASE_URL, and POSTs them from C concurrent clients. Every answer must be
202; the broadcaster is not running, so the figure is the accept path alone: HTTP, decoding,
signature checks, policy and the committed outbox INSERT.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \\
        python -m ops.bench.relay_bench --n 2000 --clients 16

`--e2e [--rounds R]` measures instead the submit-to-mined latency of the whole stack as separate
processes (ops/bench/e2e.py: indexer, devnet node, relay, GraphQL API): R purchases of open
listings, one after another, each timed from the POST to the relay until a `relayStatus`
subscriber is pushed `mined`. The devnet node mines on arrival, so the figure is the stack's own
latency (relay, broadcast, observer push, indexing, NOTIFY, subscription push), no block time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import uvicorn
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.migrate import upgrade
from db.session import create_engine, to_libpq_url, to_sqlalchemy_url
from infra.config import PROJECT_ROOT, RelaySettings, Settings
from writers import outbox
from writers.app import build_app
from writers.metrics import RelayMetrics
from writers.policy import AcceptedTx, Policy


def sign(n: int) -> list[bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "txs.json"
        subprocess.run(
            ["node", "vectors/relay.mjs", "--bench", str(n), "--out", str(out)],
            cwd=PROJECT_ROOT / "contracts",
            check=True,
        )
        return [bytes.fromhex(h) for h in json.loads(out.read_text())]


async def store_only(
    engine: AsyncEngine, txs: list[AcceptedTx], clients: int, grouped: bool
) -> float:
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE relay_txs CASCADE"))
    committer = outbox.GroupCommitter(engine)
    queue = list(reversed(txs))

    async def caller() -> None:
        while queue:
            tx = queue.pop()
            if grouped:
                await committer.submit(tx, "bench")
            else:
                await outbox.submit(engine, tx, "bench")

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    await committer.aclose()
    return round(len(txs) / elapsed, 1)


async def run(n: int, clients: int) -> None:
    txs = sign(n)
    server_url = to_sqlalchemy_url(os.environ["DATABASE_URL"])
    name = f"relay_bench_{uuid.uuid4().hex[:8]}"
    admin = to_libpq_url(server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server_url.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        settings = Settings(
            database_url=SecretStr(url),
            relay=RelaySettings(rate_limit_per_minute=10**9, max_concurrency=10**6),
        )
        policy = Policy.from_settings(settings)
        started = time.perf_counter()
        for raw in txs:
            policy.check(raw)
        checks_per_s = len(txs) / (time.perf_counter() - started)

        engine = create_engine(url, pool_size=clients, max_overflow=0)
        app = build_app(settings, engine, RelayMetrics())
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False)
        )
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no started event
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        queue = list(reversed(txs))
        latencies: list[float] = []
        codes: dict[int, int] = {}

        async def client(http: httpx.AsyncClient) -> None:
            while queue:
                raw = queue.pop()
                t0 = time.perf_counter()
                r = await http.post(
                    f"http://127.0.0.1:{port}/v1/transactions",
                    content=raw,
                    headers={"content-type": "application/octet-stream"},
                )
                latencies.append(time.perf_counter() - t0)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1

        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients)) as http:
            started = time.perf_counter()
            await asyncio.gather(*(client(http) for _ in range(clients)))
            elapsed = time.perf_counter() - started
        server.should_exit = True
        await task
        groups = app.state.relay.accepts.groups
        checked = [policy.check(raw) for raw in txs]
        per_row = await store_only(engine, checked, clients, grouped=False)
        grouped = await store_only(engine, checked, clients, grouped=True)
        await engine.dispose()
        latencies.sort()
        print(
            json.dumps(
                {
                    "submissions": n,
                    "clients": clients,
                    "status_codes": codes,
                    "accepted_per_s": round(codes.get(202, 0) / elapsed, 1),
                    "p50_ms": round(statistics.median(latencies) * 1000, 2),
                    "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
                    "policy_checks_per_s_alone": round(checks_per_s, 1),
                    "commit_groups": groups,
                    # The durable store alone (no HTTP, no checks), same rows and callers, one
                    # commit per accept vs. grouped: what the grouping changes in isolation.
                    "store_only_per_row_per_s": per_row,
                    "store_only_grouped_per_s": grouped,
                    "note": "client and server share this process and its cores",
                },
                indent=1,
            )
        )
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def run_e2e(rounds: int) -> None:
    from ops.bench.e2e import Stack

    server_url = to_sqlalchemy_url(os.environ["DATABASE_URL"])
    name = f"relay_e2e_{uuid.uuid4().hex[:8]}"
    admin = to_libpq_url(server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server_url.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        started = time.perf_counter()
        async with Stack(url) as stack:
            tip = await stack.wait_in_sync()
            ready_s = time.perf_counter() - started
            samples: list[dict[str, object]] = []
            for listing in (await stack.active_listings())[:rounds]:
                purchase = await stack.sign_purchase(listing)
                seen = await stack.relay_and_watch(purchase)
                final = seen.statuses[-1]
                with psycopg.connect(to_libpq_url(url)) as conn:
                    recorded = conn.execute(
                        "SELECT extract(epoch FROM broadcast_at - received_at),"
                        " extract(epoch FROM mined_at - received_at)"
                        " FROM relay_txs WHERE txid = %s",
                        (purchase.txid,),
                    ).fetchone()
                samples.append(
                    {
                        "listing": listing.listing_id,
                        "currency": listing.currency.rsplit(".", 1)[-1],
                        "status": final["status"],
                        "block_height": final["blockHeight"],
                        "pushed": [s["status"] for s in seen.statuses],
                        "submit_to_mined_ms": round(seen.submit_to_mined_s * 1000, 1),
                        "db_received_to_broadcast_ms": _ms(recorded[0] if recorded else None),
                        "db_received_to_mined_ms": _ms(recorded[1] if recorded else None),
                    }
                )
        latencies = sorted(float(str(s["submit_to_mined_ms"])) for s in samples)
        print(
            json.dumps(
                {
                    "stack_ready_s": round(ready_s, 1),
                    "demo_tip": tip,
                    "purchases": samples,
                    "submit_to_mined_ms_median": (
                        round(statistics.median(latencies), 1) if latencies else None
                    ),
                    "note": "4 processes + devnet node share the machine's cores",
                },
                indent=1,
            )
        )
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _ms(seconds: object) -> float | None:
    return None if seconds is None else round(float(str(seconds)) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--e2e", action="store_true", help="submit-to-mined through every role")
    parser.add_argument("--rounds", type=int, default=2, help="purchases in --e2e mode")
    args = parser.parse_args()
    asyncio.run(run_e2e(args.rounds) if args.e2e else run(args.n, args.clients))


if __name__ == "__main__":
    main()
