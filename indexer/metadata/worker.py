"""Metadata workers: claim a job, resolve outside any transaction, store the result.

``run_workers`` is what ``recchain metadata work``, the indexer and ``recchain dev`` start.
A worker never lets one job stop it: every failure is recorded on the job with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.session import create_engine, database_url, session_factory
from indexer.metadata import metrics
from indexer.metadata import queue as q
from indexer.metadata.errors import MetadataError
from indexer.metadata.rec import rec_mismatches
from indexer.metadata.resolver import Resolver
from recchain.config import Settings

log = logging.getLogger(__name__)
DEPTH_SAMPLE_S = 5.0
POISON_SWEEP_S = 10.0


class Worker:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], resolver: Resolver, settings: Settings
    ) -> None:
        self.sessions = sessions
        self.resolver = resolver
        self.s = settings.metadata
        self._last_sweep = -POISON_SWEEP_S

    async def step(self) -> bool:
        """Process one due job; False when none was due."""
        now = time.monotonic()
        sweep = now - self._last_sweep > POISON_SWEEP_S
        async with self.sessions() as session, session.begin():
            jobs = await q.claim(
                session,
                limit=1,
                lease_s=self.s.lease_s,
                max_attempts=self.s.max_attempts if sweep else None,
            )
            # Looked up in the claim's transaction: one round trip fewer per job.
            hit = await q.cached(session, jobs[0].uri) if jobs else None
        if sweep:
            self._last_sweep = now
        if not jobs:
            return await self.check_cached()
        await self.process(jobs[0], hit)
        return True

    async def process(self, job: q.Job, hit: tuple[str, dict[str, Any]] | None = None) -> str:
        started = time.monotonic()
        try:
            resolution = None
            if hit is not None:
                cid, document = hit
            else:
                resolution = await self.resolver.resolve(job.uri)
                cid, document = resolution.cid, resolution.document
            async with self.sessions() as session, session.begin():
                mismatches = await rec_mismatches(
                    session, job.subject_kind, job.subject_id, document
                )
                await q.complete(session, job, resolution, cid, mismatches)
            metrics.RESULTS.labels("done", "cached" if hit else "ok").inc()
            return "done"
        except MetadataError as exc:
            error = exc
        except Exception as exc:  # a bug must cost one job, not the worker
            log.exception("metadata job %s crashed", job.id)
            error = MetadataError(f"internal error: {type(exc).__name__}: {exc}", reason="internal")
        async with self.sessions() as session, session.begin():
            status = await q.fail(
                session,
                job,
                error,
                max_attempts=self.s.max_attempts,
                backoff_initial_s=self.s.backoff_initial_s,
                backoff_max_s=self.s.backoff_max_s,
            )
        metrics.RESULTS.labels(status, error.reason).inc()
        log.info(
            "metadata job %s %s after %.2fs: %s %s",
            job.id,
            status,
            time.monotonic() - started,
            error.reason,
            error.message[:200],
        )
        return status

    async def check_cached(self, limit: int = 50) -> bool:
        """Idle work: the REC check of jobs that enqueue completed from the cache (the chain
        rows they are checked against are committed by then)."""
        async with self.sessions() as session, session.begin():
            rows = await q.unchecked(session, limit)
            for job_id, kind, subject_id, document in rows:
                mismatches = await rec_mismatches(session, kind, subject_id, document)
                await q.set_rec_mismatches(session, job_id, mismatches)
        return bool(rows)

    async def loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                worked = await self.step()
            except Exception:  # database hiccups: back off, never die
                log.exception("metadata worker step failed")
                worked = False
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.s.poll_interval_s)


async def _sample_depth(sessions: async_sessionmaker[AsyncSession], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            async with sessions() as session:
                counts = await q.depth(session)
            for status in ("queued", "running", "done", "failed", "permanent"):
                metrics.QUEUE_DEPTH.labels(status).set(counts.get(status, 0))
        except Exception:
            log.exception("sampling metadata queue depth failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), DEPTH_SAMPLE_S)


async def run_workers(
    settings: Settings, n: int, stop_event: asyncio.Event, *, engine: AsyncEngine | None = None
) -> None:
    """Run ``n`` workers until ``stop_event`` is set. A job interrupted by the stop is taken
    again by any worker once its lease expires."""
    own_engine = engine is None
    # No pre-ping: it costs a round trip on each of a job's three checkouts, and a dead
    # connection only fails one loop step, which the loop survives and repeats.
    eng = engine or create_engine(
        database_url(settings), pool_size=max(2, n + 1), pool_pre_ping=False
    )
    sessions = session_factory(eng)
    resolver = Resolver.create(settings.metadata)
    workers = [Worker(sessions, resolver, settings) for _ in range(max(1, n))]
    tasks = [asyncio.create_task(w.loop(stop_event)) for w in workers]
    tasks.append(asyncio.create_task(_sample_depth(sessions, stop_event)))
    try:
        await stop_event.wait()
        _done, pending = await asyncio.wait(tasks, timeout=settings.metadata.total_timeout_s)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        for t in tasks:
            t.cancel()
        await resolver.aclose()
        if own_engine:
            await eng.dispose()
