"""Metadata resolution throughput: verified CIDs/s of N workers through the database queue.

    python -m ops.bench.metadata_bench [--docs 2000] [--workers 1,4,16] [--database-url URL]

Writes `--docs` distinct SIP-016 documents (raw CIDs, ~1 KB each; every 10th a two-block
dag-pb file) into a temporary block directory, serves them with the dev gateway in its own
process on loopback, creates a scratch database migrated by Alembic, enqueues one job per
document in one transaction, then starts `run_workers` and times until every job is done.
Every block is fetched over HTTP and verified against its CID; nothing is cached between
rounds (each round uses a fresh database). Also reports enqueue rate, and the rate of
enqueues that complete on the spot from the CID cache.

The machine is usually shared, so wall clock alone misleads: each round also reports this
process's CPU time per job (workers and resolver; the gateway runs elsewhere) and the database
round trips per job (statements, BEGIN, COMMIT and ROLLBACK the workers sent), with the load
average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from sqlalchemy import event, make_url, text
from sqlalchemy.engine import Engine

from db.migrate import upgrade
from db.session import create_engine, database_url, session_factory, to_libpq_url
from indexer.metadata import queue as q
from indexer.metadata.cid import raw_cid
from indexer.metadata.dagpb import build_file
from indexer.metadata.resolver import Resolver
from indexer.metadata.worker import run_workers
from infra.config import MetadataSettings, Settings, get_settings
from ops.bench.e2e import free_port


class _RoundTrips:
    """Counts what goes over the wire: statements, BEGIN, COMMIT and ROLLBACK."""

    def __init__(self, engine: Engine) -> None:
        self.n = 0
        for name in ("before_cursor_execute", "begin", "commit", "rollback"):
            event.listen(engine, name, self._hit)

    def _hit(self, *_args: object, **_kw: object) -> None:
        self.n += 1


def _write_docs(root: Path, n: int) -> list[str]:
    uris = []
    for i in range(n):
        doc = {
            "sip": 16,
            "name": f"REC bench #{i}",
            "description": "x" * 800,
            "attributes": [{"trait_type": "wh", "value": 1000 + i}],
        }
        raw = json.dumps(doc).encode()
        if i % 10 == 0:
            dag = build_file(raw + b" " * 300_000)  # two chunks: root + 2 leaves
            for key, block in dag.blocks.items():
                (root / key).write_bytes(block)
            uris.append(f"ipfs://{dag.root}")
        else:
            cid = raw_cid(raw)
            (root / cid.key).write_bytes(raw)
            uris.append(f"ipfs://{cid}")
    return uris


async def _round(server_url: str, settings: Settings, uris: list[str], workers: int) -> dict:
    name = f"recchain_mbench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(to_libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(upgrade, url)
        engine = create_engine(url, pool_size=workers + 2, pool_pre_ping=False)
        sessions = session_factory(engine)
        started = time.perf_counter()
        async with sessions() as s, s.begin():
            for i, uri in enumerate(uris):
                await q.enqueue(s, uri, "certificate", i)
        enqueue_s = time.perf_counter() - started

        # The progress poll has its own engine so that only the workers' traffic is counted.
        poll = create_engine(url, pool_size=1, pool_pre_ping=False)
        trips = _RoundTrips(engine.sync_engine)
        stop = asyncio.Event()
        started = time.perf_counter()
        cpu_started = time.process_time()
        task = asyncio.create_task(run_workers(settings, workers, stop, engine=engine))
        while True:
            await asyncio.sleep(0.05)
            async with poll.connect() as c:
                left = (
                    await c.execute(
                        text("SELECT count(*) FROM metadata_jobs WHERE status <> 'done'")
                    )
                ).scalar_one()
            if left == 0:
                break
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        round_trips = trips.n
        stop.set()
        await task
        await poll.dispose()

        started = time.perf_counter()
        async with sessions() as s, s.begin():
            for i, uri in enumerate(uris):
                await q.enqueue(s, uri, "facility", i)  # same content, new subjects: cache hits
        cached_s = time.perf_counter() - started
        async with sessions() as s:
            done = (
                await s.execute(text("SELECT count(*) FROM metadata_jobs WHERE status = 'done'"))
            ).scalar_one()
        await engine.dispose()
        return {
            "workers": workers,
            "cids_per_s": len(uris) / elapsed,
            "seconds": elapsed,
            "cpu_ms_per_job": 1000 * cpu / len(uris),
            "round_trips_per_job": round_trips / len(uris),
            "enqueue_per_s": len(uris) / enqueue_s,
            "cached_enqueue_per_s": len(uris) / cached_s,
            "done": done,
        }
    finally:
        with psycopg.connect(to_libpq_url(server_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _resolver_only(md: MetadataSettings, uris: list[str], concurrency: int) -> float:
    """The same fetch-and-verify path without the queue, to separate HTTP from database."""
    resolver = Resolver.create(md)
    sem = asyncio.Semaphore(concurrency)

    async def one(uri: str) -> None:
        async with sem:
            await resolver.resolve(uri)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(one(u) for u in uris))
        return len(uris) / (time.perf_counter() - started)
    finally:
        await resolver.aclose()


async def _main(args: argparse.Namespace) -> int:
    base = get_settings()
    server_url = args.database_url or database_url(base)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        uris = _write_docs(root, args.docs)
        port = free_port()
        # Its own process, so serving does not compete with the workers for one GIL.
        gw = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "indexer.metadata.devgateway",
            "--dir",
            tmp,
            "--port",
            str(port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            gw_url = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient() as client:
                for _ in range(100):
                    try:
                        await client.get(f"{gw_url}/_dev/hits", timeout=1)
                        break
                    except httpx.HTTPError:
                        await asyncio.sleep(0.1)
            md = base.metadata.model_copy(
                update={
                    "gateways": [gw_url],
                    "kubo_rpc_url": None,
                    "poll_interval_s": 0.05,
                    "per_host_concurrency": 64,
                    "per_host_rate_per_s": 100_000.0,
                }
            )
            settings = base.model_copy(update={"metadata": md})
            print(f"{args.docs} documents ({args.docs // 10} of them 3-block dag-pb files)")
            for n in args.workers:
                rate = await _resolver_only(md, uris, n)
                print(f"resolver alone, {n:>2} concurrent: {rate:6.0f} CIDs/s (no database)")
            print(f"load average at start: {os.getloadavg()[0]:.2f}")
            print("workers  CIDs/s  seconds  CPU ms/job  DB trips/job  enqueue/s  cached-enqueue/s")
            for n in args.workers:
                r = await _round(server_url, settings, uris, n)
                assert r["done"] == 2 * len(uris), r
                print(
                    f"{r['workers']:>7}  {r['cids_per_s']:6.0f}  {r['seconds']:7.2f}  "
                    f"{r['cpu_ms_per_job']:10.2f}  {r['round_trips_per_job']:12.2f}  "
                    f"{r['enqueue_per_s']:9.0f}  {r['cached_enqueue_per_s']:16.0f}  "
                    f"(load {os.getloadavg()[0]:.2f})"
                )
        finally:
            gw.terminate()
            await gw.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ops.bench.metadata_bench")
    p.add_argument("--docs", type=int, default=2000)
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16])
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    return asyncio.run(_main(p.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
