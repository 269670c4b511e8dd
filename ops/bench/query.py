"""`recchain bench query`: API latency per query family on a generated database, requests/s of
one API process, and the ratio to running the very same SQL directly with psycopg.

The API runs as its own process (`recchain serve`), as in production; the client runs here. For
the direct-SQL ratio, the statements the API issues for a sample of requests are captured (the
driver-level SQL and parameters, via an SQLAlchemy hook on an in-process app) and replayed with
plain psycopg in the same transaction shape.
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
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
from sqlalchemy import make_url

from db.migrate import upgrade
from db.session import create_engine, database_url, to_libpq_url
from ops.bench.apidata import BENEFICIARIES, BLOCKS, OWNERS, populate
from ops.bench.e2e import free_port
from recchain.config import ApiSettings, Settings, get_settings

Family = Callable[[random.Random, int], tuple[str, dict[str, Any]]]

FAMILIES: dict[str, Family] = {
    "certificate": lambda r, n: (
        "query($t: Int!) { certificate(tokenId: $t) { owner status wh vintage } }",
        {"t": r.randint(1, n)},
    ),
    "ownership_history": lambda r, n: (
        "query($t: Int!) { ownershipHistory(tokenId: $t) { nodes { kind txid blockHeight"
        " sender recipient price } } }",
        {"t": r.randint(1, n)},
    ),
    "holdings_at_block": lambda r, n: (
        "query($o: String!, $b: Int!) { holdings(owner: $o, block: {number: $b}, first: 20) {"
        " totalWh certificates { nodes { tokenId wh } } } }",
        {"o": f"SP{r.randrange(OWNERS)}", "b": r.randint(BLOCKS // 4, BLOCKS)},
    ),
    "retirement_statement": lambda r, n: (
        "query($b: String!) { retirementStatement(beneficiary: $b, reportingYear: 2025) {"
        " totalWh breakdown { dimension key wh } lines { retirement { txid serialStart"
        " serialEnd wh } } } }",
        {"b": f"Beneficiary {r.randrange(BENEFICIARIES)}"},
    ),
    "certificates_filtered": lambda r, n: (
        'query($f: Int!) { certificates(first: 20, where: {facilityId: $f, status: "active"},'
        " orderBy: [{field: tokenId, direction: desc}]) { nodes { tokenId owner facility"
        " { name } } pageInfo { endCursor } } }",
        {"f": r.randint(1, 1000)},
    ),
}


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


def start_api(url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RECCHAIN_DATABASE_URL": url,
        "RECCHAIN_API__RATE_LIMIT_PER_MINUTE": str(10**9),
        "RECCHAIN_API__MAX_COST": str(10**9),
        "RECCHAIN_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "recchain.cli", "serve", "--port", str(port)], env=env
    )
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the API did not start")


async def latencies(base: str, n: int, samples: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for name, family in FAMILIES.items():
            rnd = random.Random(name)
            times: list[float] = []
            for _ in range(samples):
                query, variables = family(rnd, n)
                t = time.perf_counter()
                resp = await client.post("/graphql", json={"query": query, "variables": variables})
                times.append(time.perf_counter() - t)
                body = resp.json()
                if "errors" in body:
                    raise RuntimeError(f"{name}: {body['errors']}")
            out[name] = times
    return out


async def throughput(base: str, n: int, seconds: float, concurrency: int) -> tuple[float, int]:
    """Requests/s and the number of requests completed."""
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient, seed: int) -> None:
        nonlocal done
        rnd = random.Random(seed)
        while time.perf_counter() < stop:
            query, variables = FAMILIES["certificate"](rnd, n)
            resp = await client.post("/graphql", json={"query": query, "variables": variables})
            resp.raise_for_status()
            done += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client, i) for i in range(concurrency)))
        return done / (time.perf_counter() - started), done


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


async def captured_sql(url: str, n: int, samples: int) -> dict[str, list[list[tuple[str, Any]]]]:
    """The exact driver-level statements the API runs, per sampled request."""
    from graphql_api.app import create_app

    settings = Settings(
        database_url=url,  # type: ignore[arg-type]
        api=ApiSettings(rate_limit_per_minute=10**9, max_cost=10**9),
    )
    from graphql_api.db import Reader

    engine = create_engine(url)
    current: list[tuple[str, Any]] = []
    # The reader talks to psycopg directly, below SQLAlchemy's cursor events: record there.
    run, write, first = Reader._run, Reader._write, Reader._run_first

    async def traced_run(self: Reader, driver: Any, sql: str, params: dict[str, Any]) -> Any:
        current.append((sql, params or None))
        return await run(self, driver, sql, params)

    async def traced_write(self: Reader, driver: Any, sql: bytes) -> None:
        current.append((sql.decode(), None))
        await write(self, driver, sql)

    async def traced_first(self: Reader, driver: Any, sql: str, params: dict[str, Any]) -> Any:
        # BEGIN and its settings travel pipelined with the first statement.
        current.extend((stmt.decode(), None) for stmt in self._begin_statements)
        current.append((sql, params or None))
        return await first(self, driver, sql, params)

    Reader._run = traced_run  # type: ignore[method-assign]
    Reader._run_first = traced_first  # type: ignore[method-assign]
    Reader._write = traced_write  # type: ignore[method-assign]
    app = create_app(settings, engine=engine)
    out: dict[str, list[list[tuple[str, Any]]]] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for name, family in FAMILIES.items():
            rnd = random.Random(name)
            out[name] = []
            for _ in range(samples):
                query, variables = family(rnd, n)
                current.clear()
                await client.post("/graphql", json={"query": query, "variables": variables})
                out[name].append(list(current))
    await engine.dispose()
    Reader._run, Reader._write = run, write  # type: ignore[method-assign]
    Reader._run_first = first  # type: ignore[method-assign]
    return out


def direct(url: str, captured: dict[str, list[list[tuple[str, Any]]]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    # Autocommit, as the API's reader: the captured BEGIN and ROLLBACK delimit each request.
    with psycopg.connect(to_libpq_url(url), autocommit=True) as conn:
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
    base = f"http://127.0.0.1:{port}"
    try:
        lat = asyncio.run(latencies(base, args.certificates, args.samples))
        # Wall-clock requests/s depends on what else the machine runs; the API's CPU time per
        # request does not, and bounds requests/s per core.
        cpu0 = cpu_seconds(proc.pid)
        rps, done = asyncio.run(throughput(base, args.certificates, args.seconds, args.concurrency))
        cpu_ms = (cpu_seconds(proc.pid) - cpu0) * 1000 / max(1, done)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    captured = asyncio.run(captured_sql(url, args.certificates, args.samples))
    sql = direct(url, captured)
    report: dict[str, Any] = {
        "certificates": args.certificates,
        "generate_seconds": round(gen_s, 1),
        "samples_per_family": args.samples,
        "families": {},
        "simple_requests_per_second": round(rps, 1),
        "simple_request_api_cpu_ms": round(cpu_ms, 3),
        "load_average": round(os.getloadavg()[0], 1),
        "concurrency": args.concurrency,
    }
    for fam in FAMILIES:
        api50, sql50 = _pct(lat[fam], 0.5), _pct(sql[fam], 0.5)
        report["families"][fam] = {
            "api_p50_ms": round(api50, 2),
            "api_p99_ms": round(_pct(lat[fam], 0.99), 2),
            "sql_p50_ms": round(sql50, 2),
            "sql_p99_ms": round(_pct(sql[fam], 0.99), 2),
            "api_over_sql_p50": round(api50 / sql50, 2) if sql50 else None,
            "statements_per_request": statistics.mean(len(s) for s in captured[fam]),
        }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"certificates: {args.certificates:,} (generated in {gen_s:.0f}s)")
        print(f"{'family':24} {'api p50':>9} {'api p99':>9} {'sql p50':>9} {'ratio':>6}")
        for fam, f in report["families"].items():
            print(
                f"{fam:24} {f['api_p50_ms']:>8.2f}m {f['api_p99_ms']:>8.2f}m"
                f" {f['sql_p50_ms']:>8.2f}m {f['api_over_sql_p50'] or 0:>6.2f}"
            )
        print(
            f"simple queries/s (one API process, {args.concurrency} clients): {rps:.0f};"
            f" API CPU {cpu_ms:.2f} ms per request (load {os.getloadavg()[0]:.1f})"
        )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("query", help="API latency per query family, requests/s, ratio to SQL")
    p.add_argument("--certificates", type=int, default=1_000_000)
    p.add_argument("--samples", type=int, default=300, help="requests per family")
    p.add_argument("--seconds", type=float, default=10.0, help="throughput run length")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--database", default=None, help="database name (default per size)")
    p.add_argument("--reuse", action="store_true", help="reuse an existing generated database")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run)
