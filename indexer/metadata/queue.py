"""The PostgreSQL-backed metadata job queue.

``enqueue`` is what the indexer calls inside its block transaction: one cheap, idempotent
statement, which also completes the job on the spot when the URI (or the CID it names) was
resolved before. Workers ``claim`` due jobs in batches with ``FOR UPDATE SKIP LOCKED``; a
claim sets ``next_attempt_at`` to the lease expiry, so a job whose worker died is due again
afterwards without any sweeper. A batch is stored with ``finish``: one statement for the
content cache, one for the jobs (and their notifications), whatever the batch size.

A worker process also holds a session advisory lock for as long as it lives (``Presence``)
and stamps its claims with that lock's number (``lease_owner``). PostgreSQL drops the lock the
moment the process's connection closes (``kill -9``, OOM, a crash), so the other workers see
its running jobs as orphaned and claim them at once instead of waiting out the lease; the lease
still bounds the wait when the owner lives but hangs or its host vanished without closing its
socket (TCP keepalives then end the lock session within about 25 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
import tenacity
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from db.channels import METADATA
from db.leader import KEEPALIVE_OPTIONS
from db.session import to_libpq_url
from indexer.metadata.cid import raw_cid
from indexer.metadata.errors import MetadataError, ResolutionFailed
from indexer.metadata.resolver import Resolution
from indexer.metadata.uri import DataTarget, IpfsTarget, parse_uri

MAX_ERROR_CHARS = 2000
# First key of the two-key advisory locks (pg_advisory_lock(int4, int4)) workers hold: derived
# by hashing so it cannot meet another application's hand-picked keys; positive, as pg_locks
# shows it as an oid.
OWNER_LOCK_CLASS = int.from_bytes(hashlib.sha256(b"recchain.metadata.worker").digest()[:4]) >> 1


def owner_label() -> str:
    """`application_name` of a presence session: which process owns a job shows in
    pg_stat_activity (joined to pg_locks on the job's `lease_owner`)."""
    return f"recchain-metadata:{socket.gethostname()}:{os.getpid()}"[:63]


class Presence:
    """This process's advisory lock: held on a connection of its own for as long as the process
    lives, its second key is the ``lease_owner`` of every job the process claims."""

    def __init__(self, url: str, *, check_interval_s: float = 2.0) -> None:
        self.url = url
        self.check_interval_s = check_interval_s
        self.owner: int | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._checked = 0.0
        # The worker loops of a process share it: one of them (re)acquires, the others wait,
        # or each would take a number of its own and drop the others' with their connections.
        self._lock = asyncio.Lock()

    async def current(self) -> int:
        """The owner number, (re)acquiring the lock when its connection was lost; raises the
        connection error while the database cannot be reached."""
        async with self._lock:
            return await self._current()

    async def _current(self) -> int:
        now = time.monotonic()
        if self._conn is not None and not self._conn.closed:
            if now - self._checked < self.check_interval_s and self.owner is not None:
                return self.owner
            try:
                await self._conn.execute("SELECT 1")
                self._checked = now
                assert self.owner is not None
                return self.owner
            except psycopg.Error:
                await self.aclose()
        conn = await psycopg.AsyncConnection.connect(
            to_libpq_url(self.url),
            autocommit=True,
            application_name=owner_label(),
            options=KEEPALIVE_OPTIONS,
            connect_timeout=10,
        )
        try:
            # Keep the number across reconnects when possible (jobs claimed before the loss are
            # then recognised as ours again); a number held by someone else is replaced.
            candidate = self.owner or secrets.randbelow(2**31 - 1) + 1
            while True:
                cur = await conn.execute(
                    "SELECT pg_try_advisory_lock(%s, %s)", (OWNER_LOCK_CLASS, candidate)
                )
                row = await cur.fetchone()
                if row and row[0]:
                    break
                candidate = secrets.randbelow(2**31 - 1) + 1
        except BaseException:
            await conn.close()
            raise
        self._conn, self.owner, self._checked = conn, candidate, now
        return candidate

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()


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


# `enqueue` for a whole batch: the same decisions, one statement. Rows come in the caller's
# order (job ids follow it); the lateral lookup sees the snapshot of the statement, which is
# what consecutive `enqueue` calls see too (a URI mapped by one is also found by its CID key).
_ENQUEUE_MANY = text(
    """
    WITH x AS MATERIALIZED (
        SELECT * FROM unnest(
            CAST(:uris AS text[]), CAST(:kinds AS text[]), CAST(:sids AS bigint[]),
            CAST(:keys AS text[]), CAST(:immutable AS boolean[]), CAST(:reasons AS text[]),
            CAST(:errors AS text[])
        ) WITH ORDINALITY AS x(uri, kind, sid, key, immutable, bad_reason, bad_error, n)
    ), mapped AS (
        INSERT INTO metadata_uris (uri, cid, resolved_by)
        SELECT DISTINCT ON (x.uri) x.uri, d.cid, d.resolved_by
        FROM x JOIN metadata_documents d ON d.cid = x.key
        ON CONFLICT (uri) DO NOTHING
    )
    INSERT INTO metadata_jobs (uri, subject_kind, subject_id, status, cid, finished_at,
                               last_reason, last_error)
    SELECT x.uri, x.kind, x.sid,
           CASE WHEN x.bad_reason IS NOT NULL THEN 'permanent'
                WHEN known.cid IS NULL THEN 'queued' ELSE 'done' END,
           known.cid,
           CASE WHEN known.cid IS NULL AND x.bad_reason IS NULL THEN NULL ELSE now() END,
           x.bad_reason, x.bad_error
    FROM x LEFT JOIN LATERAL (
        SELECT u.cid FROM metadata_uris u WHERE u.uri = x.uri AND x.immutable
        UNION ALL
        SELECT d.cid FROM metadata_documents d WHERE d.cid = x.key
        LIMIT 1
    ) known ON true
    ORDER BY x.n
    ON CONFLICT (uri, subject_kind, subject_id) DO NOTHING
    RETURNING id, status
    """
)


def _uri_facts(uri: str) -> tuple[str | None, bool, str | None, str | None]:
    """(content_key, is_immutable, bad reason, bad error) of ``uri`` from one parse: parsing a
    CID is most of the indexer's cost per new URI, and `enqueue` parses three times."""
    try:
        target = parse_uri(uri)
    except MetadataError as exc:
        return None, False, exc.reason, exc.message[:MAX_ERROR_CHARS]
    key: str | None = None
    if isinstance(target, IpfsTarget) and not target.path and target.cid.is_raw:
        key = target.cid.key
    elif isinstance(target, DataTarget):
        key = raw_cid(target.content).key
    return key, isinstance(target, IpfsTarget | DataTarget), None, None


async def enqueue_many(
    session_or_conn: AsyncSession | AsyncConnection, items: Iterable[tuple[str, str, int]]
) -> list[tuple[int, str]]:
    """:func:`enqueue` for many ``(uri, subject_kind, subject_id)`` at once (a catch-up batch
    names thousands of URIs: one round trip instead of one each). Returns (job id, status) of
    the jobs created; repeated items count once."""
    unique = list(dict.fromkeys(items))
    if not unique:
        return []
    facts: dict[str, tuple[str | None, bool, str | None, str | None]] = {}
    for uri, _, _ in unique:
        if uri not in facts:
            facts[uri] = _uri_facts(uri)
    rows = await session_or_conn.execute(
        _ENQUEUE_MANY,
        {
            "uris": [u for u, _, _ in unique],
            "kinds": [k for _, k, _ in unique],
            "sids": [i for _, _, i in unique],
            "keys": [facts[u][0] for u, _, _ in unique],
            "immutable": [facts[u][1] for u, _, _ in unique],
            "reasons": [facts[u][2] for u, _, _ in unique],
            "errors": [facts[u][3] for u, _, _ in unique],
        },
    )
    return [(int(r.id), str(r.status)) for r in rows]


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
                lease_token = NULL, lease_expires_at = NULL, lease_owner = NULL
            WHERE subject_kind = :kind
              AND (CAST(:ids AS bigint[]) IS NULL OR subject_id = ANY(CAST(:ids AS bigint[])))
              AND (CAST(:uri AS text) IS NULL OR uri = :uri)
            """
        ),
        {"kind": subject_kind, "ids": subject_ids, "uri": uri},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# A running job is orphaned when its lease ran out, or when no session holds its owner's lock
# any more (the owning process died): both make it claimable.
_ORPHANED = f"""
    status = 'running' AND (
        next_attempt_at <= now()
        OR (lease_owner IS NOT NULL AND lease_owner NOT IN (
            SELECT l.objid::bigint FROM pg_locks l
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
              AND l.classid::bigint = {OWNER_LOCK_CLASS}
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        ))
    )
"""


async def expire_poison(session: AsyncSession, *, max_attempts: int) -> int:
    """Jobs whose workers keep dying on them (a poison job that kills its worker every time)
    become permanent instead of looping forever."""
    result = await session.execute(
        text(
            f"""
            UPDATE metadata_jobs
            SET status = 'permanent', last_reason = 'lease_expired', updated_at = now(),
                finished_at = now(), last_error = 'worker lease expired on every attempt'
            WHERE {_ORPHANED} AND attempts >= :max
            """
        ),
        {"max": max_attempts},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# A job found orphaned may be what killed its last worker: it is claimed alone, so that a
# poison job cannot use up the attempts of the jobs that happened to share its batch. Orphans
# head the queue (their work was already under way), so a dead worker's jobs are taken first.
_CLAIM = text(
    f"""
    WITH orphans AS MATERIALIZED (
        SELECT id, status, '-infinity'::timestamptz AS due_at FROM metadata_jobs
        WHERE {_ORPHANED}
        ORDER BY next_attempt_at, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ), fresh AS MATERIALIZED (
        SELECT id, status, next_attempt_at AS due_at FROM metadata_jobs
        WHERE status IN ('queued', 'failed') AND next_attempt_at <= now()
        ORDER BY next_attempt_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ), due AS (
        SELECT * FROM orphans UNION ALL SELECT * FROM fresh
    ), head AS (
        SELECT id, status FROM due ORDER BY due_at, id LIMIT 1
    )
    UPDATE metadata_jobs j
    SET status = 'running', attempts = j.attempts + 1, lease_token = :token,
        lease_owner = CAST(:owner AS integer),
        next_attempt_at = now() + make_interval(secs => :lease),
        lease_expires_at = now() + make_interval(secs => :lease),
        updated_at = now()
    WHERE j.id IN (
        SELECT due.id FROM due, head
        WHERE CASE WHEN head.status = 'running' THEN due.id = head.id
                   ELSE due.status <> 'running' END
    )
    RETURNING j.id, j.uri, j.subject_kind, j.subject_id, j.attempts
    """
)


async def claim(
    session: AsyncSession,
    *,
    limit: int,
    lease_s: float,
    max_attempts: int | None = None,
    owner: int | None = None,
) -> list[Job]:
    """Take up to ``limit`` due jobs under one lease (``max_attempts`` given: expire poison
    jobs first). ``owner`` is the claiming process's ``Presence``: while it lives nobody else
    takes the jobs before the lease expires; once it is gone they are claimable at once."""
    if max_attempts is not None:
        await expire_poison(session, max_attempts=max_attempts)
    token = secrets.token_hex(8)
    rows = (
        await session.execute(
            _CLAIM, {"limit": limit, "token": token, "lease": lease_s, "owner": owner}
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


async def cached_many(
    session: AsyncSession, jobs: list[Job]
) -> dict[int, tuple[str, dict[str, Any]]]:
    """:func:`cached` for a batch in one statement: job id -> (cid, document)."""
    wanted = [(job.id, job.uri, content_key(job.uri)) for job in jobs if is_immutable(job.uri)]
    if not wanted:
        return {}
    rows = await session.execute(
        text(
            """
            SELECT x.id, d.cid, d.document
            FROM unnest(CAST(:ids AS bigint[]), CAST(:uris AS text[]), CAST(:keys AS text[]))
                 AS x(id, uri, key)
            CROSS JOIN LATERAL (
                SELECT d.cid, d.document FROM metadata_documents d
                WHERE d.cid = (SELECT cid FROM metadata_uris WHERE uri = x.uri)
                   OR d.cid = x.key
                LIMIT 1
            ) d
            """
        ),
        {
            "ids": [w[0] for w in wanted],
            "uris": [w[1] for w in wanted],
            "keys": [w[2] for w in wanted],
        },
    )
    return {int(r.id): (r.cid, r.document) for r in rows}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt of a job came to, as :func:`finish` stores it."""

    job: Job
    status: str  # done | failed | permanent
    cid: str | None = None
    resolution: Resolution | None = None  # None for a document that came from the cache
    mismatches: dict[str, Any] | None = None
    reason: str | None = None
    error: str | None = None
    delay_s: float = 0.0


def done(
    job: Job, resolution: Resolution | None, cid: str, mismatches: dict[str, Any] | None
) -> Outcome:
    return Outcome(job, "done", cid=cid, resolution=resolution, mismatches=mismatches)


def failure(
    job: Job,
    error: MetadataError,
    *,
    max_attempts: int,
    backoff_initial_s: float,
    backoff_max_s: float,
) -> Outcome:
    """A failed attempt: ``permanent`` when the error is or attempts are exhausted, else
    ``failed`` with a backoff that a ``Retry-After`` can only lengthen."""
    permanent = error.permanent or job.attempts >= max_attempts
    delay = backoff_seconds(job.attempts, backoff_initial_s, backoff_max_s)
    retry_after = error.retry_after if isinstance(error, ResolutionFailed) else None
    if retry_after:
        delay = max(delay, retry_after)
    return Outcome(
        job,
        "permanent" if permanent else "failed",
        reason=error.reason,
        error=error.message[:MAX_ERROR_CHARS],
        delay_s=delay,
    )


# Fresh documents are inserted (content-addressed: an existing row is the same document) and
# their URIs point at them; a URI answered from the cache is mapped only if it was not yet.
# The sibling inserts cannot see each other's rows, but the foreign key is checked at the end
# of the statement, when they can.
_STORE = text(
    """
    WITH x AS MATERIALIZED (
        SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
            AS x(uri text, cid text, doc jsonb, size integer, by text, fresh boolean)
    ), docs AS (
        INSERT INTO metadata_documents (cid, document, raw_size, resolved_by)
        SELECT DISTINCT ON (cid) cid, doc, size, by FROM x WHERE fresh
        ON CONFLICT (cid) DO NOTHING
    ), fresh_uris AS (
        INSERT INTO metadata_uris (uri, cid, resolved_by)
        SELECT uri, cid, by FROM x WHERE fresh
        ON CONFLICT (uri) DO UPDATE
        SET cid = EXCLUDED.cid, resolved_by = EXCLUDED.resolved_by, resolved_at = now()
    )
    INSERT INTO metadata_uris (uri, cid, resolved_by)
    SELECT x.uri, d.cid, d.resolved_by FROM x JOIN metadata_documents d ON d.cid = x.cid
    WHERE NOT x.fresh
    ON CONFLICT (uri) DO NOTHING
    """
)

# Only the holder of the lease may write a result: a worker whose lease expired finds no row.
_FINISH = text(
    """
    WITH x AS MATERIALIZED (
        SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
            AS x(id bigint, token text, status text, cid text, mm jsonb, reason text,
                 error text, delay double precision, payload text)
    ), updated AS (
        UPDATE metadata_jobs j
        SET status = x.status,
            cid = CASE WHEN x.status = 'done' THEN x.cid ELSE j.cid END,
            rec_mismatches = CASE WHEN x.status = 'done' THEN x.mm ELSE j.rec_mismatches END,
            last_reason = x.reason, last_error = x.error,
            next_attempt_at = CASE WHEN x.status = 'done' THEN j.next_attempt_at
                                   ELSE now() + make_interval(secs => x.delay) END,
            finished_at = CASE WHEN x.status = 'failed' THEN NULL ELSE now() END,
            updated_at = now(), lease_token = NULL, lease_expires_at = NULL, lease_owner = NULL
        FROM x WHERE j.id = x.id AND j.lease_token = x.token
        RETURNING j.id, j.status
    )
    SELECT u.id, CASE WHEN u.status IN ('done', 'permanent')
                      THEN pg_notify(:channel, x.payload) END AS notified
    FROM updated u JOIN x ON x.id = u.id
    """
)


async def finish(session: AsyncSession, outcomes: list[Outcome]) -> set[int]:
    """Store a batch of outcomes in two statements; returns the ids of the jobs whose lease
    was still held (the others were taken over by another worker and are left alone)."""
    if not outcomes:
        return set()
    cache: dict[str, dict[str, Any]] = {}
    for o in outcomes:
        if o.status != "done":
            continue
        # One row per URI (ON CONFLICT may touch a row once per statement); fresh wins.
        if o.resolution is not None:
            r = o.resolution
            cache[o.job.uri] = {
                "uri": o.job.uri,
                "cid": o.cid,
                "doc": r.document,
                "size": r.raw_size,
                "by": r.resolved_by,
                "fresh": True,
            }
        else:
            cache.setdefault(o.job.uri, {"uri": o.job.uri, "cid": o.cid, "fresh": False})
    if cache:
        await session.execute(_STORE, {"rows": json.dumps(list(cache.values()))})
    rows = [
        {
            "id": o.job.id,
            "token": o.job.lease_token,
            "status": o.status,
            "cid": o.cid,
            "mm": o.mismatches,
            "reason": o.reason,
            "error": o.error,
            "delay": o.delay_s,
            "payload": _payload(o.job, o.status),
        }
        for o in outcomes
    ]
    result = await session.execute(_FINISH, {"rows": json.dumps(rows), "channel": METADATA})
    return {int(r.id) for r in result}


async def complete(
    session: AsyncSession,
    job: Job,
    resolution: Resolution | None,
    cid: str,
    mismatches: dict[str, Any] | None,
) -> bool:
    """Store the result; False when this worker's lease was lost to another worker."""
    return job.id in await finish(session, [done(job, resolution, cid, mismatches)])


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


async def set_rec_mismatches(session: AsyncSession, checked: list[tuple[int, Any]]) -> None:
    """Record the REC check of (job id, mismatches) pairs in one statement."""
    if not checked:
        return
    await session.execute(
        text(
            """
            UPDATE metadata_jobs j SET rec_mismatches = x.mm
            FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(id bigint, mm jsonb)
            WHERE j.id = x.id
            """
        ),
        {"rows": json.dumps([{"id": i, "mm": mm} for i, mm in checked])},
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
    outcome = failure(
        job,
        error,
        max_attempts=max_attempts,
        backoff_initial_s=backoff_initial_s,
        backoff_max_s=backoff_max_s,
    )
    await finish(session, [outcome])
    return outcome.status


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


def _payload(job: Job, status: str) -> str:
    return json.dumps(
        {
            "uri": job.uri,
            "status": status,
            "subject_kind": job.subject_kind,
            "subject_id": job.subject_id,
        }
    )
