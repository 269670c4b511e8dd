"""Subscription fan-out: one LISTEN connection per process, shared topics, push on change.

A topic is one distinct subscription (kind + arguments); every subscriber with the same
arguments shares it. Topics are grouped by kind (one per subscription root field,
subscriptions.py), and a notification is recomputed per kind, not per topic: the kind reads
what the notification names in a few set-based statements (one for every changed listing, one
for every subscribed certificate that changed...) and hands each concerned topic its part, so
the cost of a notification grows with what changed, not with the number of topics. A topic's
subscriber (a socket's operation, or a shared stream serving many, fanout.py) is a `Sink`, and
is pushed only what differs from the last thing it was pushed.

The LISTEN connection goes to the primary (`database_url`), where NOTIFY happens; queries go to
the API's read database, which may be a hot standby (`api.read_database_url`). A listener task
receives notifications and, with a replica, stamps each batch with the primary's WAL insert
position; a dispatcher task handles the batches in order, each after the replica has replayed
that far (replica.py), so a push is never computed from a snapshot older than its notification.
A batch the replica has not replayed within `api.read_replica_push_wait_s` is computed on the
primary instead (`primary_reader`): a lagging replica delays pushes by that bound at most.
A subscription that starts with something of its own (relayStatus's current status, a resumed
subscription's missed changes) queues that read with the dispatcher too, stamped with the
primary's position at subscription time: it is computed in order with the notifications, so a
subscriber never receives an older state after a newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import psycopg

from db.channels import BLOCKS, RELAY
from graphql_api import metrics
from graphql_api.answercache import TIP_SQL, AnswerCache, tip_of
from graphql_api.db import Reader
from graphql_api.fanout import CURRENT, SharedStream
from graphql_api.replica import Replica, insert_lsn

log = logging.getLogger(__name__)
QUEUE_SIZE = 256
RECONNECT_S = 0.5  # first wait before reconnecting the LISTEN connection (doubling to 10 s)
# Each API process's LISTEN connection, as pg_stat_activity shows it on the primary.
LISTEN_NAME = f"recchain-api-listen:{socket.gethostname()}:{os.getpid()}"[:63]

# A subscriber's own first items, read once the dispatcher reaches them.
Initial = Callable[[Reader], Awaitable[list[Any]]]


@dataclass(eq=False)
class Sink:
    """One consumer of a topic: a subscription's queue (or a shared stream's)."""

    queue: asyncio.Queue[Any]
    shared: SharedStream | None
    last: str | None = None
    # Until its first read is done, a subscriber takes no pushes: that read comes after them in
    # the dispatcher's order, so it already shows what they would have brought.
    starting: bool = False

    def put(self, item: Any) -> None:
        if self.queue.full():  # a slow consumer loses its oldest update, never blocks others
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(item)


@dataclass(eq=False)
class Topic:
    key: str
    kind: Kind
    args: Any
    sinks: dict[Sink, None] = field(default_factory=dict)  # insertion-ordered set


class Kind:
    """The topics of one subscription field and how a notification recomputes all of them.

    One instance per hub. `compute` returns the items each concerned topic gets; it must read
    in statements whose number does not grow with the number of topics."""

    channels: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        self.topics: dict[str, Topic] = {}

    def add(self, topic: Topic) -> None:
        self.topics[topic.key] = topic

    def remove(self, topic: Topic) -> None:
        self.topics.pop(topic.key, None)

    async def compute(
        self, reader: Reader, channel: str, payload: dict[str, Any]
    ) -> Iterable[tuple[Topic, list[Any]]]:
        raise NotImplementedError

    def fingerprint(self, item: Any) -> str:
        return fingerprint(item)


K = TypeVar("K", bound=Kind)


@dataclass
class Batch:
    """Notifications received together, and the primary's WAL position when they were."""

    notes: list[psycopg.Notify]
    lsn: int | None


@dataclass
class Start:
    """A subscriber's own first read (see `Hub.subscribe`)."""

    sink: Sink
    topic: Topic
    read: Initial
    lsn: int | None


