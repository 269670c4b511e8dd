"""`enqueue_many` (the indexer's one statement per batch) decides exactly as `enqueue` does."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.session import session_factory
from indexer.metadata import queue as q
from indexer.metadata.cid import raw_cid

CACHED = raw_cid(b'{"sip": 16, "name": "cached"}')
FRESH = raw_cid(b'{"sip": 16, "name": "fresh"}')
ITEMS = [
    (f"ipfs://{FRESH}", "certificate", 1),
    (f"ipfs://{FRESH}", "certificate", 1),  # repeated in one batch: one job
    (f"ipfs://{FRESH}", "certificate", 2),  # same URI, another subject
    (f"ipfs://{CACHED}", "certificate", 3),  # content already known: done at once
    (f"ipfs://ipfs/{CACHED}", "facility", 4),  # another form of the same content
    ("ipfs://nonsense", "certificate", 5),  # unparseable: permanent with the reason
    ("https://example.org/meta.json", "facility", 6),  # mutable: queued
]
COLS = "uri, subject_kind, status, cid, last_reason, finished_at IS NULL AS open"


async def _jobs(engine: AsyncEngine, lo: int, hi: int) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(f"SELECT {COLS} FROM metadata_jobs WHERE subject_id BETWEEN :lo AND :hi "
                 "ORDER BY id"),
            {"lo": lo, "hi": hi},
        )  # fmt: skip
        return [dict(r) for r in rows.mappings()]


async def test_enqueue_many_matches_enqueue_one_by_one(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    async with sessions() as s, s.begin():
        await s.execute(
            text(
                "INSERT INTO metadata_documents (cid, document, raw_size, resolved_by) "
                "VALUES (:cid, CAST('{\"sip\": 16}' AS jsonb), 12, 'test')"
            ),
            {"cid": CACHED.key},
        )
    async with sessions() as s, s.begin():
        created = await q.enqueue_many(s, ITEMS)
    async with sessions() as s, s.begin():
        singles = [await q.enqueue(s, u, k, i + 100) for u, k, i in ITEMS]
    assert [status for _, status in created] == [r[1] for r in singles if r is not None]
    assert [status for _, status in created] == [
        "queued", "queued", "done", "done", "permanent", "queued",
    ]  # fmt: skip
    assert [job_id for job_id, _ in created] == sorted(job_id for job_id, _ in created)
    batch, one_by_one = await _jobs(engine, 1, 99), await _jobs(engine, 100, 199)
    assert batch == one_by_one
    assert batch[2]["cid"] == CACHED.key and not batch[2]["open"]
    assert batch[4]["last_reason"] == "bad_uri"
    async with engine.connect() as conn:
        mapped = await conn.scalar(
            text("SELECT cid FROM metadata_uris WHERE uri = :u"), {"u": f"ipfs://{CACHED}"}
        )
    assert mapped == CACHED.key
    # Idempotent like `enqueue`: a re-delivered batch creates nothing.
    async with sessions() as s, s.begin():
        assert await q.enqueue_many(s, ITEMS) == []
        assert await q.enqueue_many(s, []) == []
