"""Token metadata: the resolution job queue, the content cache and the per-URI result.

- ``metadata_jobs``: one row per (uri, subject). Workers claim due rows with
  ``FOR UPDATE SKIP LOCKED``; a claimed row's ``next_attempt_at`` is its lease expiry, and
  ``lease_owner`` names the advisory lock its worker process holds while it lives, so a job
  whose worker died is due again at once (its lock is gone), or at the latest when the lease
  runs out.
- ``metadata_documents``: verified documents keyed by the CID of their bytes. Content
  addressing makes an entry true forever, so it is never invalidated.
- ``metadata_uris``: which document a URI resolved to (refresh replaces it for mutable URIs).
- The ``metadata_resolved`` view (created by the migration) joins the three per subject; it is
  what the API reads.
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
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base

JOB_STATUSES = ("queued", "running", "done", "failed", "permanent")
SUBJECT_KINDS = ("certificate", "facility")


class MetadataDocument(Base):
    __tablename__ = "metadata_documents"

    cid: Mapped[str] = mapped_column(Text, primary_key=True)  # CIDv1 base32
    document: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    raw_size: Mapped[int] = mapped_column(Integer, nullable=False)
    resolved_by: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class MetadataUri(Base):
    __tablename__ = "metadata_uris"

    uri: Mapped[str] = mapped_column(Text, primary_key=True)
    cid: Mapped[str] = mapped_column(Text, ForeignKey("metadata_documents.cid"), nullable=False)
    resolved_by: Mapped[str] = mapped_column(Text, nullable=False)
    resolved_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class MetadataJob(Base):
    __tablename__ = "metadata_jobs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    uri: Mapped[str] = mapped_column(Text, nullable=False)
    subject_kind: Mapped[str] = mapped_column(Text, nullable=False)
    subject_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'queued'"))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Random per claim: a worker whose lease expired cannot overwrite its successor's result.
    lease_token: Mapped[str | None] = mapped_column(Text)
    # The claiming process's advisory lock (pg_advisory_lock(queue.OWNER_LOCK_CLASS, owner)):
    # when no session holds it any more, the job is claimable before its lease expires.
    lease_owner: Mapped[int | None] = mapped_column(Integer)
    cid: Mapped[str | None] = mapped_column(Text)
    last_reason: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    # REC attributes that disagree with the chain: {"field": {"document": x, "chain": y}}.
    rec_mismatches: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("uri", "subject_kind", "subject_id"),
        CheckConstraint(
            "status IN ('queued', 'running', 'done', 'failed', 'permanent')", name="status"
        ),
        Index(
            "ix_metadata_jobs_due",
            "next_attempt_at",
            postgresql_where=text("status IN ('queued', 'running', 'failed')"),
        ),
        Index("ix_metadata_jobs_subject", "subject_kind", "subject_id"),
        Index("ix_metadata_jobs_status", "status"),
    )
