"""Raw chain data: what the sources delivered, before any domain interpretation."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Text,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base


class RawRequest(Base):
    """Every observer request as received (the stacks-blockchain-api `event_observer_requests`
    shape), so everything can be re-derived, and so a rejected payload can be inspected."""

    __tablename__ = "raw_requests"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    event_path: Mapped[str] = mapped_column(Text, nullable=False)
    # lz4 TOAST compression (migration 0041): pglz cost more than the rest of the skip path.
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    # sha256 of the payload: makes an at-least-once re-delivery a no-op.
    payload_hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False, unique=True)
    # NULL = accepted; otherwise why it was refused (kept for inspection, never applied).
    error: Mapped[str | None] = mapped_column(Text)


class Block(Base):
    __tablename__ = "blocks"

    index_block_hash: Mapped[str] = mapped_column(Text, primary_key=True)
    block_hash: Mapped[str] = mapped_column(Text, nullable=False)
    block_height: Mapped[int] = mapped_column(Integer, nullable=False)
    parent_index_block_hash: Mapped[str] = mapped_column(Text, nullable=False)
    parent_block_hash: Mapped[str | None] = mapped_column(Text)
    burn_block_hash: Mapped[str | None] = mapped_column(Text)
    burn_block_height: Mapped[int | None] = mapped_column(Integer)
    burn_block_time: Mapped[int | None] = mapped_column(BigInteger)
    block_time: Mapped[int | None] = mapped_column(BigInteger)
    # Nakamoto (epoch 3.0 on): the block's tenure, the sortition that elected its miner, what the
    # signers signed and how many signatures it carries (NULL before Nakamoto). db/finality.py
    # reads signer_count with burn_block_height.
    tenure_height: Mapped[int | None] = mapped_column(Integer)
    consensus_hash: Mapped[str | None] = mapped_column(Text)
    signer_signature_hash: Mapped[str | None] = mapped_column(Text)
    signer_count: Mapped[int | None] = mapped_column(Integer)
    canonical: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    # A block whose parent is not known yet is stored, not applied, until the parent arrives.
    orphan: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    tx_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    event_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    raw_request_id: Mapped[int | None] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (
        Index("ix_blocks_height_canonical", "block_height", postgresql_where=text("canonical")),
        Index("ix_blocks_parent", "parent_index_block_hash"),
    )


class Transaction(Base):
    """Transactions of blocks that touched a watched contract (others are skipped). `sender`,
    `contract_id`, `function_name`, `fee` (what it paid: the sponsor's fee when sponsored) and
    `nonce` (the origin's) are decoded from `raw_tx` at ingest; NULL for a burnchain operation."""

    __tablename__ = "transactions"

    index_block_hash: Mapped[str] = mapped_column(Text, primary_key=True)
    txid: Mapped[str] = mapped_column(Text, primary_key=True)
    block_height: Mapped[int] = mapped_column(Integer, nullable=False)
    tx_index: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False)
    sender: Mapped[str | None] = mapped_column(Text)
    contract_id: Mapped[str | None] = mapped_column(Text)
    function_name: Mapped[str | None] = mapped_column(Text)
    fee: Mapped[int | None] = mapped_column(BigInteger)
    nonce: Mapped[int | None] = mapped_column(BigInteger)
    raw_result: Mapped[str | None] = mapped_column(Text)
    raw_tx: Mapped[bytes | None] = mapped_column(LargeBinary)
    canonical: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))

    __table_args__ = (
        Index("ix_transactions_txid", "txid"),
        Index("ix_transactions_sender", "sender"),  # analysts: what did this address do
    )


