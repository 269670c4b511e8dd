"""indexer: what Nakamoto blocks carry for finality and audit

Revision ID: 0042
Revises: 0050

`tenure_height` (the tenure the block belongs to), `consensus_hash` (the sortition that elected
its tenure's miner), `signer_signature_hash` (what the signers signed) and `signer_count` (how
many signatures the block carries; NULL for a block from before Nakamoto). `db/finality.py`
reads `signer_count` and `burn_block_height`: a signed block whose burn block is
`indexer.nakamoto_burn_confirmations` deep is final (docs/stacks.md).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0042"
down_revision: str | Sequence[str] | None = "0050"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("blocks", sa.Column("tenure_height", sa.Integer(), nullable=True))
    op.add_column("blocks", sa.Column("consensus_hash", sa.Text(), nullable=True))
    op.add_column("blocks", sa.Column("signer_signature_hash", sa.Text(), nullable=True))
    op.add_column("blocks", sa.Column("signer_count", sa.Integer(), nullable=True))


def downgrade() -> None:
    for column in ("signer_count", "signer_signature_hash", "consensus_hash", "tenure_height"):
        op.drop_column("blocks", column)
