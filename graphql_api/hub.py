"""Subscription fan-out: one LISTEN connection per process, shared topics, push on change.

A topic is one distinct subscription (kind + arguments); every subscriber with the same
arguments shares it, so a notification costs one query per distinct topic, not per socket.
A topic recomputes only when the notification names something it depends on, and pushes only
when the computed answer differs from the last one it pushed.

The LISTEN connection goes to the primary (`database_url`), where NOTIFY happens; queries go to
the API's read database, which may be a hot standby (`api.read_database_url`). A listener task
receives notifications and, with a replica, stamps each batch with the primary's WAL insert
position; a dispatcher task handles the batches in order, each after the replica has replayed
that far (replica.py), so a push is never computed from a snapshot older than its notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from db.channels import BLOCKS, RELAY
from graphql_api import metrics
from graphql_api.fanout import CURRENT, SharedStream
from graphql_api.replica import Replica, insert_lsn

log = logging.getLogger(__name__)
QUEUE_SIZE = 256

# compute(channel, payload) -> items to push (empty = nothing for this topic).
Compute = Callable[[str, dict[str, Any]], Awaitable[list[Any]]]


@dataclass
class Topic:
    key: str
    compute: Compute
    fingerprint: Callable[[Any], str]
    # Each queue feeds one subscriber, or a shared stream serving many (see fanout.py).
    queues: dict[asyncio.Queue[Any], SharedStream | None] = field(default_factory=dict)
    last: str | None = None


@dataclass
class Batch:
    """Notifications received together, and the primary's WAL position when they were."""

    notes: list[psycopg.Notify]
    lsn: int | None


class Hub:
    def __init__(self, listen_url: str, replica: Replica | None = None) -> None:
        self.listen_url = listen_url
        self.replica = replica
        self.topics: dict[str, Topic] = {}
        self.streams: dict[str, SharedStream] = {}
        self._task: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._listening = asyncio.Event()
        self._inbox: list[Batch] = []
        self._wake = asyncio.Event()

    @property
    def subscriber_count(self) -> int:
        """Subscriptions that receive pushes (a shared stream counts its members)."""
        return sum(
            1 if shared is None else len(shared.members)
            for t in self.topics.values()
            for shared in t.queues.values()
        )

    async def start(self) -> None:
        """Open the LISTEN connection (once); returns when it is listening."""
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="recchain-api-dispatch")
        if self._task is None or self._task.done():
            self._listening.clear()
            self._task = asyncio.create_task(self._listen(), name="recchain-api-listen")
        await asyncio.wait_for(self._listening.wait(), timeout=10)

    async def stop(self) -> None:
        for task in (self._task, self._dispatcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._dispatcher = None

    async def sync(self) -> None:
        """Until the read database has every commit the primary has now (no-op without a
        replica): for a read that follows no notification but must not be older than one."""
        if self.replica is not None:
            await self.replica.sync()

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.listen_url, autocommit=True
                ) as conn:
                    self._conn = conn
                    await conn.execute(f"LISTEN {BLOCKS}")
                    await conn.execute(f"LISTEN {RELAY}")
                    self._listening.set()
                    delay = 0.5
                    while True:
                        # At least one; the rest of the same packet comes with it.
                        notes = [n async for n in conn.notifies(stop_after=1)]
                        # Those arriving meanwhile wait in psycopg's backlog for the next turn,
                        # whose position is later still.
                        lsn = await insert_lsn(conn) if self.replica is not None else None
                        self._inbox.append(Batch(notes, lsn))
                        metrics.NOTIFICATIONS_PENDING.inc(len(notes))
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect: a DB restart must not end subscriptions
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                self._conn = None

    async def _dispatch(self) -> None:
        """Batches in arrival order; everything pending shares one replica wait."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._inbox:
                batches, self._inbox = self._inbox, []
                lsns = [b.lsn for b in batches if b.lsn is not None]
                if self.replica is not None and lsns:
                    await self.replica.wait(max(lsns))
                for batch in batches:
                    for note in batch.notes:
                        try:
                            await self.dispatch(note.channel, note.payload)
                        except asyncio.CancelledError:
                            raise
                        except Exception:
                            log.exception("dispatching a notification on %s failed", note.channel)
                        finally:
                            metrics.NOTIFICATIONS_PENDING.dec()

    async def dispatch(self, channel: str, raw: str) -> None:
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            log.warning("ignoring a non-JSON notification on %s", channel)
            return
        topics = [t for t in list(self.topics.values()) if t.queues]
        results = await asyncio.gather(
            *(t.compute(channel, payload) for t in topics), return_exceptions=True
        )
        for topic, items in zip(topics, results, strict=True):
            if isinstance(items, BaseException):
                log.error("subscription %s failed to compute: %s", topic.key, items)
                continue
            for item in items:
                mark = topic.fingerprint(item)
                if mark == topic.last:
                    continue
                topic.last = mark
                for q in list(topic.queues):
                    if q.full():  # a slow consumer loses its oldest update, never blocks others
                        with contextlib.suppress(asyncio.QueueEmpty):
                            q.get_nowait()
                    q.put_nowait(item)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, key: str, compute: Compute, fingerprint: Callable[[Any], str]
    ) -> AsyncIterator[asyncio.Queue[Any]]:
        await self.start()
        topic = self.topics.get(key)
        if topic is None:
            topic = self.topics[key] = Topic(key, compute, fingerprint)
        queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE_SIZE)
        shared = CURRENT.get()
        topic.queues[queue] = shared
        if shared is None:  # a shared stream counts its own members
            metrics.SUBSCRIPTIONS.inc()
        try:
            yield queue
        finally:
            if shared is None:
                metrics.SUBSCRIPTIONS.dec()
            topic.queues.pop(queue, None)
            if not topic.queues and self.topics.get(key) is topic:
                del self.topics[key]


def fingerprint(value: Any) -> str:
    return hashlib.sha1(json.dumps(value, default=str, sort_keys=True).encode()).hexdigest()
