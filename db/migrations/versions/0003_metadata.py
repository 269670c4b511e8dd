"""metadata: resolution job queue, content cache by CID, per-URI results and the resolved view

Revision ID: 0003
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("now()")

# One row per subject: what the API joins to certificates and facilities.
RESOLVED_VIEW = """
CREATE VIEW metadata_resolved AS
SELECT j.subject_kind, j.subject_id, j.uri, j.status, j.attempts, j.last_reason, j.last_error,
       j.rec_mismatches, j.updated_at, u.cid, u.resolved_by, u.resolved_at,
       d.document, d.raw_size
FROM metadata_jobs j
LEFT JOIN metadata_uris u ON u.uri = j.uri
LEFT JOIN metadata_documents d ON d.cid = u.cid
"""


def upgrade() -> None:
    op.create_table(
        "metadata_documents",
        sa.Column("cid", sa.Text(), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("raw_size", sa.Integer(), nullable=False),
        sa.Column("resolved_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("cid", name=op.f("pk_metadata_documents")),
    )
    op.create_table(
        "metadata_uris",
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("cid", sa.Text(), nullable=False),
        sa.Column("resolved_by", sa.Text(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["cid"],
            ["metadata_documents.cid"],
            name=op.f("fk_metadata_uris_cid_metadata_documents"),
        ),
        sa.PrimaryKeyConstraint("uri", name=op.f("pk_metadata_uris")),
    )
    op.create_table(
        "metadata_jobs",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("subject_kind", sa.Text(), nullable=False),
        sa.Column("subject_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'queued'"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "next_attempt_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False
        ),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_token", sa.Text(), nullable=True),
        sa.Column("cid", sa.Text(), nullable=True),
        sa.Column("last_reason", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("rec_mismatches", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'done', 'failed', 'permanent')",
            name=op.f("ck_metadata_jobs_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metadata_jobs")),
        sa.UniqueConstraint(
            "uri",
            "subject_kind",
            "subject_id",
            name=op.f("uq_metadata_jobs_uri_subject_kind_subject_id"),
        ),
    )
    op.create_index(
        "ix_metadata_jobs_due",
        "metadata_jobs",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('queued', 'running', 'failed')"),
    )
    op.create_index(
        "ix_metadata_jobs_subject", "metadata_jobs", ["subject_kind", "subject_id"], unique=False
    )
    op.create_index("ix_metadata_jobs_status", "metadata_jobs", ["status"], unique=False)
    op.execute(RESOLVED_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS metadata_resolved")
    op.drop_table("metadata_jobs")
    op.drop_table("metadata_uris")
    op.drop_table("metadata_documents")
