"""Batched claims and completions against a real PostgreSQL and the dev gateway."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import SecretStr
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.session import session_factory
from indexer.metadata import queue as q
from indexer.metadata.devgateway import RunningGateway
from indexer.metadata.resolver import Resolution, Resolver
from indexer.metadata.worker import Worker
from infra.config import MetadataSettings, Settings
from tests.metadata.conftest import Store, fast_settings


async def _jobs(sessions: async_sessionmaker[AsyncSession]) -> dict[str, dict[str, Any]]:
    async with sessions() as s:
        rows = (await s.execute(text("SELECT * FROM metadata_jobs ORDER BY id"))).mappings()
        return {r["uri"]: dict(r) for r in rows}


async def _enqueue(sessions: async_sessionmaker[AsyncSession], *uris: str) -> None:
    async with sessions() as s, s.begin():
        for i, uri in enumerate(uris):
            await q.enqueue(s, uri, "certificate", i + 1)


def _worker(
    sessions: async_sessionmaker[AsyncSession], resolver: Resolver, md: MetadataSettings
) -> Worker:
    return Worker(sessions, resolver, Settings(database_url=SecretStr("x"), metadata=md))


async def test_one_batch_stores_every_kind_of_outcome_in_a_fixed_number_of_statements(
    engine: AsyncEngine, store: Store, gw: RunningGateway
) -> None:
    sessions = session_factory(engine)
    good = [store.doc(name=f"batch {i}") for i in range(8)]
    broken = store.doc(name="always 500")
    gw.gateway.set_behaviour(broken.key, "error500")
    bad_doc = store.raw(b'{"sip": 15, "name": "old"}')
    # Two subjects naming one URI: the cache is written once for both.
    uris = [f"ipfs://{c}" for c in (*good, broken, bad_doc)]
    await _enqueue(sessions, *uris)
    async with sessions() as s, s.begin():
        await q.enqueue(s, uris[0], "facility", 5)
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    md = fast_settings(gw.url, batch_size=32, backoff_initial_s=60, backoff_max_s=120)
    resolver = Resolver.create(md)
    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        handled = await _worker(sessions, resolver, md).step()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
        await resolver.aclose()
    assert handled == 11
    # poison sweep, claim, cache lookup, REC check (certificates, facilities), cache, jobs
    assert len(statements) <= 7, statements
    jobs = await _jobs(sessions)
    for subject, c in enumerate(good[1:], start=2):  # good[0]'s row here is the facility's
        job = jobs[f"ipfs://{c}"]
        assert job["status"] == "done" and job["cid"] == c.key and job["attempts"] == 1
        # No such certificate on chain: the REC check of each job reached the database.
        assert job["rec_mismatches"] == {"subject": {"document": subject, "chain": None}}
    failed = jobs[f"ipfs://{broken}"]
    assert failed["status"] == "failed" and failed["last_reason"] == "http_status"
    assert failed["finished_at"] is None and failed["lease_token"] is None
    assert (failed["next_attempt_at"] - failed["updated_at"]).total_seconds() >= 59
    assert jobs[f"ipfs://{bad_doc}"]["status"] == "permanent"
    assert jobs[f"ipfs://{bad_doc}"]["last_reason"] == "schema"
    async with sessions() as s:
        both = (
            await s.execute(
                text("SELECT status, cid FROM metadata_resolved WHERE uri = :u"), {"u": uris[0]}
            )
        ).all()
    assert sorted(both) == [("done", good[0].key), ("done", good[0].key)]


async def test_jobs_of_a_crashed_batch_are_retried_alone(engine: AsyncEngine) -> None:
    """A batch whose worker died may hold a poison job: each of its jobs is claimed alone
    next time, so the innocent ones are not charged an attempt for every crash."""
    sessions = session_factory(engine)
    await _enqueue(sessions, *(f"data:,{i}" for i in range(4)))
    async with sessions() as s, s.begin():
        assert len(await q.claim(s, limit=10, lease_s=0.01)) == 4
    await asyncio.sleep(0.05)
    sizes = []
    for _ in range(5):
        async with sessions() as s, s.begin():
            sizes.append(len(await q.claim(s, limit=10, lease_s=30, max_attempts=5)))
    assert sizes == [1, 1, 1, 1, 0]


async def test_a_batch_with_a_lost_lease_writes_only_what_it_still_holds(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)
    await _enqueue(sessions, "data:,kept", "data:,lost")
    async with sessions() as s, s.begin():
        kept, lost = sorted(await q.claim(s, limit=2, lease_s=30), key=lambda j: j.uri)
    async with sessions() as s, s.begin():
        # The lease of one job expired and another worker took it over.
        await s.execute(
            text("UPDATE metadata_jobs SET lease_token = 'successor' WHERE id = :id"),
            {"id": lost.id},
        )
    doc = {"sip": 16, "name": "late"}
    outcomes = [
        q.done(job, Resolution(job.uri, doc, f"cid-{job.id}", 10, "data-uri"), f"cid-{job.id}", {})
        for job in (kept, lost)
    ]
    async with sessions() as s, s.begin():
        assert await q.finish(s, outcomes) == {kept.id}
    jobs = await _jobs(sessions)
    assert jobs["data:,kept"]["status"] == "done"
    assert jobs["data:,lost"]["status"] == "running"
    assert jobs["data:,lost"]["lease_token"] == "successor"


async def test_a_result_the_database_refuses_costs_only_its_own_job(
    engine: AsyncEngine, store: Store, gw: RunningGateway
) -> None:
    sessions = session_factory(engine)
    good = [store.doc(name=f"neighbour {i}") for i in range(3)]
    # Valid JSON that jsonb cannot store: the batch write fails, the jobs are stored alone.
    nul = store.raw(b'{"sip": 16, "name": "a\\u0000b"}')
    await _enqueue(sessions, *(f"ipfs://{c}" for c in (*good, nul)))
    md = fast_settings(gw.url, batch_size=8)
    resolver = Resolver.create(md)
    try:
        assert await _worker(sessions, resolver, md).step() == 4
    finally:
        await resolver.aclose()
    jobs = await _jobs(sessions)
    assert [jobs[f"ipfs://{c}"]["status"] for c in good] == ["done"] * 3
    refused = jobs[f"ipfs://{nul}"]
    assert refused["status"] == "failed" and refused["last_reason"] == "internal"
