"""`python -m ops.bench holdings`: "the NFT holdings of an address" on a generated chain, through
REC-Chain's GraphQL `holdings` and, with `--peer-url`, through another server's REST route on the
same chain, side by side on the same machine.

The chain is `bench ingest`'s (ops.bench.chaingen, the real event shapes), replayed once into
its own database through `recchain replay`'s pipeline (`--reuse` keeps it between runs). The
owners asked about are every principal holding a certificate at the tip (82 on the default
chain), each drawn at random per request, so every answer is asked for again and again. A
`recchain serve` process answers; the load comes from `loadgen.py` (its own process, keep-alive
connections). The rounds alternate between the servers (REC-Chain, REC-Chain without its answer
cache, peer, REC-Chain, ...) so that all see the same load on the shared machine, and each
reports requests/s, p50/p99 and the CPU its server (and PostgreSQL's backends serving its
database, when on this host) spent per request.

The peer is a server answering the Stacks Blockchain API's route
`GET /extended/v1/tokens/nft/holdings?principal=P&asset_identifiers=A&limit=50` over the same
chain (its own database; how it was loaded is the operator's business: its `import-events` of
this chain's TSV, `python -m ops.bench holdings --write-tsv PATH` writes it). Both answers carry
the same facts per certificate: its token id, the block and transaction that put it there (for
REC-Chain, its mint), and the total count. `--peer-pid` and `--peer-database` let the bench read
the peer's CPU and that of PostgreSQL's backends serving it.

REC-Chain runs with its answer cache (`api.answer_cache`, graphql_api/answercache.py) and, in
rounds of its own, as a second process with the cache off (`--answer-cache both`, the default;
`on` or `off` for one of them): the chain does not move during the bench, so after the warm-up
nearly every request with the cache is a hit, and the rounds without it measure the execution
path. Each cached round reports its hit ratio, from the process's `/metrics`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
from pydantic import SecretStr
from sqlalchemy import make_url

from db.migrate import upgrade
from db.session import database_url, engine_scope, to_libpq_url
from indexer.replay import replay_file
from infra.config import Settings, get_settings
from ops.bench.e2e import free_port, scrape
from ops.bench.ingest import BackendCpu, _cached_chain, process_cpu_seconds
from ops.bench.query import start_api

QUERY = (
    "query($o: String!) { holdings(owner: $o, first: 50) { certificates { totalCount"
    " nodes { tokenId issuedHeight issuedTxid } } } }"
)
NFT = "rec-nft::rec"  # the asset name of the generated chain's NFT (chaingen.py)


def prepare(events: int, reuse: bool) -> tuple[str, str, Path, bool]:
    """The database holding the replayed chain: (its URL, its name, the TSV, reused?)."""
    server = database_url(get_settings())
    name = f"recchain_bench_holdings_{events}"
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    tsv, _, _, _ = _cached_chain(events, 10, False)
    with psycopg.connect(to_libpq_url(server), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists and reuse:
        upgrade(url)  # migrations added since the database was made
        return url, name, tsv, True
    with psycopg.connect(to_libpq_url(server), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    upgrade(url)

    async def load() -> None:
        async with engine_scope(url, pool_size=1) as engine:
            settings = Settings(database_url=SecretStr(url))
            await replay_file(engine, settings, tsv, progress=False, enqueue_metadata=False)

    asyncio.run(load())
    with psycopg.connect(to_libpq_url(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return url, name, tsv, False


def owners_and_asset(url: str) -> tuple[list[str], str]:
    """Every principal holding a certificate at the tip, and the NFT's asset identifier."""
    with psycopg.connect(to_libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT DISTINCT owner FROM certificates WHERE block_to IS NULL AND status <> 'split'"
        ).fetchall()
        # An NFT event's contract_id is its asset identifier (contract::asset).
        found = conn.execute(
            "SELECT contract_id FROM events WHERE type LIKE 'nft%' AND contract_id LIKE '%::%'"
            " LIMIT 1"
        ).fetchone()
    owners = sorted(r[0] for r in rows if "." not in r[0])  # principals, not contracts
    asset = found[0] if found else NFT
    return owners, asset


