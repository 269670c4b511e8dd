"""`python -m ops.bench query`: API latency per query family on a generated database, requests/s of
one API process, and the ratio to running the very same SQL directly with psycopg.

The API runs as its own process (`recchain serve`), as in production; the load comes from
another process (`loadgen.py`: raw keep-alive HTTP/1.1, cheap enough not to be the bottleneck,
and it reports its own CPU). Latency is measured with one client at a time; requests/s with
`--concurrency` clients, beside the API's and the client's CPU per request and the load average.
For the direct-SQL ratio, the statements the API issues for a sample of requests are captured
(the driver-level SQL and parameters, at the API's reader on an in-process app) and replayed
with plain psycopg in the same transaction shape.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx
import psycopg
from sqlalchemy import make_url

from db.migrate import upgrade
from db.session import create_engine, database_url, to_libpq_url
from graphql_api.db import session_settings
from infra.config import ApiSettings, Settings, get_settings
from ops.bench.apidata import populate
from ops.bench.e2e import free_port
from ops.bench.families import FAMILIES
from ops.bench.ingest import BackendCpu, process_cpu_seconds
from ops.bench.tls import tls


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def prepare(server_url: str, name: str, certificates: int, reuse: bool) -> tuple[str, float]:
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(to_libpq_url(server_url), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and reuse:
            return url, 0.0
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    upgrade(url)
    return url, populate(to_libpq_url(url), certificates)


def start_api(url: str, port: int, **settings: str) -> subprocess.Popen[bytes]:
    """`recchain serve` on `url`; `settings` are further `RECCHAIN_*` variables."""
    env = {
        **os.environ,
        "RECCHAIN_DATABASE_URL": url,
        "RECCHAIN_API__RATE_LIMIT_PER_MINUTE": str(10**9),
        "RECCHAIN_API__MAX_COST": str(10**9),
        # Every simulated client (`bench subscribe` holds thousands) comes from loopback.
        "RECCHAIN_HTTP__MAX_CONNECTIONS_PER_CLIENT": str(10**6),
        "RECCHAIN_LOG_LEVEL": "WARNING",
        **settings,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "recchain.cli", "serve", "--port", str(port)], env=env
    )
    healthz = f"http://127.0.0.1:{port}/healthz"
    for _ in range(300):
        try:
            if httpx.get(healthz, timeout=1, verify=tls()).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the API did not start")


def loadgen(port: int, family: str, certificates: int, **options: Any) -> dict[str, Any]:
    """One run of the load generator in its own process (see loadgen.py); its JSON report."""
    argv = [sys.executable, "-m", "ops.bench.loadgen", "--port", str(port), "--family", family]
    argv += ["--certificates", str(certificates)]
    for key, value in options.items():
        argv += [f"--{key}", str(value)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    report: dict[str, Any] = json.loads(out)
    return report


def latencies(port: int, n: int, samples: int) -> dict[str, dict[str, Any]]:
    """One client, one request at a time, per family; a short warm-up first (the parse and
    validation caches fill on a document's first request, as in any long-running server)."""
    out: dict[str, dict[str, Any]] = {}
    for name in FAMILIES:
        loadgen(port, name, n, connections=1, requests=20, seed=10**6)
        out[name] = loadgen(port, name, n, connections=1, requests=samples)
    return out


def throughput(
    pid: int, port: int, database: str, family: str, n: int, seconds: float, concurrency: int
) -> dict[str, Any]:
    """Requests/s of one API process with `concurrency` keep-alive clients, and the CPU the API,
    the PostgreSQL backends (when local) and the load generator each spent per request."""
    loadgen(port, family, n, connections=concurrency, requests=concurrency * 10, seed=10**6)
    cpu0, load0 = cpu_seconds(pid), os.getloadavg()[0]
    with BackendCpu(database) as pg:
        run = loadgen(port, family, n, connections=concurrency, seconds=seconds)
    done = max(1, run["requests"])
    return {
        **run,
        "api_cpu_ms_per_request": round((cpu_seconds(pid) - cpu0) * 1000 / done, 3),
        "pg_cpu_ms_per_request": (
            None if pg.seconds is None else round(pg.seconds * 1000 / done, 3)
        ),
        "client_cpu_ms_per_request": round(run["client_cpu_seconds"] * 1000 / done, 3),
        "load_average_before": round(load0, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process; 0 once it is gone."""
    return process_cpu_seconds(pid) or 0.0


async def captured_sql(url: str, n: int, samples: int) -> dict[str, list[list[tuple[str, Any]]]]:
    """The exact driver-level statements the API runs, per sampled request."""
    from graphql_api.app import create_app

    settings = Settings(
        database_url=url,  # type: ignore[arg-type]
        api=ApiSettings(rate_limit_per_minute=10**9, max_cost=10**9),
    )
    from graphql_api.db import Reader, close_read_pools

    engine = create_engine(url)
    current: list[tuple[str, Any]] = []
    # The reader talks to psycopg directly, below SQLAlchemy's cursor events: record there.
    execute = Reader._execute

    async def traced(self: Reader, conn: Any, sql: str | bytes, params: Any) -> Any:
        current.append((sql.decode() if isinstance(sql, bytes) else sql, params))
        return await execute(self, conn, sql, params)

    Reader._execute = traced  # type: ignore[method-assign]
    app = create_app(settings, engine=engine)
    out: dict[str, list[list[tuple[str, Any]]]] = {}
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for name, family in FAMILIES.items():
                rnd = random.Random(name)
                out[name] = []
                # Warm: a document's first request may be an optimistic run that is redone.
                query, variables = family(random.Random(-1), n)
                await client.post("/graphql", json={"query": query, "variables": variables})
                for _ in range(samples):
                    query, variables = family(rnd, n)
                    current.clear()
                    await client.post("/graphql", json={"query": query, "variables": variables})
                    out[name].append(list(current))
    finally:
        Reader._execute = execute  # type: ignore[method-assign]
        await close_read_pools(engine)
        await engine.dispose()
    return out


def direct(
    url: str, captured: dict[str, list[list[tuple[str, Any]]]], timeout_ms: int
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    # Autocommit with the session settings of the API's read pool: the captured BEGIN and
    # ROLLBACK delimit each request that has a snapshot.
    with psycopg.connect(to_libpq_url(url), autocommit=True) as conn:
        conn.execute(session_settings(timeout_ms))
        for name, requests in captured.items():
            times = []
            for statements in requests:
                t = time.perf_counter()
                for sql, params in statements:
                    cur = conn.execute(sql.encode(), params)
                    if cur.description is not None:
                        cur.fetchall()
                times.append(time.perf_counter() - t)
            out[name] = times
    return out


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    server = database_url(settings)
    name = args.database or f"recchain_bench_api_{args.certificates}"
    print(f"preparing {args.certificates:,} certificates in {name} ...", flush=True)
    url, gen_s = prepare(server, name, args.certificates, args.reuse)
    port = free_port()
    proc = start_api(url, port)
    families = list(FAMILIES) if args.throughput == "all" else args.throughput.split(",")
    try:
        lat = latencies(port, args.certificates, args.samples)
        # Wall-clock requests/s depends on what else the machine runs; the API's CPU time per
        # request does not, and bounds requests/s per core.
        rates = {
            fam: throughput(
                proc.pid, port, name, fam, args.certificates, args.seconds, args.concurrency
            )
            for fam in families
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    captured = asyncio.run(captured_sql(url, args.certificates, args.samples))
    sql = direct(url, captured, settings.api.statement_timeout_ms)
    report: dict[str, Any] = {
        "certificates": args.certificates,
        "generate_seconds": round(gen_s, 1),
        "samples_per_family": args.samples,
        "families": {},
        "throughput": rates,
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
    }
    for fam in FAMILIES:
        api50, sql50 = lat[fam]["p50_ms"], _pct(sql[fam], 0.5)
        report["families"][fam] = {
            "api_p50_ms": api50,
            "api_p99_ms": lat[fam]["p99_ms"],
            "sql_p50_ms": round(sql50, 3),
            "sql_p99_ms": round(_pct(sql[fam], 0.99), 3),
            "api_over_sql_p50": round(api50 / sql50, 2) if sql50 else None,
            "statements_per_request": statistics.mean(len(s) for s in captured[fam]),
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"certificates: {args.certificates:,} (generated in {gen_s:.0f}s)")
    print("latency, one client (ms):")
    print(f"{'family':24} {'api p50':>8} {'api p99':>8} {'sql p50':>8} {'sql p99':>8} {'ratio':>6}")
    for fam, f in report["families"].items():
        print(
            f"{fam:24} {f['api_p50_ms']:>8.2f} {f['api_p99_ms']:>8.2f} {f['sql_p50_ms']:>8.2f}"
            f" {f['sql_p99_ms']:>8.2f} {f['api_over_sql_p50'] or 0:>6.2f}"
        )
    print(f"throughput, one API process, {args.concurrency} keep-alive clients:")
    for fam, r in rates.items():
        print(
            f"{fam:24} {r['requests_per_second']:>8.0f} req/s  p50 {r['p50_ms']:.1f} ms"
            f"  p99 {r['p99_ms']:.1f} ms  CPU ms/req: API {r['api_cpu_ms_per_request']:.3f}"
            f" PG {r['pg_cpu_ms_per_request'] or float('nan'):.3f}"
            f" client {r['client_cpu_ms_per_request']:.3f}"
            f"  load {r['load_average_before']:.1f}->{r['load_average_after']:.1f}"
        )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("query", help="API latency per query family, requests/s, ratio to SQL")
    p.add_argument(
        "--certificates", type=int, default=1_000_000, help="certificates in the generated data"
    )
    p.add_argument("--samples", type=int, default=300, help="requests per family")
    p.add_argument("--seconds", type=float, default=10.0, help="throughput run length")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight at once")
    p.add_argument(
        "--throughput",
        default="certificate",
        help="families to measure requests/s of: comma-separated names, or 'all'",
    )
    p.add_argument("--database", default=None, help="database name (default per size)")
    p.add_argument("--reuse", action="store_true", help="reuse an existing generated database")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(handler=run)