class Event(Base):
    """Events of watched contracts and assets, kept raw (hex Clarity) for re-derivation."""

    __tablename__ = "events"

    index_block_hash: Mapped[str] = mapped_column(Text, primary_key=True)
    # stacks-node numbers events per transaction: (block, txid, event_index) is the key (0002).
    txid: Mapped[str] = mapped_column(Text, primary_key=True)
    event_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    tx_index: Mapped[int | None] = mapped_column(Integer)
    block_height: Mapped[int] = mapped_column(Integer, nullable=False)
    type: Mapped[str] = mapped_column(Text, nullable=False)
    # contract identifier for contract events, asset identifier for nft/ft events
    contract_id: Mapped[str | None] = mapped_column(Text)
    topic: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str | None] = mapped_column(Text)  # the `event` field of a print tuple
    sender: Mapped[str | None] = mapped_column(Text)
    recipient: Mapped[str | None] = mapped_column(Text)
    amount: Mapped[str | None] = mapped_column(Text)
    raw_value: Mapped[str | None] = mapped_column(Text)
    canonical: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))

    __table_args__ = (Index("ix_events_txid", "txid"),)


class Checkpoint(Base):
    """How far a consumer got; advanced in the same transaction as the data it covers."""

    __tablename__ = "checkpoints"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    index_block_hash: Mapped[str | None] = mapped_column(Text)
    block_height: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class DeferredIndex(Base):
    """A secondary index a catch-up replay into an empty database dropped, and the statement
    that builds it again (`db.indexes`), recorded in the transaction that dropped it."""

    __tablename__ = "deferred_indexes"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    table_name: Mapped[str] = mapped_column(Text, nullable=False)
    definition: Mapped[str] = mapped_column(Text, nullable=False)
    deferred_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class ReplayPosition(Base):
    """How far `recchain replay` got in one archive (the last request id committed), committed
    with the data, so a restarted replay skips it; keyed by the archive's first request."""

    __tablename__ = "replay_positions"

    source: Mapped[str] = mapped_column(Text, primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class LeaderEpoch(Base):
    """The fencing token of a leader lock (db/leader.py): bumped by each process that takes the
    lock, and checked (`FOR SHARE`) by every write transaction of the leader, so a process that
    lost the lock cannot commit once its successor holds it."""

    __tablename__ = "leader_epochs"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger, nullable=False)
    holder: Mapped[str] = mapped_column(Text, nullable=False)
    acquired_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


HOLD_KINDS = ("refused_block", "deep_fork", "body_too_large")


class ChainHold(Base):
    """Something that keeps the chain from advancing, recorded once (`attempts` counts repeats)
    and resolved by the indexer when its cause is gone: `refused_block` (a block refused as
    corrupt or unstorable; its descendants wait as orphans for the genuine copy), `deep_fork` (a
    fork beyond `indexer.finality_depth`; the node is answered non-200 and retries), or
    `body_too_large` (a body over `indexer.max_body_bytes`; likewise)."""

    __tablename__ = "chain_holds"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    event_path: Mapped[str] = mapped_column(Text, nullable=False)
    index_block_hash: Mapped[str | None] = mapped_column(Text)
    block_height: Mapped[int | None] = mapped_column(Integer)
    raw_request_id: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    first_seen: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    last_seen: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("kind IN ('refused_block', 'deep_fork', 'body_too_large')", name="kind"),
        Index(
            "ux_chain_holds_open",
            "kind",
            "event_path",
            text("coalesce(index_block_hash, '')"),
            unique=True,
            postgresql_where=text("resolved_at IS NULL"),
        ),
    )


class MempoolTx(Base):
    """Transactions seen on the observer's mempool paths (for relay status). `pending` rows are
    the mempool; a transaction a canonical block carries is `mined` (in `index_block_hash`) and
    `pending` again if that block is rolled back; `dropped` as the node reported it."""

    __tablename__ = "mempool_txs"

    txid: Mapped[str] = mapped_column(Text, primary_key=True)
    raw_tx: Mapped[bytes | None] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'pending'"))
    reason: Mapped[str | None] = mapped_column(Text)
    replaced_by: Mapped[str | None] = mapped_column(Text)
    index_block_hash: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (
        Index("ix_mempool_txs_block", "index_block_hash"),
        Index("ix_mempool_txs_pending", "received_at", postgresql_where=text("status = 'pending'")),
    )
