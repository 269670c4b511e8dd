"""The webhook sender: moves the outbox (`webhook_events`) to the endpoints, in order.

Ordering and exclusion. An endpoint's events are delivered one at a time in `seq` order: the
next is sent only once the previous one was answered 2xx, or became a dead letter. Only one
sender at a time works an endpoint: it holds a PostgreSQL session advisory lock on it, taken
with `pg_try_advisory_lock` on one connection the sender keeps for its locks. A sender that dies
loses that connection and with it every lock, so another takes over at once; a sender that is
merely slow keeps its locks, so nobody overtakes it. After each delivery the sender checks, in
the same statement that records the outcome, that its lock connection still holds the lock, and
stops if not: at worst the next event is then sent twice (same idempotency key), never early.

At-least-once. The outcome is recorded after the answer; a sender killed in between sends the
event again after a restart, with the same `Recchain-Event-Id`. Outcomes are committed without
waiting for the WAL flush: a record lost in a server crash only means one more duplicate.

Failures. A non-2xx answer, a timeout, a refused connection or a refused address is retried
with exponential backoff and jitter (`webhooks.backoff_initial_s`, doubling, up to
`backoff_max_s`; a `Retry-After` wins), and becomes a dead letter once it has waited
`webhooks.dead_letter_after_s` since it was queued; the next event then goes. The backoff is
per endpoint (its head event), and each endpoint is worked by its own task, so a slow or dead
endpoint delays nobody else; `webhooks.concurrency` bounds the endpoints worked at once.

Wake-ups: a NOTIFY on `recchain_webhooks` (the indexer's feed, a redelivery), the end of a
worker, or `webhooks.poll_interval_s`.

Database outages. The sender and its workers share one `db.outage.Outage`: one WARNING when the
database goes away, exponential jittered backoff between reconnections while it is away, one
INFO line when it is back. A delivery whose outcome could not be recorded is sent again
afterwards, with the same event id (the at-least-once case above).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from db.channels import WEBHOOKS
from db.finality import final_height
from db.outage import Outage
from db.webhooks.docs import render
from infra.config import Settings
from infra.netguard import DestinationRefused
from writers.webhooks import signing
from writers.webhooks.delivery import Attempt, Deliverer, Target
from writers.webhooks.metrics import WebhookMetrics

log = logging.getLogger("recchain.webhooks")

# Advisory lock namespace (the two-key form: namespace, endpoint id).
LOCK_SPACE = 0x52455748  # "REWH" (1380276040, as ops/RUNBOOK.md queries it)
WINDOW = 50  # events read per round trip of one endpoint
# A server that does not answer at all (not merely refusing) must not hang a reconnection.
CONNECT_TIMEOUT_S = 10

_DUE = """
SELECT e.id FROM webhook_endpoints e
CROSS JOIN LATERAL (
    SELECT ev.next_attempt_at FROM webhook_events ev
    WHERE ev.endpoint_id = e.id AND ev.status = 'pending' ORDER BY ev.seq LIMIT 1) h
WHERE e.status = 'active' AND h.next_attempt_at <= now() AND NOT (e.id = ANY(%(busy)s))
ORDER BY h.next_attempt_at LIMIT %(n)s
"""

_WINDOW = """
SELECT e.url, e.delivery, e.secret,
       CASE WHEN e.previous_secret_until > now() THEN e.previous_secret END AS previous_secret,
       (SELECT max(b.block_height) FROM blocks b WHERE b.canonical) AS tip,
       ev.id, ev.seq, ev.event_id, ev.type, ev.block_height, ev.index_block_hash,
       ev.payload::text AS payload, ev.created_at, ev.attempts,
       ev.next_attempt_at <= now() AS due,
       now() - ev.queued_at > make_interval(secs => %(dead_after)s) AS expired
