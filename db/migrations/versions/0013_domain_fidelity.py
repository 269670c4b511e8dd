"""indexer: split children keep their original issuance beside the split's own; revocations
keep the attesting verifier and name the revoking one

Revision ID: 0013
Revises: 0007

- `certificates.split_height/split_txid/split_at`: the split that created a child (NULL for a
  minted certificate). `issued_height/issued_txid/issued_at` are always the original mint's, as
  the contract's `issued-at` is.
- `certificates.revoked_by`, `generation_reports.revoked_by/revoked_height/reason`: who revoked
  and why; a report's `verifier` stays the verifier that attested (or rejected) it.

Existing rows are brought to the same model: a child's issuance becomes its root's mint and its
former issuance txid the split's; a revoked report takes its verifier from its last version
before the revocation (the contract overwrote it) and names that revoker in `revoked_by`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL_SPLITS = """
WITH RECURSIVE root(token_id, ancestor) AS (
    SELECT DISTINCT token_id, parent_token_id FROM certificates WHERE parent_token_id IS NOT NULL
  UNION
    SELECT r.token_id, p.parent_token_id FROM root r
    JOIN certificates p ON p.token_id = r.ancestor AND p.parent_token_id IS NOT NULL
), origin AS (
    SELECT DISTINCT ON (r.token_id) r.token_id, m.issued_txid, m.issued_height, m.issued_at
    FROM root r JOIN certificates m ON m.token_id = r.ancestor AND m.parent_token_id IS NULL
    ORDER BY r.token_id, m.block_from
), created AS (
    SELECT c.token_id, min(c.block_from) AS h FROM certificates c
    WHERE c.parent_token_id IS NOT NULL GROUP BY c.token_id
)
UPDATE certificates c SET
    split_height = created.h,
    split_txid = c.issued_txid,
    split_at = (SELECT to_timestamp(b.block_time) FROM blocks b
                WHERE b.canonical AND b.block_height = created.h LIMIT 1),
    issued_txid = origin.issued_txid,
    issued_height = origin.issued_height,
    issued_at = origin.issued_at
FROM created JOIN origin USING (token_id)
WHERE c.token_id = created.token_id
"""

BACKFILL_REPORTS = """
UPDATE generation_reports g SET
    revoked_by = g.verifier,
    revoked_height = (SELECT min(x.block_from) FROM generation_reports x
                      WHERE x.report_id = g.report_id AND x.status = 'revoked'),
    verifier = (SELECT x.verifier FROM generation_reports x
                WHERE x.report_id = g.report_id AND x.status IN ('attested', 'minted')
                ORDER BY x.block_from DESC LIMIT 1)
WHERE g.status = 'revoked'
"""


def upgrade() -> None:
    op.add_column("certificates", sa.Column("split_height", sa.Integer()))
    op.add_column("certificates", sa.Column("split_txid", sa.Text()))
    op.add_column("certificates", sa.Column("split_at", sa.DateTime(timezone=True)))
    op.add_column("certificates", sa.Column("revoked_by", sa.Text()))
    op.add_column("generation_reports", sa.Column("revoked_by", sa.Text()))
    op.add_column("generation_reports", sa.Column("revoked_height", sa.Integer()))
    op.add_column("generation_reports", sa.Column("reason", sa.Text()))
    op.execute(BACKFILL_SPLITS)
    op.execute(BACKFILL_REPORTS)


def downgrade() -> None:
    op.execute("UPDATE certificates SET issued_txid = split_txid WHERE split_txid IS NOT NULL")
    op.execute("UPDATE generation_reports SET verifier = revoked_by WHERE revoked_by IS NOT NULL")
    for col in ("reason", "revoked_height", "revoked_by"):
        op.drop_column("generation_reports", col)
    for col in ("revoked_by", "split_at", "split_txid", "split_height"):
        op.drop_column("certificates", col)
