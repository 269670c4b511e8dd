"""indexer: transaction fields decoded at ingest, for analysts

Revision ID: 0010
Revises: 0013
Depends on: 0004 (the analytics schema and the analyst role)

`transactions.sender`, `contract_id`, `function_name`, `fee` and `nonce` are written at ingest
from `raw_tx` (they existed, always NULL). Analysts read them through `analytics.transactions`
(canonical transactions of watched contracts with their block's time); `sender` is indexed for
"what did this address do".
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "0004"

ANALYST_ROLE = "recchain_analyst"

VIEW = """
CREATE OR REPLACE VIEW analytics.transactions AS
    SELECT t.txid, t.block_height, t.tx_index, t.index_block_hash,
           to_timestamp(coalesce(b.block_time, b.burn_block_time)) AS block_time,
           t.status, t.sender, t.contract_id, t.function_name, t.fee, t.nonce
    FROM public.transactions t
    JOIN public.blocks b ON b.index_block_hash = t.index_block_hash
    WHERE t.canonical
"""
COMMENT = (
    "Canonical transactions that touched a watched contract: who sent them (origin address),"
    " the contract called or deployed and the function called, the fee paid in micro-STX (the"
    " sponsor''s when sponsored) and the origin nonce; status is success, abort_by_response or"
    " abort_by_post_condition."
)


def upgrade() -> None:
    op.create_index("ix_transactions_sender", "transactions", ["sender"])
    op.execute(VIEW)
    op.execute(f"COMMENT ON VIEW analytics.transactions IS '{COMMENT}'")
    op.execute(f"GRANT SELECT ON analytics.transactions TO {ANALYST_ROLE}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS analytics.transactions")
    op.drop_index("ix_transactions_sender", "transactions")
