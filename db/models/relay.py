"""The relay outbox: signed transactions accepted by `recchain relay`, and their fate.

Shared by three writers, each owning distinct transitions (all keyed by `txid`):

* the relay inserts rows as `received` (committed before the client gets its 202), then moves
  them to `broadcast` (the node answered 200, or already had the txid) or `rejected` (the node
  refused them for a reason that cannot change by retrying);
* the indexer, seeing the chain, moves them to `mempool` (seen on `/new_mempool_tx`), `mined`
  (in a canonical block with `tx_status = 'success'`), `failed` (in a canonical block but
  aborted: `abort_by_response` / `abort_by_post_condition`), `dropped` (`/drop_mempool_tx`),
  and back to `mempool`/`broadcast` if the block that held it is rolled back;
* the chain has the last word: `mined`/`failed` seen in a canonical block replace any status,
  `rejected` included (after a crash the relay re-sends in-doubt transactions, and a node that
  has meanwhile mined one answers BadNonce for it);
* nobody ever deletes a row.

Every status change, whoever makes it, NOTIFYs `recchain_relay` with `{"txid", "status"}`: a
trigger installed by migration 0005 does it, so no writer can forget.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base

RELAY_STATUSES: tuple[str, ...] = (
    "received",  # committed to the outbox, not yet accepted by the node
    "broadcast",  # the node accepted it (HTTP 200, or it already had this txid)
    "mempool",  # the indexer saw it in the node's mempool
    "mined",  # in a canonical block and succeeded
    "failed",  # in a canonical block but aborted; `result` holds the Clarity result
    "dropped",  # the node dropped it from its mempool (`reason` says why)
    "rejected",  # the node refused it for good (`reason` = the node's reason code)
)
# Statuses after which the relay never touches the row again.
FINAL_STATUSES: frozenset[str] = frozenset({"mined", "failed", "dropped", "rejected"})


class RelayTx(Base):
    __tablename__ = "relay_txs"

    # 0x-prefixed lowercase hex of SHA-512/256(raw_tx): the same spelling as `transactions.txid`.
    txid: Mapped[str] = mapped_column(Text, primary_key=True)
    raw_tx: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'received'"))
    # Who pays and who signs (c32 addresses); sponsor is NULL for standard auth.
    sender: Mapped[str] = mapped_column(Text, nullable=False)
    sponsor: Mapped[str | None] = mapped_column(Text)
    nonce: Mapped[int] = mapped_column(BigInteger, nullable=False)
    fee: Mapped[int] = mapped_column(BigInteger, nullable=False)
    contract_id: Mapped[str] = mapped_column(Text, nullable=False)
    function_name: Mapped[str] = mapped_column(Text, nullable=False)
    # Opaque client identity (API-key fingerprint or peer address) for audits and quotas.
    client: Mapped[str | None] = mapped_column(Text)

    # rejected: the node's reason code (e.g. BadNonce); dropped: the observer's drop reason.
    reason: Mapped[str | None] = mapped_column(Text)
    reason_data: Mapped[dict[str, Any] | None] = mapped_column(JSONB)

    # Broadcast bookkeeping (relay only).
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    last_error: Mapped[str | None] = mapped_column(Text)

    # Set by the indexer for mined/failed: where and with what outcome.
    block_height: Mapped[int | None] = mapped_column(Integer)
    index_block_hash: Mapped[str | None] = mapped_column(Text)
    tx_status: Mapped[str | None] = mapped_column(Text)  # success | abort_by_response | ...
    result: Mapped[str | None] = mapped_column(Text)  # raw Clarity result, 0x hex

    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    broadcast_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    mined_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in RELAY_STATUSES) + ")",
            name="relay_status",
        ),
        # The broadcaster's work queue: only unsent rows, oldest due first.
        Index(
            "ix_relay_txs_due",
            "next_attempt_at",
            postgresql_where=text("status = 'received'"),
        ),
        Index("ix_relay_txs_sender_nonce", "sender", "nonce"),
    )


class RelayAttempt(Base):
    """One POST to the node. Written (committed) *before* the request is sent, finished after:
    an attempt with `finished_at IS NULL` is one a crash interrupted, whose outcome is unknown."""

    __tablename__ = "relay_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    txid: Mapped[str] = mapped_column(
        Text, ForeignKey("relay_txs.txid", ondelete="CASCADE"), nullable=False
    )
    started_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # accepted | duplicate | rejected | retry
    outcome: Mapped[str | None] = mapped_column(Text)
    http_status: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_relay_attempts_txid", "txid"),)
