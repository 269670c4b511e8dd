"""indexer: fencing tokens of the leader lock

Revision ID: 0030
Revises: 0040

`leader_epochs`: one row per leader lock name, its epoch bumped by each process that takes the
lock. The leader's write transactions check their epoch with `FOR SHARE` before they commit, so
the bump waits for a transaction of the previous leader that is still open, and once it has
committed no transaction of the previous leader can commit any more (db/leader.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0030"
down_revision: str | Sequence[str] | None = "0040"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "leader_epochs",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column(
            "acquired_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leader_epochs")),
    )


def downgrade() -> None:
    op.drop_table("leader_epochs")
