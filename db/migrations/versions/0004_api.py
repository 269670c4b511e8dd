"""api: search indexes, the analytics schema of read-only views, the analyst role

Revision ID: 0004
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ANALYST_ROLE = "recchain_analyst"

# The facility search document. IMMUTABLE (only || and coalesce) so it can be indexed; the API's
# search query uses this same function so the planner can use the indexes below.
FACILITY_DOC = """
CREATE OR REPLACE FUNCTION recchain_facility_doc(
    name text, country text, subdivision text, market_boundary text, grid_zone text,
    energy_source text, technology text
) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(name, '') || ' ' || coalesce(country, '') || ' ' || coalesce(subdivision, '')
        || ' ' || coalesce(market_boundary, '') || ' ' || coalesce(grid_zone, '') || ' '
        || coalesce(energy_source, '') || ' ' || coalesce(technology, '')
$$
"""
DOC = (
    "recchain_facility_doc(name, country, subdivision, market_boundary, grid_zone,"
    " energy_source, technology)"
)

# The documented, stable analyst interface: column names here are a contract.
VIEWS = {
    "current_owners": """
        SELECT token_id, owner, status, facility_id, vintage, wh, serial_start, serial_end,
               period_start, period_end, parent_token_id, block_from AS since_height
        FROM public.certificates WHERE block_to IS NULL""",
    "ownership_intervals": """
        SELECT token_id, owner, status, block_from AS from_height, block_to AS to_height
        FROM public.certificates""",
    "retirements": """
        SELECT r.token_id, r.facility_id, r.wh, r.wh / 1000000.0 AS mwh, r.serial_start,
               r.serial_end, r.vintage, r.retiring_account, r.beneficiary_name,
               r.beneficiary_principal, r.consumption_country, r.consumption_subdivision,
               r.consumption_boundary, r.claim_start, r.claim_end, r.reporting_year, r.purpose,
               r.txid, r.block_height, r.block_time
        FROM public.retirements r""",
    "sales": """
        SELECT s.listing_id, s.token_id, s.kind, s.seller, s.buyer, s.currency, s.price, s.fee,
               s.wh, s.price * 1000000.0 / nullif(s.wh, 0) AS price_per_mwh, s.txid,
               s.block_height, s.block_time
        FROM public.sales s""",
    "facility_attributes": """
        SELECT facility_id, owner, name, country, subdivision, market_boundary, grid_zone,
               latitude, longitude, energy_source, technology, capacity_w, commissioning_date,
               repowering_date, public_support, registry_ids, status, verifier,
               registered_height
        FROM public.facilities WHERE block_to IS NULL""",
}


COMMENTS = {
    "current_owners": "One row per live certificate: its owner and status now (energy in Wh).",
    "ownership_intervals": "Every holding of every certificate: owner and status valid for"
    " blocks [from_height, to_height); to_height NULL = still current.",
    "retirements": "Every retirement (final claim) with beneficiary, consumption boundary and"
    " claim period; wh and mwh.",
    "sales": "Every completed sale with price, fee and price per MWh (currency smallest unit).",
    "facility_attributes": "Current attributes of every facility (location, boundary, source,"
    " technology, commissioning).",
}


def upgrade() -> None:
    op.execute(FACILITY_DOC)
    op.execute(
        f"CREATE INDEX ix_facilities_search_fts ON facilities USING GIN"
        f" (to_tsvector('simple', {DOC})) WHERE block_to IS NULL"
    )
    op.execute(
        f"CREATE INDEX ix_facilities_search_trgm ON facilities USING GIN"
        f" ({DOC} gin_trgm_ops) WHERE block_to IS NULL"
    )
    op.execute(
        "CREATE INDEX ix_retirements_principal ON retirements"
        " (beneficiary_principal, reporting_year) WHERE beneficiary_principal IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX ix_listings_seller_current ON listings (seller)"
        " WHERE block_to IS NULL AND status = 'active'"
    )
    op.execute("CREATE SCHEMA IF NOT EXISTS analytics")
    for name, sql in VIEWS.items():
        op.execute(f"CREATE OR REPLACE VIEW analytics.{name} AS {sql}")
        op.execute(f"COMMENT ON VIEW analytics.{name} IS '{COMMENTS[name]}'")
    op.execute(
        "COMMENT ON SCHEMA analytics IS 'Stable, read-only views for analysts (role"
        f" {ANALYST_ROLE}); column names are a contract.'"
    )
    # Roles are cluster-wide: several databases (and parallel test copies) share one, so it is
    # created and configured once, and a concurrent creator is not an error.
    op.execute(
        f"""DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ANALYST_ROLE}') THEN
                CREATE ROLE {ANALYST_ROLE} NOLOGIN;
                ALTER ROLE {ANALYST_ROLE} SET statement_timeout = '30s';
                ALTER ROLE {ANALYST_ROLE} SET default_transaction_read_only = on;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation OR internal_error THEN NULL;
        END $$"""
    )
    op.execute(f"GRANT USAGE ON SCHEMA analytics TO {ANALYST_ROLE}")
    op.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO {ANALYST_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA analytics FROM {ANALYST_ROLE}")
    op.execute(f"REVOKE ALL ON SCHEMA analytics FROM {ANALYST_ROLE}")
    op.execute("DROP SCHEMA analytics CASCADE")
    for ix in (
        "ix_listings_seller_current",
        "ix_retirements_principal",
        "ix_facilities_search_trgm",
        "ix_facilities_search_fts",
    ):
        op.execute(f"DROP INDEX IF EXISTS {ix}")
    op.execute(
        "DROP FUNCTION IF EXISTS recchain_facility_doc(text, text, text, text, text, text, text)"
    )
