"""The block pipeline: raw request -> canonical/fork decision -> handlers -> one transaction.

`Indexer.process` takes a batch of requests (one at the tip, hundreds in catch-up) and commits
them in one transaction together with the checkpoint; NOTIFYs are issued inside it, so PostgreSQL
delivers them exactly when (and only if) the data is visible.

Forks (docs/stacks.md, "Forks and finality"): a block whose parent is the tip extends it; a
block higher than the tip on another branch triggers a reorg: walk back to the common ancestor,
undo everything above it using the block ranges of the versioned tables (delete versions that
start above it, reopen those closed above it, delete facts above it), then re-apply the new
branch from its stored events. A block whose parent is unknown is stored as an orphan and applied
when its parent arrives.

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

The map, one concept per module, in the order a request meets them:

    indexer/requests.py  Request, Outcome; /new_block parsing (pure, runs in worker processes)
    indexer/pipeline.py  Indexer: process -> dedup and refusals -> interpret -> _apply (handlers)
    indexer/forks.py     ChainPlacement: extend, fork, orphan, root sibling; rollback above
    indexer/batch.py     Batch, Commit; Staging: _stage/_seal (COPY streams) and _write
    indexer/holds.py     chain_holds: open, count, settle in the batch's commit
    indexer/catchup.py   CatchUp: process_ahead and the writer thread
    indexer/core.py      IndexerCore: the connection and in-memory block index, _reset
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg import sql

from db import indexes
from indexer import metrics
from indexer.batch import UNSTORABLE, Batch, Staging, first_line
from indexer.block import Block, parse_new_block
from indexer.catchup import CatchUp, NeedsSerial
from indexer.core import IndexerCore
from indexer.errors import FinalityError, PayloadError
from indexer.forks import ChainPlacement
from indexer.handlers import Ctx, apply_events
from indexer.holds import Hold, count_holds, open_holds, show_holds
from indexer.requests import (
    OBSERVER_PATHS,
    Outcome,
    Request,
    decode_watched,
    header_of,
    payload_hash,
)
from indexer.schema import SCHEMAS
from indexer.state import (
    KEYS,
)
from stacks.hashing import sha512_256

log = logging.getLogger("recchain.indexer")


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


class Indexer(CatchUp, Staging, ChainPlacement, IndexerCore):
    """The block pipeline (see the module docstring): requests in, one transaction per batch."""

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

    async def defer_indexes(self, *, on_first_rows: bool = False) -> int:
        """Before a catch-up replay: drop the deferrable secondary indexes if their tables are
        empty (`db.indexes`). Returns how many are deferred, counting those an interrupted
        replay left deferred. With `on_first_rows`, they are dropped only when the first batch
        bringing rows to those tables is sent (`process_ahead`): a replay of an archive of
        others' traffic, which brings none, then neither drops nor builds any."""
        await self._begin()
        try:
            await self._fence(self.pg)
            waiting = await indexes.pending(self.pg)
            if not waiting and await indexes.empty(self.pg):
                if on_first_rows:
                    self._defer_on_rows = True
                else:
                    waiting = await indexes.defer(self.pg)
            await self.conn.commit()
        except BaseException:
            await self.conn.rollback()
            raise
        return waiting

    async def _defer_now(self) -> None:
        """Drop the indexes `defer_indexes(on_first_rows=True)` left standing, in a transaction
        of their own (their records commit with the drops). Nothing may be in flight on the
        writer: its transaction holds locks on the tables the drops lock whole."""
        self._defer_on_rows = False
        await self._begin()
        try:
            await self._fence(self.pg)
            dropped = await indexes.defer(self.pg)
            await self.conn.commit()
        except BaseException:
            await self.conn.rollback()
            raise
        log.info("deferred %d secondary index(es) until the replay ends", dropped)

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
            return [await self._refuse(requests[0], f"cannot be stored: {first_line(exc)}")]

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
        batch = Batch()
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
            hold = Hold("deep_fork", str(exc), request.path, *header, raw_id=raw_id)
            await open_holds(self.pg, [hold])
            self._open_holds = await count_holds(self.pg)
            await self.conn.commit()
        except BaseException:
            await self._reset()
            raise
        show_holds(self._open_holds)
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
            await open_holds(self.pg, [Hold("body_too_large", reason, path)])
            self._open_holds = await count_holds(self.pg)
            await self.conn.commit()
        except BaseException:
            await self._reset()
            raise
        show_holds(self._open_holds)

    async def _process(self, batch: Batch, requests: Sequence[Request]) -> list[Outcome]:
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

    async def _hold_refused(self, batch: Batch, request: Request, error: str, raw_id: int) -> None:
        """A refused block the chain needs (above the tip, not stored) holds it: its
        descendants wait as orphans until the genuine copy arrives."""
        if request.path != "/new_block":
            return
        block_hash, height = header_of(request)
        if block_hash is None or height is None or (self.tip and height <= self.tip[1]):
            return
        if await self._known_block(block_hash) is not None:
            return
        batch.holds.append(Hold("refused_block", error, request.path, block_hash, height, raw_id))

    async def _interpret(self, batch: Batch, request: Request) -> Block | None:
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
            raise NeedsSerial  # they write at once, and relay rows may be in flight
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

    # else: a sibling at or below the tip: stored, non-canonical, until its branch wins.

    async def _prefetch(self, batch: Batch, blocks: list[Block]) -> None:
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

    async def _apply(self, batch: Batch, block: Block) -> None:
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

    # ------------------------------------------------------------------ writing
