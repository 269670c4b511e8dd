"""The durable outbox (table `relay_txs`, see db/models/relay.py): every SQL the relay runs.

Accepting is an INSERT committed before the client hears 202, grouped with whatever other
accepts are waiting (`GroupCommitter`); resubmitting the same bytes finds the row by txid and
changes nothing. The broadcaster claims due rows with
`FOR NO KEY UPDATE SKIP LOCKED` and keeps them locked for the length of the POST, so two relay
processes never send the same row at once, and a crashed process's locks vanish with its
connection. Each POST is first recorded in `relay_attempts` (committed on its own), so after a
crash it is known which transactions may already be at the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from writers.policy import AcceptedTx

# Columns the status endpoint returns, in order.
STATUS_COLUMNS = (
    "txid",
    "status",
    "reason",
    "reason_data",
    "sender",
    "sponsor",
    "nonce",
    "fee",
    "contract_id",
    "function_name",
    "attempts",
    "last_error",
    "block_height",
    "index_block_hash",
    "tx_status",
    "result",
    "received_at",
    "broadcast_at",
    "mined_at",
    "updated_at",
)

# One statement for a whole group: parallel arrays unnested into rows. Duplicates of rows
# already stored (or earlier in the group) are skipped and looked up after.
_INSERT_MANY = text(
    """
    INSERT INTO relay_txs (txid, raw_tx, sender, sponsor, nonce, fee, contract_id,
                           function_name, client)
    SELECT * FROM unnest(
        CAST(:txids AS text[]), CAST(:raws AS bytea[]), CAST(:senders AS text[]),
        CAST(:sponsors AS text[]), CAST(:nonces AS bigint[]), CAST(:fees AS bigint[]),
        CAST(:contract_ids AS text[]), CAST(:function_names AS text[]), CAST(:clients AS text[])
    )
    ON CONFLICT (txid) DO NOTHING
    RETURNING txid, status
    """
)
_EXISTING = text("SELECT txid, status FROM relay_txs WHERE txid = ANY(CAST(:txids AS text[]))")
_STATUS = text(f"SELECT {', '.join(STATUS_COLUMNS)} FROM relay_txs WHERE txid = :txid")


async def submit_many(
    conn: AsyncConnection, items: Sequence[tuple[AcceptedTx, str | None]]
) -> list[tuple[str, bool]]:
    """Store accepted transactions inside the caller's transaction; for each item, in order:
    (current status, newly stored?). Only the first of several equal txids counts as new."""
    first: dict[str, tuple[AcceptedTx, str | None]] = {}
    for tx, client in items:
        first.setdefault(tx.txid, (tx, client))
    rows = list(first.values())
    created = {
        r.txid: r.status
        for r in await conn.execute(
            _INSERT_MANY,
            {
                "txids": [tx.txid for tx, _ in rows],
                "raws": [tx.raw for tx, _ in rows],
                "senders": [tx.sender for tx, _ in rows],
                "sponsors": [tx.sponsor for tx, _ in rows],
                "nonces": [tx.nonce for tx, _ in rows],
                "fees": [tx.fee for tx, _ in rows],
                "contract_ids": [tx.contract_id for tx, _ in rows],
                "function_names": [tx.function_name for tx, _ in rows],
                "clients": [client for _, client in rows],
            },
        )
    }
    existing: dict[str, str] = {}
    missing = [txid for txid in first if txid not in created]
    if missing:
        existing = {r.txid: r.status for r in await conn.execute(_EXISTING, {"txids": missing})}
    out: list[tuple[str, bool]] = []
    stored: set[str] = set()
    for tx, _ in items:
        if tx.txid in created and tx.txid not in stored:
            stored.add(tx.txid)
            out.append((created[tx.txid], True))
        else:
            out.append((created.get(tx.txid) or existing[tx.txid], False))
    return out


async def submit(engine: AsyncEngine, tx: AcceptedTx, client: str | None) -> tuple[str, bool]:
    """Store one accepted transaction in its own transaction; (current status, newly stored?)."""
    async with engine.begin() as conn:
        return (await submit_many(conn, [(tx, client)]))[0]


class GroupCommitter:
    """Accepts are queued to one writer task that stores everything waiting in a single
    transaction and resolves each caller only after that commit.

    PostgreSQL serialises the commits of transactions that NOTIFY (the status trigger does), so
    one commit per accept caps a process at the server's fsync rate; a group pays that price
    once for all the accepts that arrived while the previous group was committing. No timer:
    an idle relay commits a lone accept at once, a busy one forms groups by itself."""

    def __init__(self, engine: AsyncEngine, max_group: int = 500) -> None:
        self.engine = engine
        self.max_group = max_group
        self.groups = 0
        self.committed = 0
        self._waiting: list[tuple[AcceptedTx, str | None, asyncio.Future[tuple[str, bool]]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def submit(self, tx: AcceptedTx, client: str | None) -> tuple[str, bool]:
        """(current status, newly stored?) once the row is durably committed."""
        future: asyncio.Future[tuple[str, bool]] = asyncio.get_running_loop().create_future()
        self._waiting.append((tx, client, future))
        if self._task is None or self._task.done():
            # Started on first use so the app needs no lifespan hook (tests serve it without).
            self._task = asyncio.create_task(self._run(), name="recchain-relay-accepts")
        self._wake.set()
        # Shielded: a client that disconnects must not cancel the future the writer resolves.
        return await asyncio.shield(future)

    async def aclose(self, grace_s: float = 30.0) -> None:
        """Commit what is queued, then stop the writer."""
        task, self._task = self._task, None
        if task is None:
            return
        self._closing = True
        self._wake.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, grace_s)

    async def _run(self) -> None:
        group: list[tuple[AcceptedTx, str | None, asyncio.Future[tuple[str, bool]]]] = []
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._waiting:
                    group = self._waiting[: self.max_group]
                    del self._waiting[: self.max_group]
                    await self._commit(group)
                    group = []
                if self._closing:
                    return
        except asyncio.CancelledError:
            # Unknown outcome for the group in flight: its callers get an error, not a 202.
            for _, _, future in group + self._waiting:
                if not future.done():
                    future.set_exception(RuntimeError("the relay is shutting down"))
            self._waiting.clear()
            raise

    async def _commit(
        self, group: list[tuple[AcceptedTx, str | None, asyncio.Future[tuple[str, bool]]]]
    ) -> None:
        try:
            async with self.engine.begin() as conn:
                results = await submit_many(conn, [(tx, client) for tx, client, _ in group])
        except Exception as exc:
            if len(group) > 1:
                # One bad row must not fail the others: store them one by one.
                for item in group:
                    await self._commit([item])
                return
            if not group[0][2].done():
                group[0][2].set_exception(exc)
            return
        self.groups += 1
        self.committed += len(group)
        for (_, _, future), result in zip(group, results, strict=True):
            if not future.done():
                future.set_result(result)


async def status(engine: AsyncEngine, txid: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (await conn.execute(_STATUS, {"txid": txid})).mappings().one_or_none()
    if row is None:
        return None
    out: dict[str, Any] = {}
    for key in STATUS_COLUMNS:
        value = row[key]
        out[key] = value.isoformat() if isinstance(value, datetime) else value
    return out


async def depth(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(text("SELECT count(*) FROM relay_txs WHERE status = 'received'"))
            ).scalar_one()
        )


@dataclass(frozen=True, slots=True)
class Claimed:
    txid: str
    raw: bytes
    attempts: int
    # A finished attempt already got a 200 from the node, but the process died before it
    # recorded the status: no need to send it again.
    already_accepted: bool
    # An attempt was started and never finished (its process died mid-request): the node may
    # hold the transaction already, so it is asked before the bytes are sent again.
    in_doubt: bool = False


async def claim(conn: AsyncConnection, limit: int) -> list[Claimed]:
    """Lock up to `limit` due rows inside the caller's open transaction.

    `FOR NO KEY UPDATE` (the row-lock `UPDATE` itself takes) rather than `FOR UPDATE`: the
    attempt rows inserted meanwhile on other connections take `FOR KEY SHARE` on this row
    through their foreign key, which `FOR UPDATE` would block until this transaction ends."""
    rows = await conn.execute(
        text(
            """
            SELECT r.txid, r.raw_tx, r.attempts,
                   EXISTS (SELECT 1 FROM relay_attempts a
                           WHERE a.txid = r.txid AND a.outcome = 'accepted') AS already_accepted,
                   EXISTS (SELECT 1 FROM relay_attempts a
                           WHERE a.txid = r.txid AND a.finished_at IS NULL) AS in_doubt
            FROM relay_txs r
            WHERE r.status = 'received' AND r.next_attempt_at <= now()
            ORDER BY r.next_attempt_at, r.received_at
            LIMIT :limit
            FOR NO KEY UPDATE OF r SKIP LOCKED
            """
        ),
        {"limit": limit},
    )
    return [
        Claimed(r.txid, bytes(r.raw_tx), r.attempts, r.already_accepted, r.in_doubt) for r in rows
    ]


async def start_attempt(engine: AsyncEngine, txid: str) -> int:
    """Record a POST about to happen, committed before it happens."""
    async with engine.begin() as conn:
        return int(
            (
                await conn.execute(
                    text("INSERT INTO relay_attempts (txid) VALUES (:txid) RETURNING id"),
                    {"txid": txid},
                )
            ).scalar_one()
        )


async def finish_attempt(
    engine: AsyncEngine, attempt_id: int, outcome: str, http_status: int | None, detail: str | None
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                """
                UPDATE relay_attempts
                SET finished_at = now(), outcome = :outcome, http_status = :http_status,
                    detail = :detail
                WHERE id = :id
                """
            ),
            {"id": attempt_id, "outcome": outcome, "http_status": http_status, "detail": detail},
        )


async def mark_broadcast(conn: AsyncConnection, txid: str) -> None:
    # Only from 'received': the indexer may already have seen it in the mempool or a block.
    await conn.execute(
        text(
            """
            UPDATE relay_txs SET status = 'broadcast', broadcast_at = now(),
                   attempts = attempts + 1, last_error = NULL
            WHERE txid = :txid AND status = 'received'
            """
        ),
        {"txid": txid},
    )


async def mark_rejected(
    conn: AsyncConnection, txid: str, reason: str, reason_data: dict[str, Any] | None
) -> None:
    await conn.execute(
        text(
            """
            UPDATE relay_txs SET status = 'rejected', reason = :reason,
                   reason_data = CAST(:reason_data AS jsonb), attempts = attempts + 1
            WHERE txid = :txid AND status = 'received'
            """
        ),
        {"txid": txid, "reason": reason, "reason_data": _json(reason_data)},
    )


async def mark_retry(conn: AsyncConnection, txid: str, delay_s: float, error: str) -> None:
    await conn.execute(
        text(
            """
            UPDATE relay_txs SET attempts = attempts + 1, last_error = :error,
                   next_attempt_at = clock_timestamp() + make_interval(secs => :delay)
            WHERE txid = :txid AND status = 'received'
            """
        ),
        {"txid": txid, "delay": delay_s, "error": error[:1000]},
    )


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value)
