"""The durable outbox (table `relay_txs`, see db/models/relay.py): every SQL the relay runs.

Accepting is one INSERT committed before the client hears 202; resubmitting the same bytes
finds the row by txid and changes nothing. The broadcaster claims due rows with
`FOR NO KEY UPDATE SKIP LOCKED` and keeps them locked for the length of the POST, so two relay
processes never send the same row at once, and a crashed process's locks vanish with its
connection. Each POST is first recorded in `relay_attempts` (committed on its own), so after a
crash it is known which transactions may already be at the node.
"""

from __future__ import annotations

import json
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

_INSERT = text(
    """
    INSERT INTO relay_txs (txid, raw_tx, sender, sponsor, nonce, fee, contract_id,
                           function_name, client)
    VALUES (:txid, :raw, :sender, :sponsor, :nonce, :fee, :contract_id, :function_name, :client)
    ON CONFLICT (txid) DO NOTHING
    RETURNING status
    """
)
_STATUS = text(f"SELECT {', '.join(STATUS_COLUMNS)} FROM relay_txs WHERE txid = :txid")


async def submit(engine: AsyncEngine, tx: AcceptedTx, client: str | None) -> tuple[str, bool]:
    """Store an accepted transaction; returns (current status, newly stored?)."""
    params = {
        "txid": tx.txid,
        "raw": tx.raw,
        "sender": tx.sender,
        "sponsor": tx.sponsor,
        "nonce": tx.nonce,
        "fee": tx.fee,
        "contract_id": tx.contract_id,
        "function_name": tx.function_name,
        "client": client,
    }
    async with engine.begin() as conn:
        created = (await conn.execute(_INSERT, params)).scalar_one_or_none()
        if created is not None:
            return created, True
        status = (
            await conn.execute(
                text("SELECT status FROM relay_txs WHERE txid = :txid"), {"txid": tx.txid}
            )
        ).scalar_one()
        return status, False


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
                           WHERE a.txid = r.txid AND a.outcome = 'accepted') AS already_accepted
            FROM relay_txs r
            WHERE r.status = 'received' AND r.next_attempt_at <= now()
            ORDER BY r.next_attempt_at, r.received_at
            LIMIT :limit
            FOR NO KEY UPDATE OF r SKIP LOCKED
            """
        ),
        {"limit": limit},
    )
    return [Claimed(r.txid, bytes(r.raw_tx), r.attempts, r.already_accepted) for r in rows]


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
