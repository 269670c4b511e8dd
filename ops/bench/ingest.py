"""`python -m ops.bench ingest`: catch-up ingestion throughput against a plain COPY of the
same rows.

Generates a chain with the real event shapes (ops.bench.chaingen), writes it as an observer TSV,
replays it into a fresh database through the real pipeline, then COPYs the rows the indexer wrote
(raw requests, blocks, events, domain tables) into an empty copy of the schema in the same run, so
the ratio compares like with like on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import inspect
import json
import os
import resource
import sys
import tempfile
import threading
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
from indexer.replay import DEFER_INDEXES_FROM, replay_file
from indexer.tsv import write_requests
from infra.config import Settings, get_settings
from ops.bench import chaingen

COPIED = ("raw_requests", "blocks", "transactions", "events", *VERSIONED_TABLES, *FACT_TABLES)


def _generate(path: Path, events: int, txs_per_block: int) -> tuple[int, int]:
    made_events = blocks = 0
    chunk: list[dict[str, Any]] = []
    with path.open("w", encoding="utf-8") as out:
        for block in chaingen.stream(seed=1, txs_per_block=txs_per_block):
            chunk.append(block)
            blocks += 1
            made_events += len(block["events"])
            if len(chunk) == 200 or made_events >= events:
                rows = [
                    (blocks - len(chunk) + i, "2026-01-01 00:00:00+00", path_, body)
                    for i, (path_, body) in enumerate(chaingen.to_requests(chunk), start=1)
                ]
                write_requests(out, rows)
                chunk = []
            if made_events >= events:
                break
    return blocks, made_events


def _cached_chain(events: int, txs_per_block: int, fresh: bool) -> tuple[Path, int, int, bool]:
    """The generated TSV for these parameters, made once and kept in the temp directory (a 1M
    event chain takes minutes to generate and is the same every time). The key includes the
    generator's source, so a changed generator never serves a stale chain."""
    source = Path(chaingen.__file__).read_bytes() + inspect.getsource(_generate).encode()
    digest = hashlib.sha256(source).hexdigest()[:12]
    cache = Path(tempfile.gettempdir()) / "recchain-bench-ingest"
    cache.mkdir(exist_ok=True)
    tsv = cache / f"chain-{events}-{txs_per_block}-{digest}.tsv"
    meta = tsv.with_suffix(".json")
    if not fresh and tsv.exists() and meta.exists():
        counts = json.loads(meta.read_text())
        return tsv, counts["blocks"], counts["events"], True
    partial = tsv.with_suffix(f".{os.getpid()}.part")
    blocks, made = _generate(partial, events, txs_per_block)
    partial.replace(tsv)  # atomic: a concurrent or interrupted run never sees half a chain
    meta.write_text(json.dumps({"blocks": blocks, "events": made}))
    return tsv, blocks, made, False


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped parse workers
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc); None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    # utime and stime are fields 14 and 15 of stat(5); 12 and 13 after the ")".
    return (int(fields[11]) + int(fields[12])) / _TICK


