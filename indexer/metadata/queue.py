"""The PostgreSQL-backed metadata job queue.

``enqueue`` is what the indexer calls inside its block transaction: one cheap, idempotent
statement, which also completes the job on the spot when the URI (or the CID it names) was
resolved before. Workers ``claim`` due jobs with ``FOR UPDATE SKIP LOCKED``; a claim sets
``next_attempt_at`` to the lease expiry, so a job whose worker died is due again afterwards
without any sweeper.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import tenacity
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from db.channels import METADATA
from indexer.metadata.cid import raw_cid
from indexer.metadata.errors import MetadataError, ResolutionFailed
from indexer.metadata.resolver import Resolution
from indexer.metadata.uri import DataTarget, IpfsTarget, parse_uri

MAX_ERROR_CHARS = 2000


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    uri: str
    subject_kind: str
    subject_id: int
    attempts: int
    lease_token: str


def content_key(uri: str) -> str | None:
    """The cache key a URI names by itself (a whole IPFS CID, or a ``data:`` payload), or
    None when only fetching can tell (paths inside directories, mutable URLs)."""
    try:
        target = parse_uri(uri)
    except MetadataError:
        return None
    if isinstance(target, IpfsTarget) and not target.path and target.cid.is_raw:
        return target.cid.key
    if isinstance(target, IpfsTarget) and not target.path:
        return None  # a dag-pb root's document is keyed by the file node actually read
    if isinstance(target, DataTarget):
        return raw_cid(target.content).key
    return None


def is_immutable(uri: str) -> bool:
    try:
        return isinstance(parse_uri(uri), IpfsTarget | DataTarget)
    except MetadataError:
        return False


_ENQUEUE = text(
    """
    WITH known AS (
        SELECT u.cid FROM metadata_uris u WHERE u.uri = :uri AND CAST(:immutable AS boolean)
        UNION ALL
        SELECT d.cid FROM metadata_documents d WHERE d.cid = CAST(:key AS text)
        LIMIT 1
    ), mapped AS (
        INSERT INTO metadata_uris (uri, cid, resolved_by)
        SELECT :uri, d.cid, d.resolved_by FROM metadata_documents d WHERE d.cid = :key
        ON CONFLICT (uri) DO NOTHING
    )
    INSERT INTO metadata_jobs (uri, subject_kind, subject_id, status, cid, finished_at,
                               last_reason, last_error)
    SELECT :uri, :kind, :sid,
           CASE WHEN CAST(:bad_reason AS text) IS NOT NULL THEN 'permanent'
                WHEN known.cid IS NULL THEN 'queued' ELSE 'done' END,
           known.cid,
           CASE WHEN known.cid IS NULL AND CAST(:bad_reason AS text) IS NULL
                THEN NULL ELSE now() END,
           CAST(:bad_reason AS text), CAST(:bad_error AS text)
    FROM (SELECT 1) AS one LEFT JOIN known ON true
    ON CONFLICT (uri, subject_kind, subject_id) DO NOTHING
    RETURNING id, status
    """
)


async def enqueue(
    session: AsyncSession, uri: str, subject_kind: str, subject_id: int
) -> tuple[int, str] | None:
    """Queue ``uri`` for a certificate or facility. Idempotent; never raises for a bad URI
    (the job is stored as permanently failed with the reason). Returns (job id, status) when
    a new job was created, None when it already existed."""
    bad_reason = bad_error = None
    try:
        parse_uri(uri)
    except MetadataError as exc:
        bad_reason, bad_error = exc.reason, exc.message[:MAX_ERROR_CHARS]
    row = (
        await session.execute(
            _ENQUEUE,
            {
                "uri": uri,
                "kind": subject_kind,
                "sid": subject_id,
                "key": content_key(uri),
                "immutable": is_immutable(uri),
                "bad_reason": bad_reason,
                "bad_error": bad_error,
            },
        )
    ).first()
    return (int(row.id), str(row.status)) if row else None


async def requeue_for_refresh(
    session: AsyncSession,
    subject_kind: str,
    subject_ids: list[int] | None = None,
    uri: str | None = None,
) -> int:
    """SIP-019: fetch again the metadata of these subjects (all of the kind when ``subject_ids``
    is None). Immutable content still comes from the cache; mutable URLs are re-fetched."""
    result = await session.execute(
        text(
            """
            UPDATE metadata_jobs
            SET status = 'queued', attempts = 0, next_attempt_at = now(), updated_at = now(),
                lease_token = NULL, lease_expires_at = NULL
            WHERE subject_kind = :kind
              AND (CAST(:ids AS bigint[]) IS NULL OR subject_id = ANY(CAST(:ids AS bigint[])))
              AND (CAST(:uri AS text) IS NULL OR uri = :uri)
            """
        ),
        {"kind": subject_kind, "ids": subject_ids, "uri": uri},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def expire_poison(session: AsyncSession, *, max_attempts: int) -> int:
    """Jobs whose leases keep expiring (a poison job that kills its worker every time) become
    permanent instead of looping forever."""
    result = await session.execute(
        text(
            """
            UPDATE metadata_jobs
            SET status = 'permanent', last_reason = 'lease_expired', updated_at = now(),
                finished_at = now(), last_error = 'worker lease expired on every attempt'
            WHERE status = 'running' AND next_attempt_at <= now() AND attempts >= :max
            """
        ),
        {"max": max_attempts},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def claim(
    session: AsyncSession, *, limit: int, lease_s: float, max_attempts: int | None = None
) -> list[Job]:
    """Take up to ``limit`` due jobs (``max_attempts`` given: expire poison jobs first)."""
    if max_attempts is not None:
        await expire_poison(session, max_attempts=max_attempts)
    token = secrets.token_hex(8)
    rows = (
        await session.execute(
            text(
                """
                WITH due AS (
                    SELECT id FROM metadata_jobs
                    WHERE status IN ('queued', 'running', 'failed') AND next_attempt_at <= now()
                    ORDER BY next_attempt_at
                    LIMIT :limit
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE metadata_jobs j
                SET status = 'running', attempts = j.attempts + 1, lease_token = :token,
                    next_attempt_at = now() + make_interval(secs => :lease),
                    lease_expires_at = now() + make_interval(secs => :lease),
                    updated_at = now()
                FROM due WHERE j.id = due.id
                RETURNING j.id, j.uri, j.subject_kind, j.subject_id, j.attempts
                """
            ),
            {"limit": limit, "token": token, "lease": lease_s},
        )
    ).all()
    return [Job(r.id, r.uri, r.subject_kind, r.subject_id, r.attempts, token) for r in rows]


async def cached(session: AsyncSession, uri: str) -> tuple[str, dict[str, Any]] | None:
    """A previously verified document for an immutable URI: (cid, document)."""
    if not is_immutable(uri):
        return None
    row = (
        await session.execute(
            text(
                """
                SELECT d.cid, d.document FROM metadata_documents d
                WHERE d.cid = (SELECT cid FROM metadata_uris WHERE uri = :uri)
                   OR d.cid = CAST(:key AS text)
                LIMIT 1
                """
            ),
            {"uri": uri, "key": content_key(uri)},
        )
    ).first()
    return (row.cid, row.document) if row else None


async def complete(
    session: AsyncSession,
    job: Job,
    resolution: Resolution | None,
    cid: str,
    mismatches: dict[str, Any] | None,
) -> bool:
    """Store the result; False when this worker's lease was lost to another worker."""
    if resolution is not None:
        await session.execute(
            text(
                """
                INSERT INTO metadata_documents (cid, document, raw_size, resolved_by)
                VALUES (:cid, CAST(:doc AS jsonb), :size, :by)
                ON CONFLICT (cid) DO NOTHING
                """
            ),
            {
                "cid": cid,
                "doc": json.dumps(resolution.document),
                "size": resolution.raw_size,
                "by": resolution.resolved_by,
            },
        )
        await session.execute(
            text(
                """
                INSERT INTO metadata_uris (uri, cid, resolved_by) VALUES (:uri, :cid, :by)
                ON CONFLICT (uri) DO UPDATE
                SET cid = EXCLUDED.cid, resolved_by = EXCLUDED.resolved_by, resolved_at = now()
                """
            ),
            {"uri": job.uri, "cid": cid, "by": resolution.resolved_by},
        )
    else:
        await session.execute(
            text(
                """
                INSERT INTO metadata_uris (uri, cid, resolved_by)
                SELECT :uri, cid, resolved_by FROM metadata_documents WHERE cid = :cid
                ON CONFLICT (uri) DO NOTHING
                """
            ),
            {"uri": job.uri, "cid": cid},
        )
    result = await session.execute(
        text(
            """
            UPDATE metadata_jobs
            SET status = 'done', cid = :cid, rec_mismatches = CAST(:mm AS jsonb),
                last_reason = NULL, last_error = NULL, finished_at = now(), updated_at = now(),
                lease_token = NULL, lease_expires_at = NULL
            WHERE id = :id AND lease_token = :token
            """
        ),
        {
            "id": job.id,
            "token": job.lease_token,
            "cid": cid,
            "mm": json.dumps(mismatches) if mismatches is not None else None,
        },
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    await _notify(session, job, "done")
    return True


async def unchecked(session: AsyncSession, limit: int) -> list[tuple[int, str, int, Any]]:
    """Jobs completed from the cache at enqueue time, whose REC attributes are not yet checked
    against the chain: (id, subject kind, subject id, document)."""
    rows = (
        await session.execute(
            text(
                """
                SELECT j.id, j.subject_kind, j.subject_id, d.document
                FROM metadata_jobs j JOIN metadata_documents d ON d.cid = j.cid
                WHERE j.status = 'done' AND j.rec_mismatches IS NULL
                LIMIT :limit
                FOR UPDATE OF j SKIP LOCKED
                """
            ),
            {"limit": limit},
        )
    ).all()
    return [(r.id, r.subject_kind, r.subject_id, r.document) for r in rows]


async def set_rec_mismatches(session: AsyncSession, job_id: int, mismatches: Any) -> None:
    await session.execute(
        text("UPDATE metadata_jobs SET rec_mismatches = CAST(:mm AS jsonb) WHERE id = :id"),
        {"id": job_id, "mm": json.dumps(mismatches)},
    )


def backoff_seconds(attempt: int, initial: float, maximum: float) -> float:
    """Exponential backoff with jitter for the ``attempt``-th failure (tenacity's policy)."""
    wait = tenacity.wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)
    state = tenacity.RetryCallState(tenacity.AsyncRetrying(), None, (), {})
    state.attempt_number = max(attempt, 1)
    return float(wait(state))


async def fail(
    session: AsyncSession,
    job: Job,
    error: MetadataError,
    *,
    max_attempts: int,
    backoff_initial_s: float,
    backoff_max_s: float,
) -> str:
    """Record a failed attempt; returns the new status (``failed`` or ``permanent``)."""
    permanent = error.permanent or job.attempts >= max_attempts
    delay = backoff_seconds(job.attempts, backoff_initial_s, backoff_max_s)
    retry_after = error.retry_after if isinstance(error, ResolutionFailed) else None
    if retry_after:
        delay = max(delay, retry_after)
    status = "permanent" if permanent else "failed"
    result = await session.execute(
        text(
            """
            UPDATE metadata_jobs
            SET status = :status, last_reason = :reason, last_error = :error,
                next_attempt_at = now() + make_interval(secs => :delay), updated_at = now(),
                finished_at = CASE WHEN :status = 'permanent' THEN now() END,
                lease_token = NULL, lease_expires_at = NULL
            WHERE id = :id AND lease_token = :token
            """
        ),
        {
            "status": status,
            "reason": error.reason,
            "error": error.message[:MAX_ERROR_CHARS],
            "delay": delay,
            "id": job.id,
            "token": job.lease_token,
        },
    )
    if result.rowcount and permanent:  # type: ignore[attr-defined]
        await _notify(session, job, status)
    return status


async def retry(
    session: AsyncSession, *, job_id: int | None = None, all_failed: bool = False
) -> int:
    """The manual retry: put failed/permanent jobs back in the queue now, attempts reset."""
    if job_id is None and not all_failed:
        raise ValueError("give a job id or all_failed=True")
    result = await session.execute(
        text(
            """
            UPDATE metadata_jobs
            SET status = 'queued', attempts = 0, next_attempt_at = now(), updated_at = now(),
                finished_at = NULL
            WHERE status IN ('failed', 'permanent')
              AND (CAST(:id AS bigint) IS NULL OR id = :id)
            """
        ),
        {"id": job_id},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def depth(session: AsyncSession) -> dict[str, int]:
    rows = (
        await session.execute(text("SELECT status, count(*) AS n FROM metadata_jobs GROUP BY 1"))
    ).all()
    return {r.status: int(r.n) for r in rows}


async def _notify(session: AsyncSession, job: Job, status: str) -> None:
    payload = json.dumps(
        {
            "uri": job.uri,
            "status": status,
            "subject_kind": job.subject_kind,
            "subject_id": job.subject_id,
        }
    )
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"), {"channel": METADATA, "payload": payload}
    )