FROM webhook_endpoints e
JOIN LATERAL (
    SELECT * FROM webhook_events ev
    WHERE ev.endpoint_id = e.id AND ev.status = 'pending' ORDER BY ev.seq LIMIT %(n)s) ev ON TRUE
WHERE e.id = %(id)s AND e.status = 'active'
ORDER BY ev.seq
"""

# One round trip: the outcome, the attempt, and whether this sender still holds the endpoint.
_RECORD = """
WITH ev AS (
    UPDATE webhook_events SET
        attempts = attempts + 1, last_status = %(status)s, last_error = %(error)s,
        status = CASE WHEN status = 'pending' THEN %(outcome)s ELSE status END,
        delivered_at = CASE WHEN %(outcome)s = 'delivered' THEN now() ELSE delivered_at END,
        next_attempt_at = CASE WHEN %(delay)s::float8 IS NULL THEN next_attempt_at
                          ELSE clock_timestamp() + make_interval(secs => %(delay)s::float8) END
    WHERE id = %(id)s
    RETURNING id, attempts
), tried AS (
    INSERT INTO webhook_attempts (event_id, endpoint_id, attempt, started_at, duration_ms,
                                  http_status, error, response)
    SELECT id, %(endpoint)s, attempts, %(started)s, %(ms)s, %(status)s, %(error)s, %(response)s
    FROM ev
    RETURNING 1
)
SELECT (SELECT count(*) FROM tried), EXISTS (
    SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = %(pid)s
      AND classid::bigint = %(space)s AND objid::bigint = %(endpoint)s AND objsubid = 2)
"""

_GAUGES = """
SELECT e.id,
       (SELECT count(*) FROM webhook_events ev
        WHERE ev.endpoint_id = e.id AND ev.status = 'pending') AS pending,
       -- A paused endpoint's wait is deliberate: it does not count as stuck.
       CASE WHEN e.status = 'active' THEN
           (SELECT extract(epoch FROM now() - min(ev.queued_at)) FROM webhook_events ev
            WHERE ev.endpoint_id = e.id AND ev.status = 'pending') END AS oldest,
       (SELECT count(*) FROM webhook_events ev
        WHERE ev.endpoint_id = e.id AND ev.status = 'dead') AS dead
FROM webhook_endpoints e
"""


@dataclass(frozen=True, slots=True)
class _Event:
    id: int
    seq: int
    event_id: str
    type: str
    block_height: int
    index_block_hash: str
    payload: str
    created_at: datetime
    attempts: int
    due: bool
    expired: bool


_EVENT_FIELDS = tuple(f for f in _Event.__dataclass_fields__ if f != "event_id")


class _Pool:
    """A few autocommit connections shared by the workers (held only for one statement, never
    across an HTTP request). Commits do not wait for the WAL flush: see the module docstring.

    A connection that broke leaves an empty slot (None), reopened by its next user: reopening
    it at once would fail while the server is away, and a slot lost that way would leave
    whoever waits for a connection waiting forever."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.size = size
        self._idle: asyncio.Queue[psycopg.AsyncConnection[Any] | None] = asyncio.Queue()
        self._all: list[psycopg.AsyncConnection[Any]] = []

    async def open(self) -> None:
        for _ in range(self.size):
            self._idle.put_nowait(await self._connect())

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(
            self.url,
            autocommit=True,
            application_name="recchain-webhooks",
            connect_timeout=CONNECT_TIMEOUT_S,
        )
        self._all.append(conn)
        await conn.execute("SET synchronous_commit = off")
        return conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        conn = await self._idle.get()
        try:
            if conn is None:
                conn = await self._connect()
            yield conn
        finally:
            if conn is not None and (conn.broken or conn.closed):
                self._all.remove(conn)
                with contextlib.suppress(Exception):
                    await conn.close()
                conn = None
            self._idle.put_nowait(conn)

    async def close(self) -> None:
        for conn in self._all:
            with contextlib.suppress(Exception):
                await conn.close()
        self._all.clear()