def loadgen(port: int, host: str, targets: Path, connections: int, seconds: float) -> Any:
    argv = [sys.executable, "-m", "ops.bench.loadgen", "--port", str(port), "--host", host]
    argv += ["--targets", str(targets), "--connections", str(connections)]
    argv += ["--seconds", str(seconds)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def measure(
    port: int,
    host: str,
    targets: Path,
    args: argparse.Namespace,
    pid: int | None,
    database: str | None,
) -> dict[str, Any]:
    cpu0 = process_cpu_seconds(pid) if pid else None
    with BackendCpu(database or "\0none") as pg:
        run = loadgen(port, host, targets, args.connections, args.seconds)
    cpu1 = process_cpu_seconds(pid) if pid else None
    n = max(1, run["requests"])
    server_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return {
        "requests": run["requests"],
        "requests_per_s": run["requests_per_second"],
        "p50_ms": round(run["p50_ms"], 2),
        "p99_ms": round(run["p99_ms"], 2),
        "server_cpu_ms_per_request": None if server_cpu is None else round(server_cpu * 1e3 / n, 3),
        "pg_cpu_ms_per_request": None
        if database is None or pg.seconds is None
        else round(pg.seconds * 1e3 / n, 3),
        "client_cpu_ms_per_request": round(run["client_cpu_seconds"] * 1e3 / n, 3),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def cache_counts(port: int) -> tuple[float, float]:
    """(hits, misses) of the answer cache so far, from the process's `/metrics`."""
    hits, misses = "recchain_api_answer_cache_hits_total", "recchain_api_answer_cache_misses_total"
    found = scrape(port, hits, misses)
    return found[hits], found[misses]


def run(args: argparse.Namespace) -> dict[str, Any]:
    url, name, tsv, reused = prepare(args.events, args.reuse)
    if args.write_tsv:
        shutil.copyfile(tsv, args.write_tsv)
    owners, asset = owners_and_asset(url)
    if not owners:
        raise SystemExit("the chain has no holders")
    tmp = Path(tempfile.mkdtemp(prefix="recchain-bench-holdings-"))
    ours = tmp / "graphql.json"
    ours.write_text(
        json.dumps(
            [
                {
                    "method": "POST",
                    "path": "/graphql",
                    "body": {"query": QUERY, "variables": {"o": o}},
                }
                for o in owners
            ]
        )
    )
    theirs = tmp / "rest.json"
    route = "/extended/v1/tokens/nft/holdings"
    theirs.write_text(
        json.dumps(
            [
                {
                    "method": "GET",
                    "path": f"{route}?principal={o}&asset_identifiers={quote(asset)}&limit=50",
                    "body": None,
                }
                for o in owners
            ]
        )
    )
    # (label, the API process, its port, answer cache on?)
    servers: list[tuple[str, subprocess.Popen[bytes], int, bool]] = []
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.answer_cache]
    try:
        for cached in modes:
            port = free_port()
            flag = {"RECCHAIN_API__ANSWER_CACHE": "true" if cached else "false"}
            label = "recchain" if cached else "recchain-no-cache"
            servers.append((label, start_api(url, port, **flag), port, cached))
    except BaseException:
        for _, proc, _, _ in servers:
            proc.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    peer = urlsplit(args.peer_url) if args.peer_url else None
    rounds: list[dict[str, Any]] = []
    try:
        # Warm-up: parse and validation caches, PostgreSQL's buffers (and the answer cache).
        for _, _, port, _ in servers:
            loadgen(port, "127.0.0.1", ours, 2, 2)
        if peer is not None:
            loadgen(peer.port or 80, peer.hostname or "127.0.0.1", theirs, 2, 2)
        for _ in range(args.rounds):
            for label, api, port, cached in servers:
                before = cache_counts(port) if cached else None
                mine = measure(port, "127.0.0.1", ours, args, api.pid, name)
                if before is not None:
                    hits, misses = (b - a for a, b in zip(before, cache_counts(port), strict=True))
                    mine["cache_hit_ratio"] = round(hits / max(1.0, hits + misses), 4)
                rounds.append({"server": label, **mine})
                time.sleep(1)
            if peer is not None:
                other = measure(
                    peer.port or 80,
                    peer.hostname or "127.0.0.1",
                    theirs,
                    args,
                    args.peer_pid,
                    args.peer_database,
                )
                rounds.append({"server": "peer", **other})
            time.sleep(1)
    finally:
        for _, api, _, _ in servers:
            api.terminate()
        for _, api, _, _ in servers:
            api.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    report: dict[str, Any] = {
        "events": args.events,
        "database_reused": reused,
        "owners": len(owners),
        "connections": args.connections,
        "seconds_per_round": args.seconds,
        "query": QUERY,
        "rounds": rounds,
    }
    if peer is not None:
        b = [r for r in rounds if r["server"] == "peer"]
        report["ratio"] = {}
        for label, _, _, _ in servers:
            a = [r for r in rounds if r["server"] == label]
            report["ratio"][label] = {
                "requests_per_s": [
                    round(x["requests_per_s"] / y["requests_per_s"], 2)
                    for x, y in zip(a, b, strict=True)
                ],
                "p99": [round(x["p99_ms"] / y["p99_ms"], 2) for x, y in zip(a, b, strict=True)],
            }
    return report


def _cmd(args: argparse.Namespace) -> int:
    print(json.dumps(run(args), indent=2))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("holdings", help="NFT holdings of an address, REC-Chain beside a peer")
    p.add_argument("--events", type=int, default=200_000, help="events of the generated chain")
    p.add_argument("--reuse", action="store_true", help="keep the replayed database between runs")
    p.add_argument("--connections", type=int, default=8, help="keep-alive clients")
    p.add_argument("--seconds", type=float, default=15.0, help="length of each round")
    p.add_argument("--rounds", type=int, default=2, help="rounds per server, alternating")
    p.add_argument("--peer-url", help="base URL of a server with the REST holdings route")
    p.add_argument("--peer-pid", type=int, help="the peer's process, for its CPU")
    p.add_argument("--peer-database", help="the peer's database name, for PostgreSQL's CPU")
    p.add_argument("--write-tsv", type=Path, help="copy the chain's observer TSV here")
    p.add_argument(
        "--answer-cache",
        choices=("both", "on", "off"),
        default="both",
        help="REC-Chain with its answer cache, without it, or both in alternating rounds",
    )
    p.set_defaults(handler=_cmd)
