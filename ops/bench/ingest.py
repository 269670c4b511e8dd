"""`recchain bench ingest`: catch-up ingestion throughput against a plain COPY of the same rows.

Generates a chain with the real event shapes (ops.bench.chaingen), writes it as an observer TSV,
replays it into a fresh database through the real pipeline, then COPYs the rows the indexer wrote
(raw requests, blocks, events, domain tables) into an empty copy of the schema in the same run, so
the ratio compares like with like on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from pydantic import SecretStr
from sqlalchemy import make_url

from db.migrate import upgrade
from db.models.base import FACT_TABLES, VERSIONED_TABLES
from db.session import database_url, engine_scope, to_libpq_url
from indexer.replay import replay_file
from indexer.tsv import write_requests
from ops.bench.chaingen import Chain, to_requests
from recchain.config import Settings, get_settings

COPIED = ("raw_requests", "blocks", "transactions", "events", *VERSIONED_TABLES, *FACT_TABLES)


def _generate(path: Path, events: int, txs_per_block: int) -> tuple[int, int]:
    chain = Chain(seed=1, txs_per_block=txs_per_block, snapshots=False)
    made_events = blocks = 0
    req_id = 0
    parent: str | None = None
    with path.open("w", encoding="utf-8") as out:
        while made_events < events:
            grown = chain.grow(parent, 200, "bench")
            parent = grown[-1]["index_block_hash"]
            chain.blocks.clear()
            chain._state = {parent: chain._state[parent]}  # keep memory flat
            rows = []
            for path_, body in to_requests(grown):
                req_id += 1
                rows.append((req_id, "2026-01-01 00:00:00+00", path_, body))
            write_requests(out, rows)
            blocks += len(grown)
            made_events += sum(len(b["events"]) for b in grown)
    return blocks, made_events


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped parse workers
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _create_db(server: str, name: str) -> str:
    with psycopg.connect(to_libpq_url(server), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    return url


def _drop_db(server: str, name: str) -> None:
    with psycopg.connect(to_libpq_url(server), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _copy_baseline(src: str, dst: str) -> tuple[float, int]:
    """COPY every row the indexer wrote into an empty schema; returns (seconds, rows)."""
    dumps: dict[str, bytes] = {}
    with psycopg.connect(to_libpq_url(src)) as conn:
        for table in COPIED:
            buf = bytearray()
            with conn.cursor().copy(f"COPY {table} TO STDOUT") as cp:
                for data in cp:
                    buf += data
            dumps[table] = bytes(buf)
    rows = sum(d.count(b"\n") for d in dumps.values())
    started = time.perf_counter()
    with psycopg.connect(to_libpq_url(dst)) as conn:
        for table in COPIED:
            with conn.cursor().copy(f"COPY {table} FROM STDIN") as cp:
                cp.write(dumps[table])
        conn.commit()
    return time.perf_counter() - started, rows


def run(
    events: int,
    txs_per_block: int = 10,
    batch: int | None = None,
    metadata: bool = True,
    parse_workers: int = 0,
) -> dict[str, Any]:
    settings = get_settings()
    server = database_url(settings)
    tag = uuid.uuid4().hex[:8]
    a, b = f"recchain_bench_ingest_{tag}", f"recchain_bench_copy_{tag}"
    with tempfile.TemporaryDirectory() as tmp:
        tsv = Path(tmp) / "chain.tsv"
        t0 = time.perf_counter()
        n_blocks, n_events = _generate(tsv, events, txs_per_block)
        gen_s = time.perf_counter() - t0
        url_a = _create_db(server, a)
        url_b = _create_db(server, b)
        try:
            bench_settings = Settings(database_url=SecretStr(url_a))
            cpu_s = 0.0

            async def ingest() -> float:
                async with engine_scope(url_a, pool_size=1) as engine:
                    nonlocal cpu_s
                    start = time.perf_counter()
                    cpu0 = _cpu_seconds()
                    await replay_file(
                        engine,
                        bench_settings,
                        tsv,
                        progress=sys.stderr.isatty(),
                        batch_size=batch,
                        enqueue_metadata=metadata,
                        parse_workers=parse_workers,
                    )
                    cpu_s = _cpu_seconds() - cpu0
                    return time.perf_counter() - start

            ingest_s = asyncio.run(ingest())
            copy_s, copy_rows = _copy_baseline(url_a, url_b)
        finally:
            _drop_db(server, a)
            _drop_db(server, b)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "events": n_events,
        "blocks": n_blocks,
        "metadata_jobs": metadata,
        "parse_workers": parse_workers,
        "generate_s": round(gen_s, 2),
        "ingest_s": round(ingest_s, 2),
        # The indexer's own CPU (parse workers included, PostgreSQL not): on a shared machine
        # wall clock follows the load, CPU per event does not.
        "cpu_s": round(cpu_s, 2),
        "cpu_s_per_10k_events": round(cpu_s * 10_000 / n_events, 3),
        "events_per_s": round(n_events / ingest_s),
        "blocks_per_s": round(n_blocks / ingest_s, 1),
        "copy_s": round(copy_s, 2),
        "copy_rows": copy_rows,
        "ratio_to_copy": round(copy_s / ingest_s, 3),
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }


def _cmd(args: argparse.Namespace) -> int:
    result = run(
        args.events, args.txs_per_block, args.batch, not args.no_metadata, args.parse_workers
    )
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {value}")
    return 0


def register(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = bench_sub.add_parser("ingest", help="catch-up ingestion throughput vs plain COPY")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--txs-per-block", type=int, default=10)
    p.add_argument("--batch", type=int, default=None, help="requests per transaction")
    p.add_argument("--json", action="store_true")
    p.add_argument("--parse-workers", type=int, default=0, help="see `recchain replay`")
    p.add_argument(
        "--no-metadata", action="store_true", help="skip metadata job enqueueing (to isolate it)"
    )
    p.set_defaults(handler=_cmd)
