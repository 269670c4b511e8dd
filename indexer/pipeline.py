"""The block pipeline: raw request -> canonical/fork decision -> handlers -> one transaction.

`Indexer.process` takes a batch of requests (one at the tip, hundreds in catch-up) and commits
them in one transaction together with the checkpoint; NOTIFYs are issued inside it, so PostgreSQL
delivers them exactly when (and only if) the data is visible.

Forks (STACKS.md §2): a block whose parent is the tip extends it; a block higher than the tip
on another branch triggers a reorg: walk back to the common ancestor, undo everything above it
using the block ranges of the versioned tables (delete versions that start above it, reopen those
closed above it, delete facts above it), then re-apply the new branch from its stored events. A
block whose parent is unknown is stored as an orphan and applied when its parent arrives.

The root is the first indexed block: the one at `indexer.start_height` (or whose parent is the
genesis hash), accepted without its parent. Blocks below it are stored raw and never applied, so
nothing exists below the root, and a sibling of the root (another block at that height: 1-block
forks there are ordinary on a real chain) is a root too: when its branch grows higher than the
tip, everything from the root's height up is rolled back and the new branch applied.

Refusals: a payload that cannot be interpreted is stored with its reason (`raw_requests.error`)
and answered `rejected`; the same payload met again is interpreted again (it is never remembered
as what it claims to be, so a fixed decoder, or the genuine copy of a block, gets through) and,
refused again, answered `rejected` with `repeat` set. Rows PostgreSQL refuses (`UNSTORABLE`)
refuse their request alone, the rest of its batch being redone request by request. A refused
block the chain needs, a fork beyond the finality horizon (`held`: recorded, nothing after it
processed) and a body over the size limit open a row of `chain_holds`, resolved in the commit
that removes its cause.

Writes are staged first (`_seal`: every row formatted as a binary COPY stream, the checkpoint
position, the NOTIFY payload) and then sent (`_write`), so the CPU work of a batch is done before
its first statement. Catch-up (`process_ahead`, used by `recchain replay`) overlaps the two: while
a writer thread sends batch N's staged statements on its own connection and commits them with the
checkpoint, this connection only reads, and batch N+1 is decided, handled and staged in memory
(entities N changed are carried over; dedup also checks N's payload hashes), so PostgreSQL and
Python work at the same time on the two cores. Commit order, the one-transaction-per-batch rule
and the checkpoint are unchanged. Anything that would read or change rows still in flight (a fork,
an orphan, mempool requests) first waits for the writer and then runs the batch the plain way
(`process`). The tip path (`process`) is unchanged: one batch, staged and sent in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from db import indexes
from db.channels import BLOCKS
from db.finality import signed_final_height
from db.leader import Leadership
from db.models.base import FACT_TABLES, VERSIONED_TABLES
from db.models.chain import HOLD_KINDS
from db.session import create_engine
from db.webhooks import feed as webhooks
from indexer import metrics
from indexer.block import Block, BlockHeader, Event, Tx, parse_header, parse_new_block
from indexer.errors import EventSchemaError, FinalityError, PayloadError
from indexer.handlers import HANDLERS, Ctx, MetadataJob, apply_events
from indexer.schema import SCHEMAS, decode_event
from indexer.state import (
    CHAIN_COLUMNS,
    COLUMNS,
    KEYS,
    Carry,
    EntityCache,
    Step,
    load_column_types,
    send,
    stage_copy,
)
from infra.config import Settings
from stacks.hashing import sha512_256

log = logging.getLogger("recchain.indexer")

CHECKPOINT = "indexer"
GENESIS = "0x" + "00" * 32
NOTIFY_LIMIT = 7900  # PostgreSQL's NOTIFY payload limit is 8000 bytes
OBSERVER_PATHS = frozenset(
    {
        "/new_block",
        "/new_burn_block",
        "/new_mempool_tx",
        "/drop_mempool_tx",
        "/attachments/new",
        "/new_microblocks",
        "/stackerdb_chunks",
        "/proposal_response",
    }
)
_RAW_COLS = ["id", "received_at", "event_path", "payload", "payload_hash", "error"]
_BLOCK_COLS = [
    "index_block_hash", "block_hash", "block_height", "parent_index_block_hash",
    "parent_block_hash", "burn_block_hash", "burn_block_height", "burn_block_time", "block_time",
    "canonical", "orphan", "tx_count", "event_count", "raw_request_id",
    "tenure_height", "consensus_hash", "signer_signature_hash", "signer_count",
]  # fmt: skip


_NO_SUMMARY = (None, None, None, None, None)  # a burnchain operation: no Stacks bytes


@dataclass(slots=True)
class Request:
    path: str
    payload: str
    received_at: datetime | None = None
    position: int | None = None  # e.g. the replay file's request id
    # A `/new_block` already parsed off the event loop (catch-up parses in a worker process):
    # the Block, or the PayloadError text that parsing raised.
    parsed: Block | str | None = None
    digest: bytes | None = None  # sha256 of the payload, if already computed (`payload_hash`)
    # Refused before interpretation (e.g. a body that is not UTF-8): stored with this reason.
    refused: str | None = None


@dataclass(slots=True)
class Outcome:
    # applied | stored | orphan | duplicate | ignored | rejected | held
    status: str
    reason: str | None = None
    # `rejected` again: the same payload was refused before (and is recorded already).
    repeat: bool = False

    @property
    def ok(self) -> bool:
        return self.status not in ("rejected", "held")


@dataclass(slots=True)
class _Known:
    height: int
    parent: str
    canonical: bool
    orphan: bool


@dataclass(slots=True)
class _Hold:
    """A row of `chain_holds` to open (or count one more attempt of)."""

    kind: str
    reason: str
    path: str
    block_hash: str | None = None
    height: int | None = None
    raw_id: int | None = None


@dataclass(slots=True)
class _Batch:
    cache: EntityCache = field(default_factory=EntityCache)
    raw_rows: list[tuple[Any, ...]] = field(default_factory=list)
    # Blocks of this batch not yet written, by hash (a reorg looks them up once per block).
    new_blocks: dict[str, tuple[Block, int | None]] = field(default_factory=dict)
    jobs: list[MetadataJob] = field(default_factory=list)
    refresh: list[tuple[str, list[int] | None]] = field(default_factory=list)
    mined: dict[str, tuple[str, str | None, str, int]] = field(default_factory=dict)
    rolled_back: list[str] = field(default_factory=list)
    fork_heights: list[int] = field(default_factory=list)
    position: int | None = None
    blocks: int = 0
    events: int = 0
    ignored: int = 0  # blocks below indexer.start_height
    hashes: set[bytes] = field(default_factory=set)  # payloads stored by this batch
    cleared: list[int] = field(default_factory=list)  # refused raw requests accepted now
    holds: list[_Hold] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)  # blocks written by this batch
    paths: set[str] = field(default_factory=set)  # event paths accepted by this batch
    # Webhook feed: the tip height before the batch, and the lowest height it rolled back to.
    feed_prior: int = 0
    feed_low: int = 0


@dataclass(slots=True)
class _Commit:
    """Everything a batch writes, staged: sent by `Indexer._write` on any connection."""

    steps: list[Step]
    jobs: list[MetadataJob]
    refresh: list[tuple[str, list[int] | None]]
    tip: tuple[str, int] | None
    position: int | None
    notify: str | None
    carry: Carry
    blocks: int
    events: int
    fork_heights: list[int]
    tip_time: int | None
    source: str | None  # the replay position's key (`Indexer.source`)
    cleared: list[int]
    holds: list[_Hold]
    stored: list[str]
    paths: set[str]
    feed: webhooks.FeedSpan | None
    open_holds: dict[str, int] | None = None  # after the commit, when holds were involved


class _Serial(Exception):
    """Raised inside `process_ahead` by a path that must see the rows of batches in flight."""


class _Writer:
    """A thread with its own event loop and connection that commits staged batches in order, so
    that PostgreSQL works on batch N while the caller's thread prepares batch N+1 (the thread
    waits on the socket almost all the time, which leaves the GIL to the caller)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="catch-up writer", daemon=True
        )
        self.thread.start()
        self.conn: AsyncConnection | None = None
        self._engine: AsyncEngine | None = None
        self.pending: asyncio.Future[_Commit] | None = None
        self.hashes: set[bytes] = set()  # payload hashes of the batch in flight
        self.requests: Sequence[Request] = ()  # the batch in flight, to redo it if it fails

    def run(self, coro: Any) -> asyncio.Future[Any]:
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def open(self) -> AsyncConnection:
        self._engine = create_engine(self.url, pool_size=1, max_overflow=0)
        self.conn = await self._engine.connect()
        return self.conn

    async def _close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        if self._engine is not None:
            await self._engine.dispose()

    async def close(self) -> None:
        try:
            await self.run(self._close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            await asyncio.to_thread(self.thread.join)
            self.loop.close()


def _prefetch_keys(kind: str) -> tuple[tuple[str, str], ...] | None:
    if kind.startswith("verifier-"):
        return (("verifiers", "verifier"),)
    if kind.startswith("facility-"):
        return (("facilities", "facility-id"),)
    if kind.startswith("report-"):
        return (("generation_reports", "report-id"),)
    if kind.startswith("certificate-") and kind != "certificate-split":
        return (("certificates", "token-id"),)
    if kind == "sale":
        return (("listings", "listing-id"), ("certificates", "token-id"))
    if "listing-id" in SCHEMAS[kind]:
        return (("listings", "listing-id"),)
    return None


# The entities each schema-checked kind touches (`Indexer._prefetch`; other kinds are examined).
_PREFETCH = {k: keys for k in SCHEMAS if (keys := _prefetch_keys(k)) is not None}


def payload_hash(payload: str) -> bytes:
    """The dedup key of a raw request (hashlib releases the GIL on payloads this size, so a
    parse thread computes it alongside the event loop)."""
    return hashlib.sha256(payload.encode()).digest()


class Indexer:
    """Owns one database connection (and, between `start_ahead` and `stop_ahead`, the writer's);
    not safe for concurrent `process`/`process_ahead` calls (serialise them)."""

    def __init__(
        self, conn: AsyncConnection, settings: Settings, *, enqueue_metadata: bool = True
    ) -> None:
        self.conn = conn
        self.enqueue_metadata = enqueue_metadata
        self.settings = settings
        self.watched = settings.watched_contracts
        self.tip: tuple[str, int] | None = None
        self._known: dict[str, _Known] = {}
        # Hashes looked up in this batch and not found (cleared per batch: blocks may arrive).
        self._absent: set[str] = set()
        # parent hash -> orphans waiting for it that this process has seen (DB ones are queried).
        self._orphans: dict[str, list[str]] = {}
        self._has_relay = False
        # Whether `mempool_txs` holds pending rows: without any, marking a batch's transactions
        # mined is skipped (catch-up of an archive without mempool requests).
        self._has_mempool = False
        self._db_orphans = 0
        self._pg: psycopg.AsyncConnection[Any] | None = None
        self._tip_time: int | None = None
        self.last_events = 0  # watched events applied by the last `process` call
        # Catch-up pipelining (see the module docstring).
        self._writer: _Writer | None = None
        self._ahead = False  # inside `process_ahead`: paths needing in-flight rows bail out
        self._carry: Carry | None = None
        # The key under which request positions are committed (`recchain replay` names its
        # archive); None: positions are not kept.
        self.source: str | None = None
        self._open_holds: dict[str, int] = {}
        # Requests of a batch already answered, refused on its redo: (position, path, reason).
        self.late_rejections: list[tuple[int | None, str, str]] = []
        # Set while leading (`recchain index`): every write transaction checks it first, so a
        # process that lost the lock cannot commit beside its successor (db/leader.py).
        self.fence: Leadership | None = None

    @property
    def pg(self) -> psycopg.AsyncConnection[Any]:
        assert self._pg is not None, "call start() first"
        return self._pg

    async def _begin(self) -> None:
        # Statements go through the raw psycopg connection (COPY); SQLAlchemy must still know a
        # transaction is open so that commit/rollback and the metadata session's savepoint work.
        if not self.conn.in_transaction():
            await self.conn.begin()

    async def start(self, *, keep_deferred: bool = False) -> None:
        """Load the block index; first build the secondary indexes an interrupted catch-up
        replay left deferred (`db.indexes`), unless `keep_deferred` (a resumed replay, which
        builds them at its end)."""
        await self._begin()
        raw = await self.conn.get_raw_connection()
        self._pg = raw.driver_connection
        await self._load()
        await self.conn.commit()
        if not keep_deferred:
            await self.build_deferred_indexes()

    async def defer_indexes(self) -> int:
        """Before a catch-up replay: drop the deferrable secondary indexes if nothing is indexed
        yet (`db.indexes`). Returns how many are deferred, counting those an interrupted replay
        left deferred."""
        await self._begin()
        try:
            await self._fence(self.pg)
            waiting = await indexes.pending(self.pg)
            if not waiting and self.tip is None:
                waiting = await indexes.defer(self.pg)
            await self.conn.commit()
        except BaseException:
            await self.conn.rollback()
            raise
        return waiting

    async def build_deferred_indexes(self) -> int:
        """Build the deferred indexes, each committed with the removal of its record."""
        await self._begin()
        todo = await indexes.deferred(self.pg)
        await self.conn.commit()
        started = time.monotonic()
        built = 0
        for name, definition in todo:
            await self._begin()
            try:
                await self._fence(self.pg)
                built += await indexes.build(self.pg, name, definition)
                await self.conn.commit()
            except BaseException:
                await self.conn.rollback()
                raise
        if built:
            log.info("built %d deferred index(es) in %.1f s", built, time.monotonic() - started)
        return built

    async def _load(self) -> None:
        self._known.clear()
        self._orphans.clear()
        cur = await self.pg.execute(
            "SELECT index_block_hash, block_height, coalesce(block_time, burn_block_time) "
            "FROM blocks WHERE canonical ORDER BY block_height DESC LIMIT 1"
        )
        row = await cur.fetchone()
        self.tip = (row[0], row[1]) if row else None
        if row is not None:  # from the start, not only after the next block
            metrics.TIP.set(row[1])
            if row[2]:
                metrics.set_tip_time(row[2])
        cur = await self.pg.execute("SELECT to_regclass('relay_txs') IS NOT NULL")
        self._has_relay = bool((await cur.fetchone())[0])  # type: ignore[index]
        cur = await self.pg.execute(
            "SELECT EXISTS (SELECT 1 FROM mempool_txs WHERE status = 'pending')"
        )
        self._has_mempool = bool((await cur.fetchone())[0])  # type: ignore[index]
        cur = await self.pg.execute("SELECT count(*) FROM blocks WHERE orphan")
        self._db_orphans = int((await cur.fetchone())[0])  # type: ignore[index]
        self._open_holds = await _count_holds(self.pg)
        _show_holds(self._open_holds)
        metrics.ORPHANS.set(self._db_orphans)
        await load_column_types(self.pg, ["raw_requests", "blocks", *CHAIN_COLUMNS, *COLUMNS])

    async def _fence(self, pg: psycopg.AsyncConnection[Any]) -> None:
        # First in every write transaction: its share lock on the epoch lasts until the commit,
        # so a successor's takeover waits for this transaction, or ends it (db/leader.py).
        if self.fence is not None:
            await self.fence.check(pg)

    async def ping(self) -> None:
        """One round trip on the data connection (readiness: raises if it is dead)."""
        await self._begin()
        await self.pg.execute("SELECT 1")
        await self.conn.commit()

    async def position(self) -> int | None:
        """The last request position committed under `source` (None: nothing yet)."""
        if self.source is None:
            return None
        await self._begin()
        cur = await self.pg.execute(
            "SELECT position FROM replay_positions WHERE source = %s", (self.source,)
        )
        row = await cur.fetchone()
        await self.conn.commit()
        return None if row is None else int(row[0])

    # ------------------------------------------------------------------ entry point
    async def process(self, requests: Sequence[Request]) -> list[Outcome]:
        """Apply `requests` in one transaction. Bad input is stored with its reason and
        answered as `rejected`; a fork beyond the finality horizon is `held` (recorded, not
        applied, and so are the requests after it); any other failure rolls everything back and
        raises."""
        if self._writer is not None:
            await self._drain()  # a batch in flight must commit first
        try:
            return await self._process_plain(requests)
        except FinalityError as exc:
            if len(requests) > 1:
                return await self._one_by_one(requests)
            return [await self._hold(requests[0], exc)]
        except UNSTORABLE as exc:
            if len(requests) > 1:
                return await self._one_by_one(requests)
            return [await self._refuse(requests[0], f"cannot be stored: {_first_line(exc)}")]

    async def _one_by_one(self, requests: Sequence[Request]) -> list[Outcome]:
        """A batch that failed as a whole, request by request: the culprit is refused or held
        alone and the others commit. Nothing after a held request is processed, so that a rerun
        (of a replay) starts again from it."""
        outcomes: list[Outcome] = []
        for i, request in enumerate(requests):
            (outcome,) = await self.process([request])
            outcomes.append(outcome)
            if outcome.status == "held":
                rest = "not processed: an earlier request of its batch is held"
                outcomes += [Outcome("held", rest) for _ in requests[i + 1 :]]
                break
        return outcomes

    async def _process_plain(self, requests: Sequence[Request]) -> list[Outcome]:
        batch = _Batch()
        self._absent.clear()
        self._carry = None  # this path reads the database, which is then up to date
        await self._begin()
        try:
            await self._fence(self.pg)
            outcomes = await self._process(batch, requests)
            commit = self._seal(batch)
            await self._write(commit, self.conn, self.pg)
            await self.conn.commit()
        except BaseException as exc:
            await self._reset(count=not isinstance(exc, (FinalityError, *UNSTORABLE)))
            raise
        self._log_ignored(batch)
        self.last_events = batch.events
        self._committed(commit)
        return outcomes

    # ------------------------------------------------------------------ catch-up pipelining
    async def start_ahead(self) -> None:
        """Enable `process_ahead`: open the writer's own connection (to the same database)."""
        assert self._writer is None
        with contextlib.suppress(ImportError):  # here, not in the writer's first batch
            from indexer.metadata import queue  # noqa: F401
        url = self.conn.engine.url.render_as_string(hide_password=False)
        writer = _Writer(url)
        try:
            await writer.run(writer.open())
        except BaseException:
            await writer.close()
            raise
        self._writer = writer

    async def stop_ahead(self) -> None:
        """Wait for the batches in flight to commit (raising a failure of theirs) and close the
        writer."""
        writer = self._writer
        if writer is None:
            return
        try:
            await self._drain()
        finally:
            self._writer = None
            self._carry = None
            await writer.close()

    async def process_ahead(self, requests: Sequence[Request]) -> list[Outcome]:
        """Like `process`, but the batch commits later, on the writer, in submission order; the
        outcomes are final unless a later call (or `stop_ahead`) raises the writer's failure, in
        which case nothing from that batch on was committed."""
        writer = self._writer
        assert writer is not None, "call start_ahead() first"
        batch = _Batch(cache=EntityCache(self._carry))
        self._absent.clear()
        await self._begin()
        self._ahead = True
        try:
            outcomes = await self._process(batch, requests)
            commit = self._seal(batch)
            await self.conn.commit()  # only reads ran here; ends their snapshot
        except _Serial:
            self._ahead = False
            await self.conn.rollback()
            await self._drain()
            await self._reset(count=False)  # undo this attempt's in-memory decisions
            return await self.process(requests)
        except BaseException:
            self._ahead = False
            try:
                await self._drain()
            finally:
                await self._reset()
            raise
        finally:
            self._ahead = False
        # One batch in flight: the carry and dedup cover exactly that one.
        if await self._drain():  # redone request by request: this batch was staged on it
            await self._reset(count=False)
            return await self.process(requests)
        self._log_ignored(batch)
        self.last_events = batch.events
        self._carry = commit.carry
        writer.hashes = batch.hashes
        writer.requests = requests
        writer.pending = writer.run(self._commit_on_writer(writer, commit))
        return outcomes

    async def _drain(self) -> bool:
        """Wait for the batch in flight. True when PostgreSQL refused its rows
        (`UNSTORABLE`) and it was redone request by request, refusing the culprit alone; the
        outcomes already returned for it then miss those refusals (`late_rejections`)."""
        writer = self._writer
        if writer is None or writer.pending is None:
            return False
        pending, writer.pending = writer.pending, None
        requests, writer.requests = writer.requests, ()
        try:
            self._committed(await pending)
        except UNSTORABLE:
            self._carry = None
            writer.hashes = set()
            await self._reset(count=False)
            redone = await self._one_by_one(requests)
            self.late_rejections += [
                (r.position, r.path, o.reason or "rejected")
                for r, o in zip(requests, redone, strict=True)
                if o.status == "rejected"
            ]
            return True
        except BaseException:
            self._carry = None
            raise
        finally:
            writer.hashes = set()
        return False

    async def _commit_on_writer(self, writer: _Writer, commit: _Commit) -> _Commit:
        """Runs on the writer's loop; reads nothing the caller's thread changes."""
        conn = writer.conn
        assert conn is not None
        if not conn.in_transaction():
            await conn.begin()
        try:
            pg = (await conn.get_raw_connection()).driver_connection
            assert pg is not None
            # The checkpoint commits in the same transaction as the rows, so a crash of the
            # server that loses the last commits loses them together: catch-up restarts from the
            # older checkpoint and redoes exactly those batches. Not waiting for the WAL flush
            # at each commit is therefore safe here (never at the tip, where an observer is
            # answered only after a durable commit).
            await pg.execute("SET LOCAL synchronous_commit = off")
            await self._fence(pg)
            await self._write(commit, conn, pg)
            await conn.commit()
        except BaseException:
            metrics.ERRORS.labels("transaction").inc()
            await conn.rollback()
            raise
        return commit

    async def _reset(self, count: bool = True) -> None:
        """After a failed or abandoned batch: roll back and reload the in-memory block index,
        which may describe rows that were never committed."""
        await self.conn.rollback()
        self._carry = None
        await self._begin()
        await self._load()
        await self.conn.commit()
        if count:
            metrics.ERRORS.labels("transaction").inc()

    def _log_ignored(self, batch: _Batch) -> None:
        if batch.ignored:
            log.info(
                "%d block(s) below indexer.start_height %d stored raw, not applied",
                batch.ignored, self.settings.indexer.start_height,
            )  # fmt: skip

    def _committed(self, commit: _Commit) -> None:
        if commit.open_holds is not None:
            self._open_holds = commit.open_holds
            _show_holds(commit.open_holds)
        metrics.ORPHANS.set(self._db_orphans)
        metrics.BLOCKS.inc(commit.blocks)
        metrics.EVENTS.inc(commit.events)
        if commit.tip is not None:
            metrics.TIP.set(commit.tip[1])
        if commit.tip_time:
            metrics.set_tip_time(commit.tip_time)
        for depth in commit.fork_heights:
            metrics.FORK_DEPTH.observe(depth)

    async def _refuse(self, request: Request, reason: str) -> Outcome:
        """Refuse a request whose rows the database would not take (a value beyond a column,
        say): stored with the reason like any refused payload."""
        request.digest = request.digest or payload_hash(request.payload)
        request.refused = reason
        # The payload itself may be what PostgreSQL refuses (a NUL character in text): it is
        # kept readable, under the hash of what was received.
        request.payload = request.payload.replace("\x00", "\ufffd")
        (outcome,) = await self._process_plain([request])
        return outcome

    async def _hold(self, request: Request, exc: FinalityError) -> Outcome:
        """Record a fork beyond the finality horizon once (the payload, with the reason, and a
        `deep_fork` hold counting the attempts), apply nothing and keep the position before it,
        so the node's retry, or a rerun, meets it again: it is applied once the horizon is
        raised."""
        reason = f"held: {exc}"
        digest = request.digest or payload_hash(request.payload)
        header = header_of(request)
        await self._begin()
        try:
            await self._fence(self.pg)
            cur = await self.pg.execute(
                "INSERT INTO raw_requests (received_at, event_path, payload, payload_hash, error) "
                "VALUES (coalesce(%s, now()), %s, %s, %s, %s) ON CONFLICT (payload_hash) DO "
                "UPDATE SET error = EXCLUDED.error RETURNING id",
                (request.received_at, request.path, request.payload, digest, reason),
            )
            raw_id = (await cur.fetchone())[0]  # type: ignore[index]
            hold = _Hold("deep_fork", str(exc), request.path, *header, raw_id=raw_id)
            await _open_holds(self.pg, [hold])
            self._open_holds = await _count_holds(self.pg)
            await self.conn.commit()
        except BaseException:
            await self._reset()
            raise
        _show_holds(self._open_holds)
        metrics.ERRORS.labels("finality").inc()
        log.error("%s; the chain is held until the horizon allows it", reason)
        return Outcome("held", reason)

    async def hold_body(self, path: str, size: int, limit: int) -> None:
        """Record a body over `indexer.max_body_bytes` (not read, so not stored) as a hold:
        the node is answered 413 and retries until the limit is raised."""
        reason = (
            f"a body of at least {size} bytes on {path} exceeds indexer.max_body_bytes ({limit})"
        )
        await self._begin()
        try:
            await self._fence(self.pg)
            await _open_holds(self.pg, [_Hold("body_too_large", reason, path)])
            self._open_holds = await _count_holds(self.pg)
            await self.conn.commit()
        except BaseException:
            await self._reset()
            raise
        _show_holds(self._open_holds)

    async def _process(self, batch: _Batch, requests: Sequence[Request]) -> list[Outcome]:
        batch.feed_prior = batch.feed_low = self.tip[1] if self.tip else 0
        hashes = [r.digest or payload_hash(r.payload) for r in requests]
        cur = await self.pg.execute(
            "SELECT payload_hash, id, error FROM raw_requests WHERE payload_hash = ANY(%b)",
            (hashes,),
        )
        seen: set[bytes] = set()
        # A refused payload is not remembered as what it claims to be: met again, it is
        # interpreted again (a fixed decoder or a raised horizon may accept it now).
        refused: dict[bytes, int] = {}
        for digest, known_id, known_error in await cur.fetchall():
            if known_error is None:
                seen.add(bytes(digest))
            else:
                refused[bytes(digest)] = known_id
        if self._writer is not None:
            seen.update(h for h in hashes if h in self._writer.hashes)  # not committed yet
        cur = await self.pg.execute(
            "SELECT nextval(pg_get_serial_sequence('raw_requests', 'id')) "
            "FROM generate_series(1, %s)",
            (len(requests),),
        )
        ids = [row[0] for row in await cur.fetchall()]
        outcomes: list[Outcome] = []
        parsed: list[tuple[Block, int]] = []
        for request, digest, raw_id in zip(requests, hashes, ids, strict=True):
            if request.position is not None:
                batch.position = max(batch.position or 0, request.position)
            if digest in seen:
                outcomes.append(Outcome("duplicate"))
                continue
            seen.add(digest)
            batch.hashes.add(digest)
            error: str | None = None
            block: Block | None = None
            try:
                block = await self._interpret(batch, request)
            except PayloadError as exc:
                error = str(exc)
            again = refused.get(digest)
            if again is None:
                batch.raw_rows.append(
                    (
                        raw_id,
                        request.received_at or datetime.now(UTC),
                        request.path,
                        request.payload,
                        digest,
                        error,
                    )
                )
            elif error is None:
                batch.cleared.append(again)
                raw_id = again
            if error is not None:
                if again is None:  # counted (and alerted on) once
                    metrics.ERRORS.labels("payload").inc()
                await self._hold_refused(batch, request, error, raw_id if again is None else again)
                outcomes.append(Outcome("rejected", error, repeat=again is not None))
                continue
            batch.paths.add(request.path)
            if block is None:
                outcomes.append(Outcome("stored"))
            else:
                outcomes.append(Outcome("applied"))
                parsed.append((block, raw_id))
        if parsed:
            await self._prefetch(batch, [b for b, _ in parsed])
            await self._prefetch_blocks(
                {h for b, _ in parsed for h in (b.hash, b.header.parent_index_block_hash)}
            )
        index = 0
        for i, outcome in enumerate(outcomes):
            if outcome.status != "applied":
                continue
            block, raw_id = parsed[index]
            index += 1
            outcomes[i] = await self._on_block(batch, block, raw_id)
        return outcomes

    async def _hold_refused(self, batch: _Batch, request: Request, error: str, raw_id: int) -> None:
        """A refused block the chain needs (above the tip, not stored) holds it: its
        descendants wait as orphans until the genuine copy arrives."""
        if request.path != "/new_block":
            return
        block_hash, height = header_of(request)
        if block_hash is None or height is None or (self.tip and height <= self.tip[1]):
            return
        if await self._known_block(block_hash) is not None:
            return
        batch.holds.append(_Hold("refused_block", error, request.path, block_hash, height, raw_id))

    async def _interpret(self, batch: _Batch, request: Request) -> Block | None:
        if request.refused is not None:
            raise PayloadError(request.refused)
        if isinstance(request.parsed, Block):
            return request.parsed
        if isinstance(request.parsed, str):
            raise PayloadError(request.parsed)
        if request.path not in OBSERVER_PATHS:
            raise PayloadError(f"unknown event path {request.path[:80]!r}")
        try:
            payload = json.loads(request.payload)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise PayloadError(f"malformed JSON: {exc}") from None
        if request.path == "/new_block":
            return parse_new_block(payload, self.watched, decode_watched)
        if self._ahead and request.path in ("/new_mempool_tx", "/drop_mempool_tx"):
            raise _Serial  # they write at once, and relay rows may be in flight
        if request.path == "/new_mempool_tx":
            await self._mempool(payload)
        elif request.path == "/drop_mempool_tx":
            await self._dropped(payload)
        elif not isinstance(payload, dict | list):
            raise PayloadError(f"{request.path}: expected a JSON object or array")
        return None

    # ------------------------------------------------------------------ mempool
    async def _mempool(self, payload: Any) -> None:
        if not isinstance(payload, list) or not all(isinstance(t, str) for t in payload):
            raise PayloadError("/new_mempool_tx: expected an array of hex strings")
        rows = []
        for i, tx_hex in enumerate(payload):
            try:
                raw = bytes.fromhex(tx_hex.removeprefix("0x"))
            except ValueError:
                raise PayloadError(f"/new_mempool_tx[{i}]: not hex") from None
            rows.append(("0x" + sha512_256(raw).hex(), raw))
        async with self.pg.cursor() as cur:
            # A transaction announced after a canonical block carried it (a node's mempool
            # replay after a restart) is mined, not pending.
            await cur.executemany(
                "INSERT INTO mempool_txs (txid, raw_tx, status, index_block_hash) "
                "SELECT %(t)s, %(raw)s, CASE WHEN m.h IS NULL THEN 'pending' ELSE 'mined' END, "
                "m.h FROM (SELECT (SELECT index_block_hash FROM transactions "
                "WHERE txid = %(t)s AND canonical LIMIT 1) AS h) m ON CONFLICT DO NOTHING",
                [{"t": t, "raw": raw} for t, raw in rows],
            )
            self._has_mempool = self._has_mempool or bool(rows)
            if self._has_relay and rows:
                await cur.execute(
                    "UPDATE relay_txs SET status = 'mempool', updated_at = now() "
                    "WHERE txid = ANY(%s) AND status IN ('received', 'broadcast')",
                    ([t for t, _ in rows],),
                )

    async def _dropped(self, payload: Any) -> None:
        if not isinstance(payload, dict) or not isinstance(payload.get("dropped_txids"), list):
            raise PayloadError("/drop_mempool_tx: expected {dropped_txids: [...], reason}")
        txids = payload["dropped_txids"]
        if not all(isinstance(t, str) for t in txids):
            raise PayloadError("/drop_mempool_tx.dropped_txids: expected strings")
        reason = payload.get("reason")
        new_txid = payload.get("new_txid")
        if not isinstance(reason, str | None) or not isinstance(new_txid, str | None):
            raise PayloadError("/drop_mempool_tx: reason and new_txid must be strings")
        async with self.pg.cursor() as cur:
            await cur.execute(
                "INSERT INTO mempool_txs (txid, status, reason, replaced_by) "
                "SELECT t, 'dropped', %s, %s FROM unnest(%s::text[]) t "
                "ON CONFLICT (txid) DO UPDATE SET status = 'dropped', reason = EXCLUDED.reason, "
                "replaced_by = EXCLUDED.replaced_by WHERE mempool_txs.status <> 'mined'",
                (reason, new_txid, txids),
            )
            if self._has_relay and txids:
                await cur.execute(
                    "UPDATE relay_txs SET status = 'dropped', reason = %s, updated_at = now() "
                    "WHERE txid = ANY(%s) AND status IN ('received', 'broadcast', 'mempool')",
                    (reason, txids),
                )

    # ------------------------------------------------------------------ blocks
    async def _prefetch_blocks(self, hashes: set[str]) -> None:
        """One query for the block index entries a batch needs (not one per block)."""
        missing = [h for h in hashes if h not in self._known]
        if not missing:
            return
        cur = await self.pg.execute(
            "SELECT index_block_hash, block_height, parent_index_block_hash, canonical, orphan "
            "FROM blocks WHERE index_block_hash = ANY(%b)",
            (missing,),
        )
        for row in await cur.fetchall():
            self._known[row[0]] = _Known(row[1], row[2], row[3], row[4])
        self._absent.update(h for h in missing if h not in self._known)

    async def _known_block(self, block_hash: str) -> _Known | None:
        known = self._known.get(block_hash)
        if known is None:
            if block_hash in self._absent:
                return None
            cur = await self.pg.execute(
                "SELECT block_height, parent_index_block_hash, canonical, orphan FROM blocks "
                "WHERE index_block_hash = %s",
                (block_hash,),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            known = self._known[block_hash] = _Known(row[0], row[1], row[2], row[3])
        return known

    async def _on_block(self, batch: _Batch, block: Block, raw_id: int | None) -> Outcome:
        start = self.settings.indexer.start_height
        if block.height < start:
            batch.ignored += 1
            return Outcome("ignored", f"below indexer.start_height {start}; not applied")
        if await self._known_block(block.hash) is not None:
            return Outcome("duplicate")
        parent = await self._known_block(block.header.parent_index_block_hash)
        # A root needs no parent: with nothing indexed yet it is applied; otherwise it is a
        # sibling of the root, kept like any sibling, whose branch replaces the root's if it
        # grows higher (`_reorg`). Any other block waits for its ancestors like an orphan.
        root = parent is None and (
            block.height == start or block.header.parent_index_block_hash == GENESIS
        )
        orphan = not root and (parent is None or parent.orphan)
        if orphan and self._ahead:
            raise _Serial
        self._known[block.hash] = _Known(
            block.height, block.header.parent_index_block_hash, False, orphan
        )
        batch.new_blocks[block.hash] = (block, raw_id)
        if orphan:
            self._orphans.setdefault(block.header.parent_index_block_hash, []).append(block.hash)
            log.warning(
                "block %s at %d has an unknown parent; kept until it arrives",
                block.hash, block.height,
            )  # fmt: skip
            return Outcome("orphan", "parent unknown; stored until it arrives")
        await self._place(batch, block)
        await self._adopt_orphans(batch, block.hash)
        return Outcome("applied")

    async def _place(self, batch: _Batch, block: Block) -> None:
        """Decide where a block with a known parent goes, and apply it if it is canonical."""
        if self.tip is None or block.header.parent_index_block_hash == self.tip[0]:
            await self._apply(batch, block)
        elif block.height > self.tip[1]:
            if self._ahead:
                raise _Serial  # rolls back rows that may be in flight
            await self._reorg(batch, block)
        # else: a sibling at or below the tip: stored, non-canonical, until its branch wins.

    async def _adopt_orphans(self, batch: _Batch, parent_hash: str) -> None:
        if self._ahead and (self._db_orphans or parent_hash in self._orphans):
            raise _Serial
        pending = [parent_hash]
        while pending:
            parent = pending.pop()
            children: list[str] = self._orphans.pop(parent, [])
            if self._db_orphans:
                cur = await self.pg.execute(
                    "SELECT index_block_hash FROM blocks WHERE orphan "
                    "AND parent_index_block_hash = %s",
                    (parent,),
                )
                children += [r[0] for r in await cur.fetchall() if r[0] not in children]
            for child in children:
                known = await self._known_block(child)
                assert known is not None
                known.orphan = False
                block = await self._block_for(batch, child)
                if child not in batch.new_blocks:
                    await self.pg.execute(
                        "UPDATE blocks SET orphan = false WHERE index_block_hash = %s", (child,)
                    )
                    self._db_orphans -= 1
                await self._place(batch, block)
                pending.append(child)

    async def _block_for(self, batch: _Batch, block_hash: str) -> Block:
        pending = batch.new_blocks.get(block_hash)
        return pending[0] if pending is not None else await self._load_block(block_hash)

    async def _load_block(self, block_hash: str) -> Block:
        """Rebuild a stored block from its rows, to re-apply it when its branch wins."""
        cur = await self.pg.execute(
            "SELECT index_block_hash, block_hash, block_height, parent_index_block_hash, "
            "parent_block_hash, burn_block_hash, burn_block_height, burn_block_time, block_time, "
            "tx_count, event_count FROM blocks WHERE index_block_hash = %s",
            (block_hash,),
        )
        row = await cur.fetchone()
        assert row is not None, block_hash
        block = Block(header=BlockHeader(*row[:9]), tx_count=row[9], event_count=row[10])
        cur = await self.pg.execute(
            "SELECT txid, tx_index, status, raw_result FROM transactions "
            "WHERE index_block_hash = %s ORDER BY tx_index",
            (block_hash,),
        )
        for txid, tx_index, status, raw_result in await cur.fetchall():
            block.txs.append(Tx(txid, tx_index, status, raw_result))
            block.tx_status[txid] = (status, raw_result)
        cur = await self.pg.execute(
            "SELECT txid, tx_index, event_index, type, contract_id, topic, sender, recipient, "
            "amount, raw_value FROM events WHERE index_block_hash = %s "
            "ORDER BY tx_index, event_index",
            (block_hash,),
        )
        for r in await cur.fetchall():
            ev = Event(
                txid=r[0], tx_index=r[1], event_index=r[2], type=r[3], contract_id=r[4],
                topic=r[5], sender=r[6], recipient=r[7], amount=r[8], raw_value=r[9],
            )  # fmt: skip
            if ev.type.startswith(("nft_", "ft_")):
                ev.asset_identifier = ev.contract_id
                ev.contract_id = ev.contract_id.split("::", 1)[0]
            decode_watched(ev)
            block.events.append(ev)
        return block

    async def _prefetch(self, batch: _Batch, blocks: list[Block]) -> None:
        """Load the current version of every entity the batch will touch, one query a table."""
        keys: dict[str, set[Any]] = {t: set() for t in KEYS}
        for block in blocks:
            for ev in block.events:
                v = ev.value
                kind = ev.kind
                if kind is None or type(v) is not dict:
                    continue
                simple = _PREFETCH.get(kind)
                if simple is not None:  # the schema guarantees the fields
                    for table, name in simple:
                        keys[table].add(v[name])
                elif kind.startswith("verifier-"):
                    keys["verifiers"].add(v["verifier"])
                elif kind.startswith("facility-"):
                    keys["facilities"].add(v["facility-id"])
                elif kind.startswith("report-"):
                    keys["generation_reports"].add(v["report-id"])
                elif kind.startswith("certificate-"):
                    if kind == "certificate-split":
                        keys["certificates"].add(v["parent-id"])
                        keys["certificates"].update(c["token-id"] for c in v["children"])
                    else:
                        keys["certificates"].add(v["token-id"])
                elif "listing-id" in v:
                    keys["listings"].add(v["listing-id"])
                    if kind == "sale":
                        keys["certificates"].add(v["token-id"])
        for table, wanted in keys.items():
            if wanted:
                await batch.cache.prefetch(self.pg, table, wanted)

    async def _apply(self, batch: _Batch, block: Block) -> None:
        header = block.header
        when = header.block_time or header.burn_block_time
        ctx = Ctx(
            conn=self.pg,
            cache=batch.cache,
            block=block,
            block_time=datetime.fromtimestamp(when, UTC) if when else None,
        )
        await apply_events(ctx)
        batch.jobs.extend(ctx.jobs)
        batch.refresh.extend(ctx.refresh)
        known = self._known[block.hash]
        known.canonical = True
        if block.hash not in batch.new_blocks:
            for table in ("blocks", "transactions", "events"):
                await self.pg.execute(
                    sql.SQL("UPDATE {} SET canonical = true WHERE index_block_hash = %s").format(
                        sql.Identifier(table)
                    ),
                    (block.hash,),
                )
        for txid, (status, result) in block.tx_status.items():
            batch.mined[txid] = (status, result, block.hash, block.height)
        self.tip = (block.hash, block.height)
        self._tip_time = when
        batch.blocks += 1
        batch.events += len(block.events)

    async def _reorg(self, batch: _Batch, block: Block) -> None:
        assert self.tip is not None
        branch = [block.hash]
        cursor = block.header.parent_index_block_hash
        while True:
            known = await self._known_block(cursor)
            if known is None:
                # Only a root's parent is unknown: this branch starts at a sibling of our root
                # (another block at its height, or a genesis child). Nothing below a root is
                # indexed, so replacing everything from that height up is safe.
                floor = self._known[branch[-1]].height - 1
                break
            assert not known.orphan, "a placed block has a known parent"
            if known.canonical:
                floor = known.height
                break
            branch.append(cursor)
            cursor = known.parent
        depth = self.tip[1] - floor
        if depth > self.settings.indexer.finality_depth:
            raise FinalityError(
                f"fork at height {floor} is {depth} blocks deep, beyond the "
                f"finality horizon of {self.settings.indexer.finality_depth}"
            )
        await self._flush(batch)
        final = await signed_final_height(self.pg, self.tip[1], self.settings)
        if final is not None and floor < final:
            raise FinalityError(
                f"fork at height {floor} would undo block {final}, final by the Nakamoto rule "
                f"(signed, its burn block {self.settings.indexer.nakamoto_burn_confirmations} "
                "Bitcoin blocks deep)"
            )
        log.warning("fork: rolling back %d block(s) above %d for %s", depth, floor, block.hash)
        await self._rollback_above(batch, floor)
        batch.fork_heights.append(depth)
        for block_hash in reversed(branch):
            await self._apply(batch, await self._block_for(batch, block_hash))

    async def _rollback_above(self, batch: _Batch, height: int) -> None:
        pg = self.pg
        cur = await pg.execute(
            "UPDATE blocks SET canonical = false WHERE canonical AND block_height > %s "
            "RETURNING index_block_hash",
            (height,),
        )
        rolled = [r[0] for r in await cur.fetchall()]
        for table in ("transactions", "events"):
            await pg.execute(
                sql.SQL("UPDATE {} SET canonical = false WHERE index_block_hash = ANY(%s)").format(
                    sql.Identifier(table)
                ),
                (rolled,),
            )
        changes = batch.cache.changes
        for table in VERSIONED_TABLES:
            key = sql.Identifier(KEYS[table])
            t = sql.Identifier(table)
            cur = await pg.execute(
                sql.SQL("DELETE FROM {} WHERE block_from > %s RETURNING {}").format(t, key),
                (height,),
            )
            changes[table].update(r[0] for r in await cur.fetchall())
            cur = await pg.execute(
                sql.SQL("UPDATE {} SET block_to = NULL WHERE block_to > %s RETURNING {}").format(
                    t, key
                ),
                (height,),
            )
            changes[table].update(r[0] for r in await cur.fetchall())
        for table in FACT_TABLES:
            await pg.execute(
                sql.SQL("DELETE FROM {} WHERE block_height > %s").format(sql.Identifier(table)),
                (height,),
            )
        if rolled:
            # The rolled-back blocks' transactions are back in the mempool (the winning branch,
            # applied next, marks those it carries mined again).
            cur = await pg.execute(
                "UPDATE mempool_txs SET status = 'pending', index_block_hash = NULL "
                "WHERE index_block_hash = ANY(%s) AND status = 'mined'",
                (rolled,),
            )
            self._has_mempool = self._has_mempool or cur.rowcount > 0
        if self._has_relay and rolled:
            await pg.execute(
                "UPDATE relay_txs SET status = 'broadcast', block_height = NULL, "
                "index_block_hash = NULL, tx_status = NULL, result = NULL, mined_at = NULL, "
                "updated_at = now() WHERE index_block_hash = ANY(%s) "
                "AND status IN ('mined', 'failed')",
                (rolled,),
            )
        for h in rolled:
            if h in self._known:
                self._known[h].canonical = False
        batch.rolled_back.extend(rolled)
        payload = {"rolled_back": rolled, "fork_height": height}
        await pg.execute("SELECT pg_notify(%s, %s)", (BLOCKS, _fit(payload)))
        # Webhooks: retract what endpoints were given from these blocks; re-feed from here.
        batch.feed_low = min(batch.feed_low, height)
        await webhooks.retract(pg, rolled, height)

    # ------------------------------------------------------------------ writing
    def _stage(self, batch: _Batch) -> tuple[list[Step], Carry]:
        """The statements writing what the batch buffered so far (pure Python: no I/O)."""
        steps: list[Step] = []
        stage_copy(steps, "raw_requests", _RAW_COLS, batch.raw_rows)
        batch.raw_rows = []
        block_rows = []
        tx_rows = batch.cache.chain_rows["transactions"]
        event_rows = batch.cache.chain_rows["events"]
        for block, raw_id in batch.new_blocks.values():
            _note_skipped(block)
            h = block.header
            known = self._known[block.hash]
            block_rows.append(
                (
                    h.index_block_hash, h.block_hash, h.block_height, h.parent_index_block_hash,
                    h.parent_block_hash, h.burn_block_hash, h.burn_block_height,
                    h.burn_block_time, h.block_time, known.canonical, known.orphan,
                    block.tx_count, block.event_count, raw_id, h.tenure_height,
                    h.consensus_hash, h.signer_signature_hash, h.signer_count,
                )
            )  # fmt: skip
            bh, height, canonical = block.hash, block.height, known.canonical
            # Values in `CHAIN_COLUMNS` order (raw_tx of stored transactions is checked hex).
            tx_rows += [
                (
                    bh, tx.txid, height, tx.tx_index, tx.status, tx.raw_result,
                    bytes.fromhex(tx.raw_tx[2:]) if tx.raw_tx else None, canonical,
                    *(_NO_SUMMARY if (m := tx.summary) is None else
                      (m.sender, m.contract_id, m.function_name, m.fee, m.nonce)),
                )
                for tx in block.txs
            ]  # fmt: skip
            event_rows += [
                (
                    bh, ev.txid, ev.event_index, ev.tx_index, height, ev.type,
                    ev.asset_identifier or ev.contract_id, ev.topic, ev.kind, ev.sender,
                    ev.recipient, ev.amount, ev.raw_value, canonical,
                )
                for ev in block.events
            ]  # fmt: skip
            if known.orphan:
                self._db_orphans += 1
        stage_copy(steps, "blocks", _BLOCK_COLS, block_rows)
        batch.stored.extend(batch.new_blocks)
        batch.new_blocks = {}
        carry = batch.cache.stage(steps)
        if self._has_mempool and batch.mined:
            txids = list(batch.mined)
            steps.append(
                (
                    "exec",
                    sql.SQL(
                        "UPDATE mempool_txs m SET status = 'mined', index_block_hash = v.bh "
                        "FROM (SELECT unnest(%b::text[]) AS txid, unnest(%b::text[]) AS bh) v "
                        "WHERE m.txid = v.txid AND m.status <> 'mined'"
                    ).format(),
                    (txids, [batch.mined[t][2] for t in txids]),
                )
            )
        if self._has_relay and batch.mined:
            txids = list(batch.mined)
            vals = [batch.mined[t] for t in txids]
            steps.append(
                (
                    "exec",
                    sql.SQL(
                        # The chain has the last word: a transaction in a canonical block
                        # was admitted, whatever refusal the relay recorded for a resend.
                        "UPDATE relay_txs r SET status = CASE WHEN v.st = 'success' THEN 'mined' "
                        "ELSE 'failed' END, tx_status = v.st, result = v.res, "
                        "index_block_hash = v.bh, block_height = v.h, mined_at = now(), "
                        "reason = CASE WHEN r.status = 'rejected' THEN NULL ELSE r.reason END, "
                        "reason_data = CASE WHEN r.status = 'rejected' THEN NULL "
                        "ELSE r.reason_data END, "
                        "updated_at = now() FROM (SELECT unnest(%b::text[]) AS txid, "
                        "unnest(%b::text[]) AS st, unnest(%b::text[]) AS res, "
                        "unnest(%b::text[]) AS bh, unnest(%b::int[]) AS h) v "
                        "WHERE r.txid = v.txid AND r.status NOT IN ('mined', 'failed')"
                    ).format(),
                    (
                        txids,
                        [v[0] for v in vals],
                        [v[1] for v in vals],
                        [v[2] for v in vals],
                        [v[3] for v in vals],
                    ),
                )
            )
        batch.mined = {}
        return steps, carry

    async def _flush(self, batch: _Batch) -> None:
        await send(self.pg, self._stage(batch)[0])

    def _seal(self, batch: _Batch) -> _Commit:
        """Stage the rest of the batch: rows, checkpoint position and the NOTIFY payload."""
        steps, carry = self._stage(batch)
        notify = None
        tip_hash, tip_height = self.tip if self.tip else (None, 0)
        if batch.blocks or batch.rolled_back:
            notify = _fit(
                {
                    "height": tip_height,
                    "hash": tip_hash,
                    "canonical_tip": tip_hash,
                    "rolled_back": batch.rolled_back,
                    "changes": {t: sorted(ids, key=str) for t, ids in batch.cache.changes.items()},
                }
            )
        batch.cache.changes.clear()
        return _Commit(
            steps=steps,
            jobs=batch.jobs,
            refresh=batch.refresh,
            tip=self.tip,
            position=batch.position,
            notify=notify,
            carry=carry,
            blocks=batch.blocks,
            events=batch.events,
            fork_heights=batch.fork_heights,
            tip_time=self._tip_time,
            source=self.source,
            cleared=batch.cleared,
            holds=batch.holds,
            stored=batch.stored,
            paths=batch.paths,
            feed=webhooks.FeedSpan(batch.feed_prior, batch.feed_low, tip_height)
            if batch.blocks or batch.rolled_back
            else None,
        )

    async def _write(
        self, commit: _Commit, conn: AsyncConnection, pg: psycopg.AsyncConnection[Any]
    ) -> None:
        """Send a sealed batch inside `conn`'s open transaction (the caller commits)."""
        await send(pg, commit.steps)
        if (commit.jobs or commit.refresh) and self.enqueue_metadata:
            await self._metadata(conn, commit.jobs, commit.refresh)
        await self._checkpoint(pg, commit)
        if commit.cleared:
            await pg.execute(
                "UPDATE raw_requests SET error = NULL WHERE id = ANY(%s)", (commit.cleared,)
            )
        if commit.holds or self._open_holds:
            commit.open_holds = await _settle_holds(pg, commit)
        if commit.feed is not None:  # webhook events commit with the rows they describe
            await webhooks.feed(pg, commit.feed, self.settings)
        if commit.notify is not None:
            await pg.execute("SELECT pg_notify(%s, %s)", (BLOCKS, commit.notify))

    async def _checkpoint(self, pg: psycopg.AsyncConnection[Any], commit: _Commit) -> None:
        """The tip, and the source's position, in the batch's own transaction."""
        tip_hash, tip_height = commit.tip if commit.tip else (None, 0)
        await pg.execute(
            "INSERT INTO checkpoints (name, index_block_hash, block_height, updated_at) "
            "VALUES (%s, %s, %s, now()) ON CONFLICT (name) DO UPDATE SET "
            "index_block_hash = EXCLUDED.index_block_hash, block_height = "
            "EXCLUDED.block_height, updated_at = now()",
            (CHECKPOINT, tip_hash, tip_height),
        )
        if commit.source is not None and commit.position is not None:
            await pg.execute(
                "INSERT INTO replay_positions (source, position, updated_at) "
                "VALUES (%s, %s, now()) ON CONFLICT (source) DO UPDATE SET "
                "position = EXCLUDED.position, updated_at = now()",
                (commit.source, commit.position),
            )

    async def _metadata(
        self,
        conn: AsyncConnection,
        jobs: list[MetadataJob],
        refresh: list[tuple[str, list[int] | None]],
    ) -> None:
        try:
            from indexer.metadata import queue
        except ImportError:  # the resolver is optional; indexing never waits for it
            return
        # Its own savepoint: a failure in the queue must never block the chain (the jobs can be
        # re-derived from the tables); the session must not roll back the block transaction.
        session = AsyncSession(bind=conn, join_transaction_mode="create_savepoint")
        try:
            await queue.enqueue_many(
                session, [(job.uri, job.subject_kind, job.subject_id) for job in jobs]
            )
            for kind, ids in refresh:
                await queue.requeue_for_refresh(session, kind, ids)
            await session.commit()
        except Exception as exc:
            await session.rollback()
            metrics.ERRORS.labels("metadata").inc()
            log.error("metadata enqueue failed (%s); block data committed without it", exc)


# What PostgreSQL refuses to store whatever the retry: a value beyond its column, a NUL in text,
# a duplicate key inside one payload, an index entry over its size limit. The block is refused
# (recorded, `rejected`), never answered 500 on every retry of the node.
UNSTORABLE = (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.ProgramLimitExceeded)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


def header_of(request: Request) -> tuple[str | None, int | None]:
    """The block a `/new_block` payload names, when its header can be read at all."""
    if isinstance(request.parsed, Block):
        return request.parsed.hash, request.parsed.height
    try:
        header = parse_header(json.loads(request.payload))
    except (PayloadError, ValueError, TypeError, AttributeError, RecursionError):
        return None, None
    return header.index_block_hash, header.block_height


_OPEN_HOLD = (
    "INSERT INTO chain_holds (kind, reason, event_path, index_block_hash, block_height, "
    "raw_request_id) VALUES (%s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (kind, event_path, (coalesce(index_block_hash, ''))) WHERE resolved_at IS NULL "
    "DO UPDATE SET attempts = chain_holds.attempts + 1, last_seen = now(), "
    "reason = EXCLUDED.reason, "
    "raw_request_id = coalesce(EXCLUDED.raw_request_id, chain_holds.raw_request_id)"
)


async def _open_holds(pg: psycopg.AsyncConnection[Any], holds: Sequence[_Hold]) -> None:
    """Open each hold, or count one more attempt of the same open one."""
    async with pg.cursor() as cur:
        await cur.executemany(
            _OPEN_HOLD,
            [(h.kind, h.reason[:2000], h.path, h.block_hash, h.height, h.raw_id) for h in holds],
        )


async def _settle_holds(pg: psycopg.AsyncConnection[Any], commit: _Commit) -> dict[str, int]:
    """Open the batch's holds and resolve those whose cause is gone: the block they wait for
    is stored, the tip passed a refused block's height without it (its branch lost), or a body
    of that path was accepted (the limit was raised). Returns the open ones by kind."""
    if commit.holds:
        await _open_holds(pg, commit.holds)
    await pg.execute(
        "UPDATE chain_holds SET resolved_at = now() WHERE resolved_at IS NULL AND ("
        "index_block_hash = ANY(%s) OR (kind = 'refused_block' AND block_height < %s) "
        "OR (kind = 'body_too_large' AND event_path = ANY(%s)))",
        (commit.stored, commit.tip[1] if commit.tip else 0, sorted(commit.paths)),
    )
    return await _count_holds(pg)


async def _count_holds(pg: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    cur = await pg.execute(
        "SELECT kind, count(*) FROM chain_holds WHERE resolved_at IS NULL GROUP BY kind"
    )
    return {str(kind): int(n) for kind, n in await cur.fetchall()}


def _show_holds(counts: dict[str, int]) -> None:
    for kind in HOLD_KINDS:
        metrics.HOLDS.labels(kind).set(counts.get(kind, 0))


def decode_watched(ev: Event) -> None:
    """`decode_event`, except that an event the handlers do not understand (a foreign contract's
    print that is not one of our tuples, an NFT id that is not a uint, a new event kind or field
    of a future contract version) is kept, stored in `events` and marked `skipped`, instead of
    refusing its block and orphaning every descendant. Bytes that are not a Clarity value still
    refuse the block: a node never sends those, so that copy of the block is corrupt."""
    try:
        decode_event(ev)
    except EventSchemaError as exc:
        ev.value = None
        ev.skipped = str(exc)
        return
    if ev.kind is not None and ev.kind not in HANDLERS:
        ev.value = None
        ev.skipped = f"event kind {ev.kind[:80]!r} has no handler"
        return
    texts = _TEXT_FIELDS.get(ev.kind) if ev.kind is not None else None
    if texts:
        value = ev.value
        for name in texts:
            text = value[name]
            if text is not None and "\x00" in text:
                value[name] = text.replace("\x00", "\ufffd")


# A string-utf8 may hold U+0000, which PostgreSQL text cannot: anyone calling a contract with one
# would otherwise make its block unstorable, and the genuine block is that same block. The
# handlers store U+FFFD instead; `events.raw_value` keeps the exact value.
_TEXT_FIELDS = {
    kind: tuple(name for name, code in schema.items() if code.startswith("S"))
    for kind, schema in SCHEMAS.items()
}


_warned: set[tuple[str, str]] = set()


def _note_skipped(block: Block) -> None:
    """Count (and warn once per contract and reason, so a chatty contract cannot flood the log)
    the events of a newly stored block that the handlers will not apply."""
    for ev in block.events:
        if ev.skipped is None:
            continue
        metrics.SKIPPED_EVENTS.labels(ev.contract_id).inc()
        key = (ev.contract_id, ev.skipped)
        if key in _warned or len(_warned) >= 10_000:
            log.debug("event skipped: %s (%s, block %s)", ev.skipped, ev.contract_id, block.hash)
            continue
        _warned.add(key)
        log.warning(
            "event stored but not applied: %s (%s in block %s at %d; later ones alike are "
            "counted in recchain_indexer_events_skipped_total)",
            ev.skipped, ev.contract_id, block.hash, block.height,
        )  # fmt: skip


def parse_block_request(path: str, payload: str, watched: frozenset[str]) -> Block | str | None:
    """The CPU-heavy part of a `/new_block` (JSON, validation, Clarity decoding), as a pure
    function so catch-up can run it in a worker process; None for other paths."""
    if path != "/new_block":
        return None
    try:
        return parse_new_block(json.loads(payload), watched, decode_watched)
    except PayloadError as exc:
        return str(exc)
    except (json.JSONDecodeError, RecursionError) as exc:
        return f"malformed JSON: {exc}"


def _fit(payload: dict[str, Any]) -> str:
    """NOTIFY payloads are capped; beyond the cap, listeners are told to re-read everything."""
    text = json.dumps(payload, default=str, separators=(",", ":"))
    if len(text) <= NOTIFY_LIMIT:
        return text
    slim = {k: v for k, v in payload.items() if k not in ("changes", "rolled_back")}
    slim["changes"] = {t: [] for t in payload.get("changes", {})}
    slim["rolled_back"] = payload.get("rolled_back", [])[:50]
    slim["truncated"] = True
    return json.dumps(slim, default=str, separators=(",", ":"))
