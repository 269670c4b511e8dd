"""Two real `recchain metadata work` processes share the queue; one is killed with SIGKILL while
it resolves: no job is lost, and the dead one's jobs are taken over long before their lease
(120 s, the default) would have let anyone else have them.

The gateway is the dev gateway (in this process) answering every request after a delay, so the
killed process has jobs in flight."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.session import session_factory
from indexer.metadata import queue as q
from indexer.metadata.devgateway import RunningGateway
from infra.config import PROJECT_ROOT
from tests.metadata.conftest import Store
from tests.writers.processes import free_port, wait_for

JOBS = 24
LEASE_S = 120.0


@asynccontextmanager
async def worker_process(db_url: str, gateway: str) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECCHAIN_")}
    env.pop("DATABASE_URL", None)
    env.update(
        RECCHAIN_DATABASE_URL=db_url,
        RECCHAIN_LOG_LEVEL="WARNING",
        RECCHAIN_METADATA__GATEWAYS=json.dumps([gateway]),
        RECCHAIN_METADATA__BATCH_SIZE="4",
        RECCHAIN_METADATA__POLL_INTERVAL_S="0.2",
        RECCHAIN_METADATA__LEASE_S=str(LEASE_S),
        RECCHAIN_METADATA__METRICS_PORT=str(free_port()),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recchain.cli", "metadata", "work", "--workers", "2",
        cwd=PROJECT_ROOT, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def owned_by(engine: AsyncEngine, pid: int) -> set[int]:
    """Running jobs whose lease owner is the presence lock held by process `pid`."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                """
                SELECT j.id FROM metadata_jobs j
                JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                     AND l.classid::bigint = :c AND l.objid::bigint = j.lease_owner
                JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE j.status = 'running' AND a.application_name LIKE :label
                """
            ),
            {"c": q.OWNER_LOCK_CLASS, "label": f"recchain-metadata:%:{pid}"},
        )
        return {int(r.id) for r in rows}


async def jobs(engine: AsyncEngine) -> dict[int, tuple[str, int | None, int, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT id, status, lease_owner, attempts, last_reason FROM metadata_jobs")
        )
        return {int(r.id): (r.status, r.lease_owner, r.attempts, r.last_reason) for r in rows}


async def test_a_killed_worker_loses_no_job_and_its_jobs_are_taken_over(
    db_url: str, engine: AsyncEngine, store: Store, gw: RunningGateway
) -> None:
    gw.gateway.set_behaviour(None, "slow", delay_s=1.5)
    sessions = session_factory(engine)
    async with sessions() as s, s.begin():
        for i in range(JOBS):
            await q.enqueue(s, f"ipfs://{store.doc(name=f'failover {i}')}", "certificate", i)
    async with (
        worker_process(db_url, gw.url) as first,
        worker_process(db_url, gw.url) as second,
    ):
        in_flight: set[int] = set()

        async def first_holds_jobs() -> bool:
            nonlocal in_flight
            in_flight = await owned_by(engine, first.pid)
            return bool(in_flight) and bool(await owned_by(engine, second.pid))

        await wait_for(first_holds_jobs, "both workers to hold jobs", 120)
        os.kill(first.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        await first.wait()
        orphans = in_flight | await owned_by(engine, first.pid)  # nothing new after the kill
        dead_owner = (await jobs(engine))[next(iter(orphans))][1]

        taken_over: float | None = None
        first_taken: float | None = None

        async def all_finished() -> bool:
            nonlocal taken_over, first_taken
            now = await jobs(engine)
            if first_taken is None and any(now[i][1] != dead_owner for i in orphans):
                first_taken = time.monotonic() - killed_at
            if taken_over is None and all(now[i][1] != dead_owner for i in orphans):
                taken_over = time.monotonic() - killed_at
            return all(status in ("done", "permanent") for status, *_ in now.values())

        await wait_for(all_finished, "every job to finish", 300)
        finished_at = time.monotonic() - killed_at
    final = await jobs(engine)
    assert len(final) == JOBS
    assert {status for status, *_ in final.values()} == {"done"}, final
    assert taken_over is not None
    # Reclaimed because the owner's lock vanished, not because the lease ran out.
    assert taken_over < LEASE_S / 2, taken_over
    for job_id in orphans:
        assert final[job_id][2] >= 2, (job_id, final[job_id])  # claimed again after the kill
    print(
        f"\nmetadata failover: {len(orphans)} jobs in flight at kill -9; the first taken over"
        f" {first_taken or 0:.2f} s, all {taken_over:.2f} s (each alone: it may be what killed"
        f" its worker) and every job done {finished_at:.2f} s after the kill"
    )
