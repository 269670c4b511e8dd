"""api: the active listings by token and by seller, read by every holdings question

Revision ID: 0070
Revises: 0006

`holdings` (and what counts as an owner's: expiry exposure) asks for the tokens the owner's
active listings escrow and, per certificate, whether an active listing escrows it. The planner
estimates `block_to IS NULL AND status = 'active'` as independent, about half the current
listings where a few percent are, and scanned every current listing instead of the seller index
(tens of milliseconds per request at 8,000 listings). Both lookups now have an index covering
them, which an index-only scan answers.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0070"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = "WHERE block_to IS NULL AND status = 'active'"


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_listings_seller_current")
    op.execute(f"CREATE INDEX ix_listings_seller_current ON listings (seller, token_id) {ACTIVE}")
    op.execute(f"CREATE INDEX ix_listings_active_token ON listings (token_id) {ACTIVE}")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_listings_active_token")
    op.execute("DROP INDEX IF EXISTS ix_listings_seller_current")
    op.execute(f"CREATE INDEX ix_listings_seller_current ON listings (seller) {ACTIVE}")