class Hub:
    def __init__(
        self,
        listen_url: str,
        reader: Callable[[], Reader],
        replica: Replica | None = None,
        primary_reader: Callable[[], Reader] | None = None,
        push_wait_s: float | None = None,
        answers: AnswerCache | None = None,
    ) -> None:
        self.listen_url = listen_url
        # Told the tip by this connection: what it may serve depends on it (answercache.py).
        self.answers = answers
        self.reader = reader
        self.replica = replica
        self.primary_reader = primary_reader
        # Without a primary reader to fall back on, waiting longer is the only fresh answer.
        self.push_wait_s = push_wait_s if primary_reader is not None else None
        self._from_primary = False
        self.topics: dict[str, Topic] = {}
        self.kinds: dict[type[Kind], Kind] = {}
        self.streams: dict[str, SharedStream] = {}
        self._task: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._listening = asyncio.Event()
        self._inbox: list[Batch | Start] = []
        self._wake = asyncio.Event()
        # The newest block notification whose pushes are out: how far this process follows.
        self.notified_height: int | None = None
        self.notified_hash: str | None = None
        self.resyncs = 0

    @property
    def subscriber_count(self) -> int:
        """Subscriptions that receive pushes (a shared stream counts its members)."""
        return sum(
            1 if sink.shared is None else len(sink.shared.members)
            for t in self.topics.values()
            for sink in t.sinks
        )

    def launch(self) -> None:
        """Start listening (once), without waiting: at application start-up, so every process
        holds its LISTEN connection before its first subscriber."""
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="recchain-api-dispatch")
        if self._task is None or self._task.done():
            self._listening.clear()
            self._task = asyncio.create_task(self._listen(), name="recchain-api-listen")

    async def start(self) -> None:
        """Listening (once); returns when the LISTEN connection is up."""
        self.launch()
        await asyncio.wait_for(self._listening.wait(), timeout=10)

    async def stop(self) -> None:
        for task in (self._task, self._dispatcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._dispatcher = None

    # -- receiving ------------------------------------------------------------------------
    async def _listen(self) -> None:
        delay = RECONNECT_S
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.listen_url, autocommit=True, application_name=LISTEN_NAME
                ) as conn:
                    self._conn = conn
                    await conn.execute(f"LISTEN {BLOCKS}")
                    await conn.execute(f"LISTEN {RELAY}")
                    if self.answers is not None:
                        # After LISTEN: a commit from here on is notified, one before is read.
                        self.answers.learn(await _read_tip(conn))
                    if self._listening.is_set():
                        # A reconnection: what was notified meanwhile never reached us.
                        lsn = await insert_lsn(conn) if self.replica is not None else None
                        self._queue(Batch(self._resync_notes(), lsn), 2)
                    self._listening.set()
                    delay = RECONNECT_S
                    while True:
                        # At least one; the rest of the same packet comes with it.
                        notes = [n async for n in conn.notifies(stop_after=1)]
                        if self.answers is not None:
                            for note in notes:
                                if note.channel == BLOCKS:
                                    self.answers.notified(note.payload)
                        # Those arriving meanwhile wait in psycopg's backlog for the next turn,
                        # whose position is later still.
                        lsn = await insert_lsn(conn) if self.replica is not None else None
                        self._queue(Batch(notes, lsn), len(notes))
            except asyncio.CancelledError:
                self._conn = None
                if self.answers is not None:
                    self.answers.forget()
                raise
            except Exception as exc:  # reconnect: a DB restart must not end subscriptions
                self._conn = None
                if self.answers is not None:
                    self.answers.forget()  # notifications are missed until LISTEN is back
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _resync_notes(self) -> list[psycopg.Notify]:
        """Stand-ins for the notifications lost while the LISTEN connection was down: every
        topic re-reads what changed since the last block it was notified of (the kinds treat
        `truncated` as "changes unknown"); a push goes out only where the answer differs."""
        self.resyncs += 1
        since = (self.notified_height or 0) + 1
        blocks = {"height": since, "truncated": True, "resync": True, "rolled_back": []}
        return [
            psycopg.Notify(BLOCKS, json.dumps(blocks), 0),
            psycopg.Notify(RELAY, json.dumps({"resync": True}), 0),
        ]

    def _queue(self, item: Batch | Start, pending: int) -> None:
        self._inbox.append(item)
        metrics.NOTIFICATIONS_PENDING.inc(pending)
        self._wake.set()

    # -- dispatching ----------------------------------------------------------------------
    async def _dispatch(self) -> None:
        """Inbox items in arrival order; everything pending shares one replica wait."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._inbox:
                items, self._inbox = self._inbox, []
                lsns = [i.lsn for i in items if i.lsn is not None]
                reader = self.reader
                if self.replica is not None and lsns:
                    if not await self.replica.wait(max(lsns), self.push_wait_s):
                        assert self.primary_reader is not None  # no bound without it
                        reader = self.primary_reader
                    self._fell_back(reader is not self.reader)
                starts: list[Start] = []
                for item in items:
                    if isinstance(item, Start):
                        starts.append(item)  # consecutive ones run together
                        continue
                    await self._starts(starts, reader)
                    starts = []
                    for note in item.notes:
                        try:
                            await self.dispatch(note.channel, note.payload, reader)
                        except asyncio.CancelledError:
                            raise
                        except Exception:
                            log.exception("dispatching a notification on %s failed", note.channel)
                        finally:
                            metrics.NOTIFICATIONS_PENDING.dec()
                await self._starts(starts, reader)

    def _fell_back(self, from_primary: bool) -> None:
        """One log line per change between the replica and the primary as the push source."""
        if from_primary:
            metrics.PUSHES_FROM_PRIMARY.inc()
        if from_primary != self._from_primary:
            if from_primary:
                log.warning(
                    "the read replica has not replayed a notified commit within %.1f s;"
                    " pushes are computed on the primary until it catches up",
                    self.push_wait_s,
                )
            else:
                log.info("the read replica caught up; pushes are computed on it again")
        self._from_primary = from_primary

    async def _starts(self, starts: list[Start], reader: Callable[[], Reader]) -> None:
        if not starts:
            return
        results = await asyncio.gather(*(s.read(reader()) for s in starts), return_exceptions=True)
        for start, items in zip(starts, results, strict=True):
            start.sink.starting = False
            if start.sink not in start.topic.sinks:
                continue  # gone meanwhile
            if isinstance(items, BaseException):
                if isinstance(items, asyncio.CancelledError):
                    raise items
                # The subscriber's generator raises it: the client gets an error, not silence.
                start.sink.put(items)
                continue
            for item in items:
                mark = start.topic.kind.fingerprint(item)
                if start.sink.last != mark:  # a notification may have brought it already
                    start.sink.last = mark
                    start.sink.put(item)

    async def dispatch(
        self, channel: str, raw: str, reader: Callable[[], Reader] | None = None
    ) -> None:
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            log.warning("ignoring a non-JSON notification on %s", channel)
            return
        if not isinstance(payload, dict):
            log.warning("ignoring a notification on %s that is not an object", channel)
            return
        try:
            await self._recompute(channel, payload, reader or self.reader)
        finally:
            if (
                channel == BLOCKS
                and isinstance(payload.get("height"), int)
                and not payload.get("resync")
            ):
                self.notified_height = payload["height"]
                self.notified_hash = payload.get("hash")
                metrics.NOTIFIED_HEIGHT.set(payload["height"])

    async def _recompute(
        self, channel: str, payload: dict[str, Any], reader: Callable[[], Reader]
    ) -> None:
        kinds = [k for k in self.kinds.values() if channel in k.channels and k.topics]
        results = await asyncio.gather(
            *(k.compute(reader(), channel, payload) for k in kinds), return_exceptions=True
        )
        for kind, result in zip(kinds, results, strict=True):
            if isinstance(result, BaseException):
                log.error("subscriptions %s failed to compute: %r", type(kind).__name__, result)
                continue
            marks: dict[int, str] = {}  # an item shared by several topics is hashed once
            for topic, items in result:
                for item in items:
                    mark = marks.get(id(item))
                    if mark is None:
                        mark = marks[id(item)] = kind.fingerprint(item)
                    for sink in list(topic.sinks):
                        if sink.last != mark and not sink.starting:
                            sink.last = mark
                            sink.put(item)

    # -- subscribing ----------------------------------------------------------------------
    def kind(self, kind_type: type[K]) -> K:
        kind = self.kinds.get(kind_type)
        if kind is None:
            kind = self.kinds[kind_type] = kind_type()
        assert isinstance(kind, kind_type)
        return kind

    @contextlib.asynccontextmanager
    async def subscribe(
        self,
        kind_type: type[Kind],
        key: str,
        args: Any = None,
        initial: Initial | None = None,
    ) -> AsyncIterator[asyncio.Queue[Any]]:
        """Join the topic `key` of `kind_type`; the queue receives its pushes. `initial`, if
        given, is read for this subscriber alone, in order with the notifications."""
        await self.start()
        kind = self.kind(kind_type)
        topic = self.topics.get(key)
        if topic is None:
            topic = self.topics[key] = Topic(key, kind, args)
            kind.add(topic)
        sink = Sink(asyncio.Queue(QUEUE_SIZE), CURRENT.get(), starting=initial is not None)
        topic.sinks[sink] = None
        if sink.shared is None:  # a shared stream counts its own members
            metrics.SUBSCRIPTIONS.inc()
        try:
            if initial is not None:
                try:
                    lsn = await self.replica.primary_lsn() if self.replica is not None else None
                except Exception:
                    sink.starting = False
                    raise
                self._queue(Start(sink, topic, initial, lsn), 0)
            yield sink.queue
        finally:
            if sink.shared is None:
                metrics.SUBSCRIPTIONS.dec()
            topic.sinks.pop(sink, None)
            if not topic.sinks and self.topics.get(key) is topic:
                del self.topics[key]
                kind.remove(topic)


async def _read_tip(conn: psycopg.AsyncConnection[Any]) -> tuple[int, str] | None:
    cur = await conn.execute(TIP_SQL)
    row = await cur.fetchone()
    return None if row is None else tip_of({"block_height": row[0], "index_block_hash": row[1]})


def fingerprint(value: Any) -> str:
    return hashlib.sha1(json.dumps(value, default=str, sort_keys=True).encode()).hexdigest()
