"""indexer: secondary indexes deferred while a replay fills an empty database

Revision ID: 0050
Revises: 0041

- `deferred_indexes`: the definition of each secondary index a catch-up replay into an empty
  database dropped (in the transaction that dropped it), to be built once when the replay ends
  (`db/indexes.py`). A row left by a replay that was killed is built by the next indexer start
  or `recchain migrate`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0050"
down_revision: str | Sequence[str] | None = "0041"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deferred_indexes",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("table_name", sa.Text(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column(
            "deferred_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_deferred_indexes")),
    )


def downgrade() -> None:
    op.drop_table("deferred_indexes")