def backoff(settings: Settings, attempts: int, retry_after: float | None) -> float:
    """Seconds before the next try after `attempts` failed ones (this one included)."""
    if retry_after is not None:
        return min(retry_after, settings.webhooks.dead_letter_after_s)
    w = settings.webhooks
    ceiling = min(w.backoff_max_s, w.backoff_initial_s * 2 ** max(attempts - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # "equal jitter"


class Sender:
    def __init__(
        self,
        url: str,
        settings: Settings,
        metrics: WebhookMetrics | None = None,
        outage: Outage | None = None,
    ):
        self.url = url
        self.settings = settings
        self.metrics = metrics or WebhookMetrics()
        # One for the process: the scheduler and every worker report one outage together.
        self.outage = outage or Outage(
            log, on_change=lambda up: self.metrics.database_up.set(1 if up else 0)
        )
        self.deliverer = Deliverer(settings.webhooks)
        self.wake = asyncio.Event()
        self.working: dict[int, asyncio.Task[None]] = {}
        self.delivered = 0
        self._locks: psycopg.AsyncConnection[Any] | None = None
        self._lock_pid = 0
        self._pool: _Pool | None = None
        self._stop = asyncio.Event()
        self._known_endpoints: set[str] = set()
        self._closing = False

    # ------------------------------------------------------------------ process loop
    def not_ready(self) -> str | None:
        """Why this sender cannot deliver right now (None: it can), for readiness probes."""
        if self.outage.down:
            return f"database: {self.outage.last_error}"
        if self._locks is None:
            return "not connected to the database"
        return None

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; reconnects after database failures."""
        self._stop = stop
        try:
            while not stop.is_set():
                try:
                    await self._serve(stop)
                except Exception as exc:
                    delay = self.outage.failed(exc, "webhook sender")
                    await self._stop_workers(grace_s=0.0)
                    await self.outage.pause(delay, stop)
        finally:
            await self._stop_workers(grace_s=0.0)
            await self.deliverer.aclose()

    async def _serve(self, stop: asyncio.Event) -> None:
        pool = _Pool(self.url, min(self.settings.webhooks.concurrency, 8))
        locks = await psycopg.AsyncConnection.connect(
            self.url,
            autocommit=True,
            application_name="recchain-webhooks-locks",
            connect_timeout=CONNECT_TIMEOUT_S,
        )
        listener: asyncio.Task[None] | None = None
        listen: psycopg.AsyncConnection[Any] | None = None
        try:
            listen = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            )
            await pool.open()
            self._pool, self._locks = pool, locks
            self._lock_pid = locks.info.backend_pid
            await listen.execute(f"LISTEN {WEBHOOKS}")
            self._closing = False
            listener = asyncio.create_task(self._listen(listen, stop))
            next_gauges = 0.0
            next_prune = time.monotonic() + 60.0
            while not stop.is_set():
                if listener.done():
                    listener.result()  # a dead LISTEN connection: reconnect everything
                self.wake.clear()
                await self._schedule()
                # Also ends an outage only a worker's connection saw (a terminated backend).
                self.outage.ok()
                now = time.monotonic()
                if now >= next_gauges:
                    await self._gauges()
                    next_gauges = now + 5.0
                if now >= next_prune:
                    await self._prune()
                    next_prune = now + 600.0
                await self._sleep(stop)
        finally:
            self._closing = True
            if listener is not None:
                with contextlib.suppress(psycopg.Error, OSError):
                    await listener
            # On a clean stop, deliveries in flight may finish (each is bounded by the
            # timeout), which spares their endpoints a duplicate after the restart.
            grace = self.settings.webhooks.timeout_s + 1.0 if stop.is_set() else 0.0
            await self._stop_workers(grace_s=grace)
            self._locks = None
            for conn in (listen, locks):
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await pool.close()

    async def _listen(self, conn: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        # Short waits rather than a cancellation: the connection is never closed while a wait
        # on its socket is still registered with the event loop.
        while not stop.is_set() and not self._closing:
            async for _ in conn.notifies(timeout=0.5):
                self.wake.set()

    async def _sleep(self, stop: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(
                waits,
                timeout=self.settings.webhooks.poll_interval_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for w in waits:
                w.cancel()

    async def _schedule(self) -> None:
        """Start a worker for each due endpoint this sender can lock, up to the concurrency."""
        free = self.settings.webhooks.concurrency - len(self.working)
        if free <= 0:
            return
        assert self._pool is not None and self._locks is not None
        async with self._pool.connection() as conn:
            cur = await conn.execute(_DUE, {"busy": list(self.working), "n": free * 2})
            due = [r[0] for r in await cur.fetchall()]
        for endpoint_id in due:
            if len(self.working) >= self.settings.webhooks.concurrency:
                break
            cur = await self._locks.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_SPACE, endpoint_id)
            )
            row = await cur.fetchone()
            if row and row[0]:
                task = asyncio.create_task(self._work(endpoint_id), name=f"webhook-{endpoint_id}")
                self.working[endpoint_id] = task
        self.metrics.active_endpoints.set(len(self.working))

    async def _stop_workers(self, grace_s: float) -> None:
        tasks = list(self.working.values())
        if tasks and grace_s > 0:
            await asyncio.wait(tasks, timeout=grace_s)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.working.clear()

    # ------------------------------------------------------------------ one endpoint
    async def _work(self, endpoint_id: int) -> None:
        try:
            while not self._stop.is_set():
                if not await self._window(endpoint_id):
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The scheduler, woken below, meets an outage too and backs off for everyone.
            self.outage.failed(exc, f"webhook endpoint {endpoint_id}: delivery round")
        finally:
            self.working.pop(endpoint_id, None)
            locks = self._locks
            if locks is not None and not locks.broken and not locks.closed:
                with contextlib.suppress(psycopg.Error):
                    await locks.execute(
                        "SELECT pg_advisory_unlock(%s, %s)", (LOCK_SPACE, endpoint_id)
                    )
            self.metrics.active_endpoints.set(len(self.working))
            self.wake.set()

    async def _window(self, endpoint_id: int) -> bool:
        """Deliver the endpoint's next due events; False when it should be left for now."""
        assert self._pool is not None
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                _WINDOW,
                {
                    "id": endpoint_id,
                    "n": WINDOW,
                    "dead_after": self.settings.webhooks.dead_letter_after_s,
                },
            )
            rows = await cur.fetchall()
            if not rows:
                return False
            head = rows[0]
            final_at = (
                None
                if head["delivery"] == "final"
                else await final_height(conn, head["tip"], self.settings)
            )
        secrets = [head["secret"]] + ([head["previous_secret"]] if head["previous_secret"] else [])
        target: Target | None = None
        refused = ""
        try:
            target = await self.deliverer.target(head["url"])
        except DestinationRefused as exc:
            refused = str(exc)
        for row in rows:
            event = _Event(**{k: row[k] for k in _EVENT_FIELDS}, event_id=str(row["event_id"]))
            if not event.due:
                return False
            if target is None:
                attempt = Attempt(datetime.now(UTC), 0.0, error=f"refused: {refused}")
            else:
                body = self._body(endpoint_id, event, final_at)
                timestamp = int(time.time())
                headers = {
                    "Recchain-Event-Id": event.event_id,
                    "Idempotency-Key": event.event_id,
                    "Recchain-Event-Type": event.type,
                    "Recchain-Sequence": str(event.seq),
                    signing.HEADER: signing.sign(secrets, timestamp, body),
                }
                attempt = await self.deliverer.post(target, headers, body)
            delivered, still_held = await self._record(endpoint_id, event, attempt)
            if not delivered or not still_held:
                return False
        return True

    def _body(self, endpoint_id: int, event: _Event, final_at: int | None) -> bytes:
        data = json.loads(event.payload, parse_float=Decimal)
        finalized = final_at is None or event.block_height <= final_at
        doc = {
            "id": event.event_id,
            "type": event.type,
            "sequence": event.seq,
            "endpointId": endpoint_id,
            "createdAt": event.created_at.isoformat(),
            "block": {
                "height": event.block_height,
                "hash": event.index_block_hash,
                "finalized": finalized,
            },
            "data": render(event.type, data),
        }
        return json.dumps(doc, separators=(",", ":"), default=str).encode()

    async def _record(self, endpoint_id: int, event: _Event, attempt: Attempt) -> tuple[bool, bool]:
        """Store the attempt; (move on to the next event?, lock still held?)."""
        label = str(endpoint_id)
        self.metrics.attempt_seconds.observe(attempt.duration_ms / 1000)
        if attempt.ok:
            outcome, delay = "delivered", None
        elif event.expired:
            outcome, delay = "dead", None
            log.warning(
                "webhook endpoint %d: event %s (seq %d) is a dead letter after %d attempts: %s",
                endpoint_id, event.event_id, event.seq, event.attempts + 1,
                attempt.error or f"HTTP {attempt.status}",
            )  # fmt: skip
        else:
            outcome = "pending"
            delay = backoff(self.settings, event.attempts + 1, attempt.retry_after)
        assert self._pool is not None
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                _RECORD,
                {
                    "id": event.id,
                    "endpoint": endpoint_id,
                    "outcome": outcome,
                    "delay": delay,
                    "status": attempt.status,
                    "error": attempt.error,
                    "response": attempt.response,
                    "started": attempt.started_at,
                    "ms": attempt.duration_ms,
                    "pid": self._lock_pid,
                    "space": LOCK_SPACE,
                },
            )
            row = await cur.fetchone()
        still_held = bool(row and row[1])
        if not still_held:
            log.warning("webhook endpoint %d: lock lost; leaving it to another sender", endpoint_id)
        self.metrics.deliveries.labels(label, "failed" if outcome == "pending" else outcome).inc()
        if outcome == "delivered":
            self.delivered += 1
            lag = (datetime.now(UTC) - event.created_at).total_seconds()
            self.metrics.delivery_lag.observe(max(lag, 0.0))
        return outcome != "pending", still_held

    # ------------------------------------------------------------------ housekeeping
    async def _gauges(self) -> None:
        assert self._pool is not None
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(_GAUGES)).fetchall()
        seen = set()
        for endpoint_id, pending, oldest, dead in rows:
            label = str(endpoint_id)
            seen.add(label)
            self.metrics.queue_depth.labels(label).set(pending)
            self.metrics.oldest_pending.labels(label).set(float(oldest or 0.0))
            self.metrics.dead_letters.labels(label).set(dead)
        for gone in self._known_endpoints - seen:
            for gauge in (
                self.metrics.queue_depth,
                self.metrics.oldest_pending,
                self.metrics.dead_letters,
            ):
                with contextlib.suppress(KeyError):
                    gauge.remove(gone)
        self._known_endpoints = seen

    async def _prune(self) -> None:
        """Retention (`webhooks.retention_days`), by one sender at a time, in small chunks."""
        assert self._pool is not None
        days = self.settings.webhooks.retention_days
        async with self._pool.connection() as conn:
            got = await (
                await conn.execute("SELECT pg_try_advisory_lock(%s, 0)", (LOCK_SPACE,))
            ).fetchone()
            if not got or not got[0]:
                return
            try:
                while True:
                    cur = await conn.execute(
                        "DELETE FROM webhook_events WHERE id IN (SELECT id FROM webhook_events"
                        " WHERE status <> 'pending' AND created_at < now()"
                        " - make_interval(secs => %s) LIMIT 5000)",
                        (days * 86400.0,),
                    )
                    if cur.rowcount < 5000:
                        break
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s, 0)", (LOCK_SPACE,))
