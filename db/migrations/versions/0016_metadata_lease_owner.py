"""metadata: the worker process that holds a job's lease (metadata_jobs.lease_owner)

A running job names the advisory lock its worker process holds for as long as it lives; a job
whose owner's lock is gone (the process died) is claimable at once instead of when its lease
runs out.

Revision ID: 0016
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("metadata_jobs", sa.Column("lease_owner", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("metadata_jobs", "lease_owner")