class BackendCpu:
    """CPU seconds of the PostgreSQL backends serving `database`, when the server runs on this
    host (None otherwise): /proc is sampled while the block runs, because a backend's counters
    vanish with it. A backend's process title names its database."""

    def __init__(self, database: str, interval: float = 0.05) -> None:
        self.database = database.encode()
        self.interval = interval
        self._seen: dict[int, float] = {}
        self._autovacuum: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.seconds: float | None = None
        self.autovacuum_seconds: float | None = None  # the part spent by autovacuum workers
        self.own_cpu = 0.0  # this sampler's CPU, which the caller's process figures include

    def _discover(self) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) in self._seen:
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    title = f.read()
            except OSError:
                continue  # exited meanwhile
            if title.startswith(b"postgres:") and self.database in title:
                self._seen[int(entry.name)] = 0.0
                if b"autovacuum" in title:
                    self._autovacuum.add(int(entry.name))
                self._read(int(entry.name))

    def _read(self, pid: int) -> None:
        seconds = process_cpu_seconds(pid)
        if seconds is not None:  # else it exited: its last reading stands
            self._seen[pid] = seconds

    def _sample(self) -> None:
        for pid in list(self._seen):
            self._read(pid)

    def _run(self) -> None:
        # A full /proc scan finds new backends now and then; the known ones are read often.
        start = time.thread_time()
        rounds = 0
        while not self._stop.wait(self.interval):
            rounds += 1
            if rounds % 10 == 0:
                self._discover()
            self._sample()
        self.own_cpu = time.thread_time() - start

    def __enter__(self) -> BackendCpu:
        if os.path.isdir("/proc"):
            self._discover()
            self._base = dict(self._seen)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._thread.is_alive():
            return
        self._stop.set()
        self._thread.join()
        self._discover()
        self._sample()
        if self._seen:
            used = {pid: cpu - self._base.get(pid, 0.0) for pid, cpu in self._seen.items()}
            self.seconds = round(sum(used.values()), 2)
            self.autovacuum_seconds = round(sum(used[p] for p in self._autovacuum), 2)


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
    fresh_chain: bool = False,
    webhook_endpoints: int = 0,
    baseline: bool = True,
    defer_indexes_from: int | None = None,
) -> dict[str, Any]:
    settings = get_settings()
    server = database_url(settings)
    tag = uuid.uuid4().hex[:8]
    a, b = f"recchain_bench_ingest_{tag}", f"recchain_bench_copy_{tag}"
    t0 = time.perf_counter()
    tsv, n_blocks, n_events, cached = _cached_chain(events, txs_per_block, fresh_chain)
    gen_s = time.perf_counter() - t0
    url_a = _create_db(server, a)
    url_b = _create_db(server, b)
    try:
        bench_settings = Settings(database_url=SecretStr(url_a))
        cpu_s = 0.0

        async def ingest() -> float:
            async with engine_scope(url_a, pool_size=1) as engine:
                nonlocal cpu_s
                await _register_endpoints(engine, bench_settings, webhook_endpoints)
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
                    defer_indexes_from=DEFER_INDEXES_FROM
                    if defer_indexes_from is None
                    else defer_indexes_from,
                )
                cpu_s = _cpu_seconds() - cpu0
                return time.perf_counter() - start

        with BackendCpu(a) as ingest_pg:
            ingest_s = asyncio.run(ingest())
        cpu_s -= ingest_pg.own_cpu
        # The replay's high-water mark (the baseline below holds every table's dump in memory).
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        queued = _count(url_a, "webhook_events") if webhook_endpoints else 0
        copy_s: float | None = None
        copy_rows: int | None = None
        with BackendCpu(b) as copy_pg:
            if baseline:
                copy_s, copy_rows = _copy_baseline(url_a, url_b)
    finally:
        _drop_db(server, a)
        _drop_db(server, b)
    return {
        "events": n_events,
        "blocks": n_blocks,
        "metadata_jobs": metadata,
        "parse_workers": parse_workers,
        "chain_cached": cached,
        "generate_s": round(gen_s, 2),
        "ingest_s": round(ingest_s, 2),
        # The indexer's own CPU (parse workers included, PostgreSQL not): on a shared machine
        # wall clock follows the load, CPU per event does not.
        "cpu_s": round(cpu_s, 2),
        "cpu_s_per_10k_events": round(cpu_s * 10_000 / n_events, 3),
        # PostgreSQL's side (its backends' CPU, when they run on this host): with the indexer's
        # CPU this is what 2 cores must fit into.
        "pg_cpu_s": ingest_pg.seconds,
        "pg_autovacuum_cpu_s": ingest_pg.autovacuum_seconds,
        "copy_pg_cpu_s": copy_pg.seconds if baseline else None,
        "events_per_s": round(n_events / ingest_s),
        "blocks_per_s": round(n_blocks / ingest_s, 1),
        "copy_s": None if copy_s is None else round(copy_s, 2),
        "copy_rows": copy_rows,
        "ratio_to_copy": None if copy_s is None else round(copy_s / ingest_s, 3),
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "webhook_endpoints": webhook_endpoints,
        "webhook_events": queued,
    }


async def _register_endpoints(engine: Any, settings: Settings, n: int) -> None:
    """`n` endpoints subscribed to every kind (the feed's worst case: every change matches)."""
    from db.webhooks import store

    async with engine.begin() as conn:
        for i in range(n):
            await store.add_endpoint(
                conn,
                url=f"http://127.0.0.1:9/{i}",
                filters=["block", "listing", "certificate", "retirement"],
                settings=settings,
            )


def _count(url: str, table: str) -> int:
    with psycopg.connect(to_libpq_url(url)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def _cmd(args: argparse.Namespace) -> int:
    result = run(
        args.events,
        args.txs_per_block,
        args.batch,
        not args.no_metadata,
        args.parse_workers,
        args.fresh_chain,
        args.webhook_endpoints,
        not args.no_baseline,
        args.defer_indexes_from,
    )
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {value}")
    return 0


def register(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = bench_sub.add_parser("ingest", help="catch-up ingestion throughput vs plain COPY")
    p.add_argument("--events", type=int, default=100_000, help="watched events to generate")
    p.add_argument("--txs-per-block", type=int, default=10, help="transactions per block")
    p.add_argument("--batch", type=int, default=None, help="requests per transaction")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--parse-workers", type=int, default=0, help="see `recchain replay`")
    p.add_argument(
        "--defer-indexes-from",
        type=int,
        default=None,
        metavar="N",
        help="see `recchain replay` (a very large N keeps every index maintained row by row)",
    )
    p.add_argument(
        "--fresh-chain", action="store_true", help="regenerate the chain even if one is cached"
    )
    p.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the COPY baseline (it holds a dump of every table in memory: for the largest "
        "runs, which measure the cost per event as the tables grow)",
    )
    p.add_argument(
        "--no-metadata", action="store_true", help="skip metadata job enqueueing (to isolate it)"
    )
    p.add_argument(
        "--webhook-endpoints",
        type=int,
        default=0,
        help="register N webhook endpoints matching everything first (the feed's cost)",
    )
    p.set_defaults(handler=_cmd)
