"""api: certificate expiry rules per market boundary, the expiry function and its analyst view

Revision ID: 0006
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ANALYST_ROLE = "recchain_analyst"

# The one definition of a certificate's effective expiry, used by the API and the view below: its
# own expires_at when the chain or its metadata set one, else the end of its production period
# plus its boundary's rule; NULL when neither applies (the certificate does not expire).
EXPIRY_FUNCTION = """
CREATE OR REPLACE FUNCTION recchain_certificate_expiry(
    expires_at timestamptz, period_end timestamptz, market_boundary text
) RETURNS timestamptz LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(
        expires_at,
        period_end + make_interval(months => (
            SELECT r.months FROM public.expiry_rules r WHERE r.market_boundary = $3
        ))
    )
$$
"""

VIEW = """
CREATE OR REPLACE VIEW analytics.certificate_expiry AS
    SELECT c.token_id, c.owner, c.status, c.facility_id, f.market_boundary, c.vintage, c.wh,
           c.period_start, c.period_end,
           recchain_certificate_expiry(c.expires_at, c.period_end, f.market_boundary)
               AS expires_at
    FROM public.certificates c
    JOIN public.facilities f ON f.facility_id = c.facility_id AND f.block_to IS NULL
    WHERE c.block_to IS NULL AND c.status IN ('active', 'listed')
"""


def upgrade() -> None:
    op.create_table(
        "expiry_rules",
        sa.Column("market_boundary", sa.Text(), nullable=False),
        sa.Column("months", sa.Integer(), nullable=False),
        sa.Column("reference", sa.Text(), nullable=True),
        sa.CheckConstraint("months > 0", name=op.f("ck_expiry_rules_months")),
        sa.PrimaryKeyConstraint("market_boundary", name=op.f("pk_expiry_rules")),
    )
    # EU guarantees of origin are valid for 12 months after production (RED II art. 19(3)),
    # which the AIB's EECS rules apply; other registries' lifetimes are set by operators.
    op.execute(
        "INSERT INTO expiry_rules (market_boundary, months, reference) VALUES"
        " ('EU-AIB', 12, 'Directive (EU) 2018/2001 art. 19(3); EECS Rules')"
    )
    op.execute(EXPIRY_FUNCTION)
    op.execute(VIEW)
    op.execute(
        "COMMENT ON VIEW analytics.certificate_expiry IS 'Every unretired live certificate"
        " (active or listed) with its effective expiry (NULL = does not expire).'"
    )
    # The function runs with the caller's rights, so analysts read the (public) rules too.
    op.execute(f"GRANT SELECT ON analytics.certificate_expiry, expiry_rules TO {ANALYST_ROLE}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS analytics.certificate_expiry")
    op.execute(
        "DROP FUNCTION IF EXISTS recchain_certificate_expiry(timestamptz, timestamptz, text)"
    )
    op.drop_table("expiry_rules")
