"""Webhooks: registered endpoints, their filters, the per-endpoint outbox and its attempts.

* ``webhook_endpoints``: a URL, its signing secret (and, after a rotation, the previous one
  until ``previous_secret_until``), whether it is delivered at the tip or at finality, and who
  registered it (``owner``: NULL for an operator, the relay API key's fingerprint otherwise).
  ``last_seq`` is the last sequence number given to one of its events.
* ``webhook_filters``: what an endpoint receives, one row per filter: a kind (``block``,
  ``listing``, ``certificate``, ``retirement``) and the ``where`` it was registered with
  (``condition``), compiled once into a SQL/JSON path (``path``, NULL = everything of that
  kind) whose values are bound from ``vars`` (``db/webhooks/filters.py``).
* ``webhook_events``: the outbox. The indexer inserts rows in the same transaction as the
  block that produced them (``db/webhooks/feed.py``), numbered ``seq`` 1, 2, 3... per endpoint
  in chain order; ``event_id`` is the idempotency key every delivery of the row carries.
  ``pending`` -> ``delivered`` (an endpoint answered 2xx) | ``dead`` (still failing
  ``webhooks.dead_letter_after_s`` after ``queued_at``) | ``retracted`` (its block was orphaned
  before it was delivered; the rollback event that names it is ``retracted_by``). Redelivery
  moves rows back to ``pending``; the sender never deletes, retention does.
* ``webhook_attempts``: one row per HTTP attempt: status, error, the first bytes of the answer.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import UserDefinedType

from db.models.base import Base

DELIVERY_MODES: tuple[str, ...] = ("tip", "final")
ENDPOINT_STATUSES: tuple[str, ...] = ("active", "paused")
FILTER_KINDS: tuple[str, ...] = ("block", "listing", "certificate", "retirement")
EVENT_TYPES: tuple[str, ...] = (*FILTER_KINDS, "rollback")
EVENT_STATUSES: tuple[str, ...] = ("pending", "delivered", "dead", "retracted")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


class JsonPath(UserDefinedType[str]):
    """PostgreSQL's ``jsonpath``: parsed once when stored, not at every evaluation."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "JSONPATH"


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(Text)
    delivery: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'tip'"))
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'active'"))
    secret: Mapped[str] = mapped_column(Text, nullable=False)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (
        CheckConstraint(_one_of("delivery", DELIVERY_MODES), name="delivery"),
        CheckConstraint(_one_of("status", ENDPOINT_STATUSES), name="status"),
        Index("ix_webhook_endpoints_owner", "owner"),
    )


class WebhookFilter(Base):
    __tablename__ = "webhook_filters"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    condition: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    path: Mapped[str | None] = mapped_column(JsonPath())
    vars: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )

    __table_args__ = (
        CheckConstraint(_one_of("kind", FILTER_KINDS), name="kind"),
        Index("ix_webhook_filters_endpoint", "endpoint_id"),
    )


class WebhookEvent(Base):
    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
    )
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    event_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), nullable=False, server_default=text("gen_random_uuid()")
    )
    type: Mapped[str] = mapped_column(Text, nullable=False)
    block_height: Mapped[int] = mapped_column(Integer, nullable=False)
    index_block_hash: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'pending'"))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    queued_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    retracted_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))

    __table_args__ = (
        CheckConstraint(_one_of("type", EVENT_TYPES), name="type"),
        CheckConstraint(_one_of("status", EVENT_STATUSES), name="status"),
        UniqueConstraint("endpoint_id", "seq"),
        UniqueConstraint("event_id"),
        # The head of each endpoint's queue, and the sender's scan for due endpoints.
        Index(
            "ix_webhook_events_pending",
            "endpoint_id",
            "seq",
            postgresql_where=text("status = 'pending'"),
        ),
        # Dead letters per endpoint (listings, the metrics' counts).
        Index(
            "ix_webhook_events_dead",
            "endpoint_id",
            "seq",
            postgresql_where=text("status = 'dead'"),
        ),
        # Retraction: the events of the blocks a fork orphaned.
        Index("ix_webhook_events_block", "index_block_hash"),
        Index("ix_webhook_events_created", "created_at"),
    )


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("webhook_events.id", ondelete="CASCADE"), nullable=False
    )
    endpoint_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    duration_ms: Mapped[float] = mapped_column(Float, nullable=False)
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    response: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_webhook_attempts_event", "event_id"),)
