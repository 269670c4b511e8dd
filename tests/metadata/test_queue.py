"""The job queue and workers against a real, migrated PostgreSQL and the dev gateway."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.models import Certificate, Facility
from db.session import session_factory
from indexer.metadata import metrics
from indexer.metadata import queue as q
from indexer.metadata.devgateway import RunningGateway
from indexer.metadata.resolver import Resolver
from indexer.metadata.worker import Worker, run_workers
from infra.config import MetadataSettings, Settings
from tests.metadata.conftest import Store, fast_settings

START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2024, 2, 1, tzinfo=UTC)
REC_OF_3 = text("SELECT rec_mismatches FROM metadata_jobs WHERE subject_id = 3")
HW = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"


async def _jobs(sessions: async_sessionmaker[AsyncSession]) -> dict[str, dict[str, Any]]:
    async with sessions() as s:
        rows = (await s.execute(text("SELECT * FROM metadata_jobs ORDER BY id"))).mappings()
        return {r["uri"]: dict(r) for r in rows}


async def _enqueue(sessions: async_sessionmaker[AsyncSession], *uris: str) -> None:
    async with sessions() as s, s.begin():
        for i, uri in enumerate(uris):
            await q.enqueue(s, uri, "certificate", i + 1)


async def _drain(worker: Worker, limit: int = 50) -> int:
    """Jobs handled until none is due (a step handles a whole batch)."""
    n = 0
    while n < limit and (handled := await worker.step()):
        n += handled
    return n


def _settings(db_url: str, md: MetadataSettings) -> Settings:
    return Settings(database_url=SecretStr(db_url), metadata=md)


async def test_enqueue_is_idempotent_and_bad_uris_are_recorded(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    async with sessions() as s, s.begin():
        first = await q.enqueue(
            s,
            "ipfs://bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e",
            "certificate",
            1,
        )
        again = await q.enqueue(
            s,
            "ipfs://bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e",
            "certificate",
            1,
        )
        bad = await q.enqueue(s, "ipfs://nonsense", "certificate", 2)
    assert first is not None and first[1] == "queued"
    assert again is None
    assert bad is not None and bad[1] == "permanent"
    jobs = await _jobs(sessions)
    assert jobs["ipfs://nonsense"]["last_reason"] == "bad_uri"
    assert len(jobs) == 2


async def test_worker_resolves_and_a_cached_cid_completes_at_enqueue(
    engine: AsyncEngine, store: Store, gw: RunningGateway
) -> None:
    sessions = session_factory(engine)
    cid = store.doc(name="queued doc")
    await _enqueue(sessions, f"ipfs://{cid}")
    resolver = Resolver.create(fast_settings(gw.url))
    try:
        worker = Worker(sessions, resolver, _settings("x", fast_settings(gw.url)))
        assert await _drain(worker) == 1
    finally:
        await resolver.aclose()
    job = (await _jobs(sessions))[f"ipfs://{cid}"]
    assert job["status"] == "done" and job["cid"] == cid.key and job["attempts"] == 1
    # Another subject naming the same content (another URI form): done without any fetch.
    hits = gw.gateway.hits[cid.key]
    async with sessions() as s, s.begin():
        created = await q.enqueue(s, f"ipfs://ipfs/{cid}", "certificate", 99)
    assert created is not None and created[1] == "done"
    assert gw.gateway.hits[cid.key] == hits
    async with sessions() as s:
        view = (
            (await s.execute(text("SELECT * FROM metadata_resolved WHERE subject_id = 99")))
            .mappings()
            .one()
        )
    assert view["document"]["name"] == "queued doc" and view["cid"] == cid.key


async def test_misbehaving_content_fails_alone_and_other_jobs_go_on(
    engine: AsyncEngine, store: Store, gw: RunningGateway
) -> None:
    sessions = session_factory(engine)
    good = [store.doc(name=f"good {i}") for i in range(5)]
    tampered = store.doc(name="tampered")
    dripping = store.doc(name="drip")
    bomb = store.raw(b"[" * 50_000 + b"]" * 50_000)
    gw.gateway.set_behaviour(tampered.key, "wrong_bytes")
    gw.gateway.set_behaviour(dripping.key, "drip")
    uris = [f"ipfs://{c}" for c in (tampered, dripping, bomb, *good)]
    await _enqueue(sessions, *uris)
    mismatch_before = metrics.RESULTS.labels("failed", "hash_mismatch")._value.get()
    source = gw.url.split("//")[1]
    bad_blocks_before = metrics.MISMATCHES.labels(source)._value.get()
    md = fast_settings(
        gw.url, request_timeout_s=2.0, total_timeout_s=3.0, backoff_initial_s=60, backoff_max_s=120
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_workers(_settings("x", md), 3, stop, engine=engine))
    for _ in range(200):
        jobs = await _jobs(sessions)
        if all(j["status"] not in ("queued", "running") for j in jobs.values()):
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    jobs = await _jobs(sessions)
    for c in good:
        assert jobs[f"ipfs://{c}"]["status"] == "done", jobs[f"ipfs://{c}"]["last_error"]
    assert jobs[f"ipfs://{tampered}"]["status"] == "failed"
    assert jobs[f"ipfs://{tampered}"]["last_reason"] == "hash_mismatch"
    assert jobs[f"ipfs://{dripping}"]["last_reason"] == "timeout"
    assert jobs[f"ipfs://{bomb}"]["status"] == "permanent"
    assert jobs[f"ipfs://{bomb}"]["last_reason"] == "json_bomb"
    assert metrics.RESULTS.labels("failed", "hash_mismatch")._value.get() == mismatch_before + 1
    assert metrics.MISMATCHES.labels(source)._value.get() == bad_blocks_before + 1


async def test_429_blocks_the_host_other_jobs_use_the_next_gateway(
    engine: AsyncEngine, store: Store, gw: RunningGateway, gw2: RunningGateway
) -> None:
    sessions = session_factory(engine)
    limited = store.doc(name="limited")
    good = [store.doc(name=f"fine {i}") for i in range(4)]
    gw.gateway.set_behaviour(limited.key, "rate_limit", retry_after=30)
    await _enqueue(sessions, f"ipfs://{limited}", *(f"ipfs://{c}" for c in good))
    # One job at a time, so that "after the 429" is well defined: jobs of one batch are
    # resolved concurrently and may reach the host before its answer does.
    md = fast_settings(gw.url, gw2.url, batch_size=1)
    resolver = Resolver.create(md)
    try:
        assert await _drain(Worker(sessions, resolver, _settings("x", md))) == 5
    finally:
        await resolver.aclose()
    jobs = await _jobs(sessions)
    assert {j["status"] for j in jobs.values()} == {"done"}
    # Once told to wait, the limited host was not asked for anything else.
    assert all(gw.gateway.hits[c.key] == 0 for c in good)
    assert gw2.gateway.hits[limited.key] >= 1

    # With no other gateway, the job fails and its next attempt waits as long as asked.
    refresh = store.doc(name="limited too")
    gw.gateway.set_behaviour(refresh.key, "rate_limit", retry_after=30)
    await _enqueue(sessions, f"ipfs://{refresh}")
    md1 = fast_settings(gw.url)
    resolver = Resolver.create(md1)
    try:
        await _drain(Worker(sessions, resolver, _settings("x", md1)))
    finally:
        await resolver.aclose()
    lim = (await _jobs(sessions))[f"ipfs://{refresh}"]
    assert lim["status"] == "failed" and lim["last_reason"] == "rate_limited"
    assert (lim["next_attempt_at"] - lim["updated_at"]).total_seconds() >= 29


async def test_failures_back_off_then_become_permanent_and_retry_revives(
    engine: AsyncEngine, store: Store, gw: RunningGateway
) -> None:
    sessions = session_factory(engine)
    cid = store.doc(name="always 500")
    gw.gateway.set_behaviour(cid.key, "error500")
    await _enqueue(sessions, f"ipfs://{cid}")
    md = fast_settings(gw.url, max_attempts=3, backoff_initial_s=0.01, backoff_max_s=0.02)
    resolver = Resolver.create(md)
    worker = Worker(sessions, resolver, _settings("x", md))
    try:
        statuses = []
        for _ in range(3):
            await asyncio.sleep(0.1)  # past the (tiny) backoff
            assert await worker.step()
            statuses.append((await _jobs(sessions))[f"ipfs://{cid}"]["status"])
        assert statuses == ["failed", "failed", "permanent"]
        job = (await _jobs(sessions))[f"ipfs://{cid}"]
        assert job["attempts"] == 3 and job["last_reason"] == "http_status"
        await asyncio.sleep(0.1)
        assert await _drain(worker) == 0  # permanent jobs are left alone
        gw.gateway.set_behaviour(cid.key, "ok")
        async with sessions() as s, s.begin():
            assert await q.retry(s, job_id=job["id"]) == 1
        assert await _drain(worker) == 1
        assert (await _jobs(sessions))[f"ipfs://{cid}"]["status"] == "done"
    finally:
        await resolver.aclose()


def test_backoff_grows_exponentially_with_jitter() -> None:
    waits = [q.backoff_seconds(n, 1.0, 1000.0) for n in range(1, 8)]
    for n, w in enumerate(waits, start=1):
        assert 2 ** (n - 1) <= w <= 2 ** (n - 1) + 1.0
    assert q.backoff_seconds(50, 1.0, 60.0) <= 61.0


async def test_a_job_whose_worker_died_is_taken_again_after_its_lease(
    engine: AsyncEngine, store: Store, gw: RunningGateway
) -> None:
    sessions = session_factory(engine)
    cid = store.doc(name="orphaned")
    await _enqueue(sessions, f"ipfs://{cid}")
    async with sessions() as s, s.begin():
        (lost,) = await q.claim(s, limit=1, lease_s=0.2, max_attempts=5)
    # The claimant "dies" here. Until the lease runs out nobody else may take the job.
    async with sessions() as s, s.begin():
        assert await q.claim(s, limit=1, lease_s=30, max_attempts=5) == []
    await asyncio.sleep(0.3)
    md = fast_settings(gw.url)
    resolver = Resolver.create(md)
    try:
        assert await _drain(Worker(sessions, resolver, _settings("x", md))) == 1
    finally:
        await resolver.aclose()
    job = (await _jobs(sessions))[f"ipfs://{cid}"]
    assert job["status"] == "done" and job["attempts"] == 2
    # The dead worker's late answer cannot overwrite the result.
    async with sessions() as s, s.begin():
        assert not await q.complete(s, lost, None, cid.key, None)


async def test_skip_locked_claims_are_disjoint(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    await _enqueue(sessions, *(f"data:,{i}" for i in range(20)))

    async def claim() -> list[int]:
        async with sessions() as s, s.begin():
            jobs = await q.claim(s, limit=4, lease_s=30, max_attempts=5)
            await asyncio.sleep(0.05)  # hold the row locks while the others claim
            return [j.id for j in jobs]

    batches = await asyncio.gather(*(claim() for _ in range(5)))
    ids = [i for b in batches for i in b]
    assert len(ids) == 20 and len(set(ids)) == 20


async def test_rec_attributes_checked_against_the_chain(
    engine: AsyncEngine, store: Store, gw: RunningGateway
) -> None:
    sessions = session_factory(engine)
    async with sessions() as s, s.begin():
        s.add(
            Facility(
                facility_id=7,
                owner="ST1",
                name="Sunny",
                country="DE",
                energy_source="ES100",
                status="active",
                registered_height=1,
                block_from=1,
            )
        )
        for token, wh in ((1, 1_000_000), (2, 1_000_000)):
            s.add(
                Certificate(
                    token_id=token,
                    facility_id=7,
                    owner="ST1",
                    status="active",
                    period_start=START,
                    period_end=END,
                    vintage=2024,
                    wh=wh,
                    serial_start=0,
                    serial_end=wh,
                    issued_height=2,
                    block_from=2,
                )
            )
    props = {
        "facility_id": 7,
        "period_start": int(START.timestamp()),
        "period_end": int(END.timestamp()),
        "energy_wh": 1_000_000,
        "country": "DE",
    }
    honest = store.doc(
        name="honest",
        properties=props,
        attributes=[{"trait_type": "Energy Source", "value": "ES100"}],
    )
    liar = store.doc(
        name="liar",
        properties={**props, "energy_wh": 9_000_000},
        attributes=[{"trait_type": "Energy Source", "value": "ES200"}],
    )
    async with sessions() as s, s.begin():
        await q.enqueue(s, f"ipfs://{honest}", "certificate", 1)
        await q.enqueue(s, f"ipfs://{liar}", "certificate", 2)
    md = fast_settings(gw.url)
    resolver = Resolver.create(md)
    try:
        assert await _drain(Worker(sessions, resolver, _settings("x", md))) == 2
    finally:
        await resolver.aclose()
    jobs = await _jobs(sessions)
    assert jobs[f"ipfs://{honest}"]["rec_mismatches"] == {}
    liar_job = jobs[f"ipfs://{liar}"]
    assert liar_job["status"] == "done"  # flagged, not fatal
    expected = {
        "wh": {"document": 9_000_000, "chain": 1_000_000},
        "energy_source": {"document": "ES200", "chain": "ES100"},
    }
    assert liar_job["rec_mismatches"] == expected
    before = metrics.RESULTS.labels("done", "ok")._value.get()

    # The same document for another certificate completes from the cache at enqueue; the
    # REC check follows when a worker is idle.
    async with sessions() as s, s.begin():
        s.add(
            Certificate(
                token_id=3,
                facility_id=7,
                owner="ST1",
                status="active",
                period_start=START,
                period_end=END,
                vintage=2024,
                wh=1_000_000,
                serial_start=0,
                serial_end=1_000_000,
                issued_height=3,
                block_from=3,
            )
        )
        created = await q.enqueue(s, f"ipfs://{liar}", "certificate", 3)
    assert created is not None and created[1] == "done"
    async with sessions() as s:
        row = (
            await s.execute(text("SELECT rec_mismatches FROM metadata_jobs WHERE subject_id = 3"))
        ).one()
    assert row.rec_mismatches is None
    resolver = Resolver.create(md)
    try:
        worker = Worker(sessions, resolver, _settings("x", md))
        assert await worker.step() == 1  # no due job: it did the idle REC check
        assert await worker.step() == 0
    finally:
        await resolver.aclose()
    async with sessions() as s:
        row = (
            await s.execute(text("SELECT rec_mismatches FROM metadata_jobs WHERE subject_id = 3"))
        ).one()
    assert row.rec_mismatches == expected
    assert metrics.RESULTS.labels("done", "ok")._value.get() == before


async def test_sip019_refresh_requeues_and_refetches_mutable_urls(
    engine: AsyncEngine, store: Store, gw: RunningGateway
) -> None:
    sessions = session_factory(engine)
    host = gw.url.split("//")[1].split(":")[0]
    v1 = store.doc(name="version 1")
    v2 = store.doc(name="version 2")
    url = f"{gw.url}/_dev/web/{v1}"
    async with sessions() as s, s.begin():
        await q.enqueue(s, url, "facility", 7)
    md = fast_settings(gw.url, allow_https=True, https_allowed_hosts=[host])
    resolver = Resolver.create(md)
    worker = Worker(sessions, resolver, _settings("x", md))
    try:
        await _drain(worker)
        assert (await _jobs(sessions))[url]["cid"] == v1.key
        # The "mutable" URL now serves other content (the test rewrites the file behind it).
        (store.root / v1.key).write_bytes((store.root / v2.key).read_bytes())
        async with sessions() as s, s.begin():
            assert await q.requeue_for_refresh(s, "facility", [7]) == 1
            assert await q.requeue_for_refresh(s, "facility", [8]) == 0
        assert await _drain(worker) == 1
        async with sessions() as s:
            doc = (
                await s.execute(text("SELECT document FROM metadata_resolved WHERE subject_id = 7"))
            ).scalar_one()
        assert doc["name"] == "version 2"
    finally:
        (store.root / v1.key).write_bytes(json.dumps({"sip": 16, "name": "version 1"}).encode())
        await resolver.aclose()


async def test_a_job_that_kills_every_worker_becomes_permanent(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    await _enqueue(sessions, "data:,poison")
    for _ in range(3):  # three workers claim it and die without a word
        async with sessions() as s, s.begin():
            assert len(await q.claim(s, limit=1, lease_s=0.01)) == 1
        await asyncio.sleep(0.05)
    async with sessions() as s, s.begin():
        assert await q.claim(s, limit=1, lease_s=30, max_attempts=3) == []
    job = (await _jobs(sessions))["data:,poison"]
    assert job["status"] == "permanent" and job["last_reason"] == "lease_expired"


async def test_jobs_of_a_dead_owner_are_claimable_at_once(db_url: str, engine: AsyncEngine) -> None:
    """A claim names its process's presence lock; while that lock is held nobody else takes
    the jobs before the lease runs out, and once its session is gone (here ended by
    pg_terminate_backend, as a kill -9 ends it) they are taken at once and claimed alone."""
    sessions = session_factory(engine)
    await _enqueue(sessions, *(f"data:,owned-{i}" for i in range(3)))
    mine, theirs = q.Presence(db_url, check_interval_s=0.0), q.Presence(db_url)
    try:
        owner = await mine.current()
        async with sessions() as s, s.begin():
            claimed = await q.claim(s, limit=10, lease_s=300, owner=owner)
        assert len(claimed) == 3
        async with sessions() as s, s.begin():
            assert await q.claim(s, limit=10, lease_s=300, owner=await theirs.current()) == []
            pid = (
                await s.execute(
                    text(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                        " AND classid::bigint = :c AND objid::bigint = :o AND objsubid = 2"
                        " AND database = (SELECT oid FROM pg_database"
                        " WHERE datname = current_database())"
                    ),
                    {"c": q.OWNER_LOCK_CLASS, "o": owner},
                )
            ).scalar_one()
            await s.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        for _ in range(600):  # the backend ends (and its lock with it) soon after the signal
            async with sessions() as s:
                gone = await s.execute(
                    text("SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = :p)"),
                    {"p": pid},
                )
                if gone.scalar_one():
                    break
            await asyncio.sleep(0.05)
        sizes = []
        for _ in range(4):
            async with sessions() as s, s.begin():
                got = await q.claim(s, limit=10, lease_s=300, owner=await theirs.current())
                sizes.append(len(got))
        assert sizes == [1, 1, 1, 0]
        # The old owner notices, reconnects by itself and takes its old number back (free).
        assert await mine.current() == owner
        async with sessions() as s:
            held = await s.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND classid::bigint = :c AND objid::bigint = :o AND pid <> :p"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"
                ),
                {"c": q.OWNER_LOCK_CLASS, "o": owner, "p": pid},
            )
            assert held.scalar_one() == 1
    finally:
        await mine.aclose()
        await theirs.aclose()


async def test_the_loops_of_a_process_share_one_presence(db_url: str) -> None:
    presence = q.Presence(db_url)
    try:
        owners = await asyncio.gather(*(presence.current() for _ in range(8)))
        assert len(set(owners)) == 1
        import psycopg

        from db.session import to_libpq_url

        async with await psycopg.AsyncConnection.connect(to_libpq_url(db_url)) as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid::bigint = %s AND database ="
                " (SELECT oid FROM pg_database WHERE datname = current_database())",
                (q.OWNER_LOCK_CLASS,),
            )
            row = await cur.fetchone()
            assert row is not None and row[0] == 1
    finally:
        await presence.aclose()
