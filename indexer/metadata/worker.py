"""Metadata workers: claim a batch of jobs, resolve them concurrently outside any
transaction, store the results together.

``run_workers`` is what ``recchain metadata work``, the indexer and ``recchain dev`` start.
A worker never lets one job stop it: every failure is recorded on the job with its reason.
The database cost of a batch is fixed (claim, cache lookup, REC check, two writes), so it is
shared by all its jobs; the resolver's per-host limits still bound what reaches any one host.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.outage import Outage, is_unavailable
from db.session import create_engine, database_url, session_factory
from indexer.metadata import metrics
from indexer.metadata import queue as q
from indexer.metadata.errors import MetadataError
from indexer.metadata.rec import rec_mismatches_many
from indexer.metadata.resolver import Resolution, Resolver
from indexer.metadata.sip016 import RecClaims, rec_claims
from infra.config import Settings

log = logging.getLogger(__name__)
DEPTH_SAMPLE_S = 5.0
POISON_SWEEP_S = 10.0

# A resolved document waiting for its REC check: (resolution or None if cached, cid, claims).
_Check = tuple[Resolution | None, str, RecClaims]


def _internal(job: q.Job, exc: Exception) -> MetadataError:
    log.error("metadata job %s crashed", job.id, exc_info=exc)
    return MetadataError(f"internal error: {type(exc).__name__}: {exc}", reason="internal")


class Worker:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        resolver: Resolver,
        settings: Settings,
        presence: q.Presence | None = None,
        outage: Outage | None = None,
    ) -> None:
        self.sessions = sessions
        self.resolver = resolver
        self.s = settings.metadata
        self.presence = presence
        self.outage = outage or Outage(log)
        self._last_sweep = -POISON_SWEEP_S

    async def step(self) -> int:
        """Process one batch of due jobs; the number handled (0 when none was due, or the
        number of REC checks done instead)."""
        now = time.monotonic()
        sweep = now - self._last_sweep > POISON_SWEEP_S
        owner = await self.presence.current() if self.presence is not None else None
        async with self.sessions() as session, session.begin():
            jobs = await q.claim(
                session,
                limit=self.s.batch_size,
                lease_s=self.s.lease_s,
                max_attempts=self.s.max_attempts if sweep else None,
                owner=owner,
            )
            # In the claim's transaction: no BEGIN and COMMIT of its own.
            hits = await q.cached_many(session, jobs) if jobs else {}
        if sweep:
            self._last_sweep = now
        if not jobs:
            return await self.check_cached()
        await self.process(jobs, hits)
        return len(jobs)

    async def process(
        self, jobs: list[q.Job], hits: dict[int, tuple[str, dict[str, Any]]] | None = None
    ) -> list[str]:
        """Resolve ``jobs`` concurrently and store every outcome; their statuses, in order."""
        hits = hits or {}
        started = time.monotonic()
        answers = await asyncio.gather(*(self._resolve(job, hits.get(job.id)) for job in jobs))
        outcomes: list[q.Outcome | None] = [None] * len(jobs)
        checks: dict[int, _Check] = {}
        for i, (job, answer) in enumerate(zip(jobs, answers, strict=True)):
            if isinstance(answer, MetadataError):
                outcomes[i] = self._failure(job, answer)
                continue
            resolution, cid, document = answer
            try:
                checks[i] = (resolution, cid, rec_claims(document))
            except Exception as exc:
                outcomes[i] = self._failure(job, _internal(job, exc))
        claimed_at = started
        while True:
            try:
                await self._store_batch(jobs, outcomes, checks)
                self.outage.ok()
                break
            except Exception as exc:
                if is_unavailable(exc) and time.monotonic() - claimed_at < self.s.lease_s:
                    # The results are good and the leases ours: keep them until the database
                    # is back (past the lease another worker redoes the jobs).
                    await self.outage.pause(self.outage.failed(exc, "storing metadata jobs"))
                    continue
                if is_unavailable(exc):
                    self.outage.failed(exc)
                    raise
                # One job's result the database refuses must not cost the others theirs.
                log.exception("storing %d metadata jobs together failed; one by one", len(jobs))
                for i, job in enumerate(jobs):
                    outcomes[i] = await self._store_alone(job, outcomes[i], checks.get(i))
                break
        statuses = []
        for job, outcome in zip(jobs, outcomes, strict=True):
            assert outcome is not None
            statuses.append(outcome.status)
            if outcome.status == "done":
                metrics.RESULTS.labels("done", "cached" if job.id in hits else "ok").inc()
                continue
            metrics.RESULTS.labels(outcome.status, outcome.reason).inc()
            log.info(
                "metadata job %s %s after %.2fs: %s %s",
                job.id,
                outcome.status,
                time.monotonic() - started,
                outcome.reason,
                (outcome.error or "")[:200],
            )
        return statuses

    async def _store_batch(
        self, jobs: list[q.Job], outcomes: list[q.Outcome | None], checks: dict[int, _Check]
    ) -> None:
        """The REC check and the results of a batch, in one transaction."""
        async with self.sessions() as session, session.begin():
            subjects = [
                (jobs[i].subject_kind, jobs[i].subject_id, claims)
                for i, (_, _, claims) in checks.items()
            ]
            found = await rec_mismatches_many(session, subjects)
            for (i, (resolution, cid, _)), mismatches in zip(checks.items(), found, strict=True):
                outcomes[i] = q.done(jobs[i], resolution, cid, mismatches)
            await q.finish(session, [o for o in outcomes if o is not None])

    async def _resolve(
        self, job: q.Job, hit: tuple[str, dict[str, Any]] | None
    ) -> tuple[Resolution | None, str, dict[str, Any]] | MetadataError:
        if hit is not None:
            return None, hit[0], hit[1]
        try:
            resolution = await self.resolver.resolve(job.uri)
        except MetadataError as exc:
            return exc
        except Exception as exc:  # a bug must cost one job, not the worker
            return _internal(job, exc)
        return resolution, resolution.cid, resolution.document

    def _failure(self, job: q.Job, error: MetadataError) -> q.Outcome:
        return q.failure(
            job,
            error,
            max_attempts=self.s.max_attempts,
            backoff_initial_s=self.s.backoff_initial_s,
            backoff_max_s=self.s.backoff_max_s,
        )

    async def _store_alone(
        self, job: q.Job, outcome: q.Outcome | None, check: _Check | None
    ) -> q.Outcome:
        try:
            async with self.sessions() as session, session.begin():
                if check is not None:
                    resolution, cid, claims = check
                    subject = (job.subject_kind, job.subject_id, claims)
                    (mismatches,) = await rec_mismatches_many(session, [subject])
                    outcome = q.done(job, resolution, cid, mismatches)
                assert outcome is not None
                await q.finish(session, [outcome])
            return outcome
        except Exception as exc:
            log.exception("metadata job %s could not be stored", job.id)
            failed = self._failure(job, _internal(job, exc))
            async with self.sessions() as session, session.begin():
                await q.finish(session, [failed])
            return failed

    async def check_cached(self, limit: int = 50) -> int:
        """Idle work: the REC check of jobs that enqueue completed from the cache (the chain
        rows they are checked against are committed by then)."""
        async with self.sessions() as session, session.begin():
            rows = await q.unchecked(session, limit)
            subjects = [(kind, sid, rec_claims(document)) for _, kind, sid, document in rows]
            found = await rec_mismatches_many(session, subjects)
            await q.set_rec_mismatches(
                session, [(row[0], mm) for row, mm in zip(rows, found, strict=True)]
            )
        return len(rows)

    async def loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                worked = await self.step()
                self.outage.ok()
            except Exception as exc:  # database outages: back off, one log line, never die
                await self.outage.pause(self.outage.failed(exc, "metadata worker step"), stop)
                continue
            if not worked:
                await self.outage.pause(self.s.poll_interval_s, stop)


async def _sample_depth(
    sessions: async_sessionmaker[AsyncSession], stop: asyncio.Event, outage: Outage
) -> None:
    while not stop.is_set():
        try:
            async with sessions() as session:
                counts = await q.depth(session)
            for status in ("queued", "running", "done", "failed", "permanent"):
                metrics.QUEUE_DEPTH.labels(status).set(counts.get(status, 0))
            outage.ok()
        except Exception as exc:
            outage.failed(exc, "sampling the metadata queue")
        await outage.pause(DEPTH_SAMPLE_S, stop)


async def run_workers(
    settings: Settings,
    n: int,
    stop_event: asyncio.Event,
    *,
    engine: AsyncEngine | None = None,
    outage: Outage | None = None,
) -> None:
    """Run ``n`` workers until ``stop_event`` is set. A job interrupted by the stop is taken
    again by any worker once its lease expires."""
    own_engine = engine is None
    # No pre-ping: it costs a round trip on each of a batch's two checkouts, and a dead
    # connection only fails one loop step, which the loop survives and repeats.
    eng = engine or create_engine(
        database_url(settings),
        pool_size=max(2, n + 1),
        pool_pre_ping=False,
        connect_args={"connect_timeout": 10},
    )
    sessions = session_factory(eng)
    resolver = Resolver.create(settings.metadata)
    # One presence per process: every loop's claims die with the process, together.
    presence = q.Presence(eng.url.render_as_string(hide_password=False))
    # One per process: one line per outage for all its loops.
    outage = outage or Outage(log, on_change=lambda up: metrics.DATABASE_UP.set(1 if up else 0))
    workers = [Worker(sessions, resolver, settings, presence, outage) for _ in range(max(1, n))]
    tasks = [asyncio.create_task(w.loop(stop_event)) for w in workers]
    tasks.append(asyncio.create_task(_sample_depth(sessions, stop_event, outage)))
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
        await presence.aclose()
        if own_engine:
            await eng.dispose()
