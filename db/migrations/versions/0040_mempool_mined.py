"""indexer: mined transactions leave the mempool

Revision ID: 0040
Revises: 0010

A transaction of `mempool_txs` that a canonical block carries is `mined` (`index_block_hash`
names the block); when that block is rolled back it is `pending` again, unless the winning
branch carries it too. Rows that were `pending` and are already in a canonical block are marked
here, so an existing database starts consistent.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0040"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("mempool_txs", sa.Column("index_block_hash", sa.Text(), nullable=True))
    op.create_index("ix_mempool_txs_block", "mempool_txs", ["index_block_hash"])
    op.create_index(
        "ix_mempool_txs_pending", "mempool_txs", ["received_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )  # fmt: skip
    op.execute(
        "UPDATE mempool_txs m SET status = 'mined', index_block_hash = t.index_block_hash "
        "FROM transactions t WHERE t.txid = m.txid AND t.canonical AND m.status = 'pending'"
    )


def downgrade() -> None:
    op.execute("UPDATE mempool_txs SET status = 'pending' WHERE status = 'mined'")
    op.drop_index("ix_mempool_txs_pending", "mempool_txs")
    op.drop_index("ix_mempool_txs_block", "mempool_txs")
    op.drop_column("mempool_txs", "index_block_hash")
