"""indexer: chain holds, and replay positions per archive

Revision ID: 0007
Revises: 0002

- `chain_holds`: what keeps the chain from advancing, recorded once with a count of attempts (a
  block refused as corrupt whose descendants wait for the genuine copy, a fork deeper than the
  finality horizon, a body over the size limit); `_meta`, a metric and an alert show the open
  ones; each is resolved by the indexer when the cause is gone (`resolved_at`).
- `replay_positions`: how far `recchain replay` got in one archive (keyed by the archive's first
  request), committed with the data. It replaces `checkpoints.position`, which was one number for
  every file: replaying a one-row file (a poison block) moved it past the rows of every other
  archive, whose genuine block was then skipped. An archive replayed before this revision is
  read again from its start (the payload dedup makes that a no-op).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chain_holds",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("event_path", sa.Text(), nullable=False),
        sa.Column("index_block_hash", sa.Text(), nullable=True),
        sa.Column("block_height", sa.Integer(), nullable=True),
        sa.Column("raw_request_id", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "first_seen", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "last_seen", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('refused_block', 'deep_fork', 'body_too_large')",
            name=op.f("ck_chain_holds_kind"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_holds")),
    )
    # One open hold per cause: a repeat only counts an attempt.
    op.create_index(
        "ux_chain_holds_open",
        "chain_holds",
        ["kind", "event_path", sa.text("coalesce(index_block_hash, '')")],
        unique=True,
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.create_table(
        "replay_positions",
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_replay_positions")),
    )
    op.drop_column("checkpoints", "position")


def downgrade() -> None:
    op.add_column("checkpoints", sa.Column("position", sa.BigInteger(), nullable=True))
    op.drop_table("replay_positions")
    op.drop_index("ux_chain_holds_open", table_name="chain_holds")
    op.drop_table("chain_holds")
