"""indexer: raw request payloads compressed with lz4

Revision ID: 0041
Revises: 0030

Every observer request is kept in `raw_requests.payload`, a mostly-foreign mainnet archive's
blocks included, and PostgreSQL's default TOAST compression (pglz) of those payloads cost about
four times what the rest of the skip path does (43 MB of blocks: 3.5 s with pglz, 0.8 s with
lz4, same size on disk within 15%). Rows written from now on use lz4; older rows stay as they
are (both read the same). A server built without lz4 keeps pglz.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0041"
down_revision: str | Sequence[str] | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "DO $$ BEGIN "
        "ALTER TABLE raw_requests ALTER COLUMN payload SET COMPRESSION lz4; "
        "EXCEPTION WHEN feature_not_supported THEN NULL; END $$"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE raw_requests ALTER COLUMN payload SET COMPRESSION default")
