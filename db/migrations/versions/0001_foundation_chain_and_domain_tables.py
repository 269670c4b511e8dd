"""foundation: chain and domain tables

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Trigram search and GiST over scalar columns are used by later queries and indexes.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    op.create_table(
        "bids",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("listing_id", sa.BigInteger(), nullable=False),
        sa.Column("bidder", sa.Text(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=39, scale=0), nullable=False),
        sa.Column("block_height", sa.Integer(), nullable=False),
        sa.Column("index_block_hash", sa.Text(), nullable=False),
        sa.Column("txid", sa.Text(), nullable=False),
        sa.Column("event_index", sa.Integer(), nullable=False),
        sa.Column("block_time", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bids")),
    )
    op.create_index("ix_bids_height", "bids", ["block_height"], unique=False)
    op.create_index("ix_bids_listing", "bids", ["listing_id", "block_height"], unique=False)
    op.create_table(
        "blocks",
        sa.Column("index_block_hash", sa.Text(), nullable=False),
        sa.Column("block_hash", sa.Text(), nullable=False),
        sa.Column("block_height", sa.Integer(), nullable=False),
        sa.Column("parent_index_block_hash", sa.Text(), nullable=False),
        sa.Column("parent_block_hash", sa.Text(), nullable=True),
        sa.Column("burn_block_hash", sa.Text(), nullable=True),
        sa.Column("burn_block_height", sa.Integer(), nullable=True),
        sa.Column("burn_block_time", sa.BigInteger(), nullable=True),
        sa.Column("block_time", sa.BigInteger(), nullable=True),
        sa.Column("canonical", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("orphan", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("tx_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("event_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("raw_request_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("index_block_hash", name=op.f("pk_blocks")),
    )
    op.create_index(
        "ix_blocks_height_canonical",
        "blocks",
        ["block_height"],
        unique=False,
        postgresql_where=sa.text("canonical"),
    )
    op.create_index("ix_blocks_parent", "blocks", ["parent_index_block_hash"], unique=False)
    op.create_table(
        "certificates",
        sa.Column("token_id", sa.BigInteger(), nullable=False),
        sa.Column("facility_id", sa.BigInteger(), nullable=False),
        sa.Column("report_id", sa.BigInteger(), nullable=True),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("vintage", sa.Integer(), nullable=False),
        sa.Column("wh", sa.BigInteger(), nullable=False),
        sa.Column("serial_start", sa.BigInteger(), nullable=False),
        sa.Column("serial_end", sa.BigInteger(), nullable=False),
        sa.Column("metadata_uri", sa.Text(), nullable=True),
        sa.Column("parent_token_id", sa.BigInteger(), nullable=True),
        sa.Column("issued_height", sa.Integer(), nullable=False),
        sa.Column("issued_txid", sa.Text(), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_height", sa.Integer(), nullable=True),
        sa.Column("revocation_reason", sa.Text(), nullable=True),
        sa.Column("vid", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("block_from", sa.Integer(), nullable=False),
        sa.Column("block_to", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("vid", name=op.f("pk_certificates")),
    )
    op.create_index(
        "ix_certificates_facility", "certificates", ["facility_id", "period_start"], unique=False
    )
    op.create_index(
        "ix_certificates_history", "certificates", ["token_id", "block_from"], unique=False
    )
    op.create_index(
        "ix_certificates_owner_current",
        "certificates",
        ["owner"],
        unique=False,
        postgresql_where=sa.text("block_to IS NULL"),
    )
    op.create_index(
        "ix_certificates_owner_history",
        "certificates",
        ["owner", "block_from", "block_to"],
        unique=False,
    )
    op.create_index("ix_certificates_parent", "certificates", ["parent_token_id"], unique=False)
    op.create_index(
        "uq_certificates_current",
        "certificates",
        ["token_id"],
        unique=True,
        postgresql_where=sa.text("block_to IS NULL"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("index_block_hash", sa.Text(), nullable=True),
        sa.Column("block_height", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_checkpoints")),
    )
    op.create_table(
        "events",
        sa.Column("index_block_hash", sa.Text(), nullable=False),
        sa.Column("event_index", sa.Integer(), nullable=False),
        sa.Column("txid", sa.Text(), nullable=False),
        sa.Column("block_height", sa.Integer(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("contract_id", sa.Text(), nullable=True),
        sa.Column("topic", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=True),
        sa.Column("sender", sa.Text(), nullable=True),
        sa.Column("recipient", sa.Text(), nullable=True),
        sa.Column("amount", sa.Text(), nullable=True),
        sa.Column("raw_value", sa.Text(), nullable=True),
        sa.Column("canonical", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.PrimaryKeyConstraint("index_block_hash", "event_index", name=op.f("pk_events")),
    )
    op.create_index("ix_events_txid", "events", ["txid"], unique=False)
    op.create_table(
        "facilities",
        sa.Column("facility_id", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("country", sa.Text(), nullable=False),
        sa.Column("subdivision", sa.Text(), nullable=True),
        sa.Column("market_boundary", sa.Text(), nullable=True),
        sa.Column("grid_zone", sa.Text(), nullable=True),
        sa.Column("latitude", sa.Numeric(precision=9, scale=6), nullable=True),
        sa.Column("longitude", sa.Numeric(precision=9, scale=6), nullable=True),
        sa.Column("energy_source", sa.Text(), nullable=False),
        sa.Column("technology", sa.Text(), nullable=True),
        sa.Column("capacity_w", sa.BigInteger(), nullable=True),
        sa.Column("commissioning_date", sa.Date(), nullable=True),
        sa.Column("repowering_date", sa.Date(), nullable=True),
        sa.Column("public_support", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "registry_ids",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("metadata_uri", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("verifier", sa.Text(), nullable=True),
        sa.Column("registered_height", sa.Integer(), nullable=False),
        sa.Column("registered_txid", sa.Text(), nullable=True),
        sa.Column("vid", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("block_from", sa.Integer(), nullable=False),
        sa.Column("block_to", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("vid", name=op.f("pk_facilities")),
    )
    op.create_index(
        "ix_facilities_history", "facilities", ["facility_id", "block_from"], unique=False
    )
    op.create_index(
        "ix_facilities_owner",
        "facilities",
        ["owner"],
        unique=False,
        postgresql_where=sa.text("block_to IS NULL"),
    )
    op.create_index(
        "uq_facilities_current",
        "facilities",
        ["facility_id"],
        unique=True,
        postgresql_where=sa.text("block_to IS NULL"),
    )
    op.create_table(
        "generation_reports",
        sa.Column("report_id", sa.BigInteger(), nullable=False),
        sa.Column("facility_id", sa.BigInteger(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("wh", sa.BigInteger(), nullable=False),
        sa.Column("evidence_hash", sa.Text(), nullable=True),
        sa.Column("submitter", sa.Text(), nullable=False),
        sa.Column("verifier", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("submitted_height", sa.Integer(), nullable=False),
        sa.Column("submitted_txid", sa.Text(), nullable=True),
        sa.Column("attested_height", sa.Integer(), nullable=True),
        sa.Column("attested_txid", sa.Text(), nullable=True),
        sa.Column("vid", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("block_from", sa.Integer(), nullable=False),
        sa.Column("block_to", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("vid", name=op.f("pk_generation_reports")),
    )
    op.create_index(
        "ix_generation_reports_facility",
        "generation_reports",
        ["facility_id", "period_start"],
        unique=False,
    )
    op.create_index(
        "ix_generation_reports_history",
        "generation_reports",
        ["report_id", "block_from"],
        unique=False,
    )
    op.create_index(
        "uq_generation_reports_current",
        "generation_reports",
        ["report_id"],
        unique=True,
        postgresql_where=sa.text("block_to IS NULL"),
    )
    op.create_table(
        "listings",
        sa.Column("listing_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("token_id", sa.BigInteger(), nullable=False),
        sa.Column("seller", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("price", sa.Numeric(precision=39, scale=0), nullable=True),
        sa.Column("reserve", sa.Numeric(precision=39, scale=0), nullable=True),
        sa.Column("min_increment", sa.Numeric(precision=39, scale=0), nullable=True),
        sa.Column("highest_bid", sa.Numeric(precision=39, scale=0), nullable=True),
        sa.Column("highest_bidder", sa.Text(), nullable=True),
        sa.Column("bid_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("start_height", sa.Integer(), nullable=False),
        sa.Column("end_height", sa.Integer(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("buyer", sa.Text(), nullable=True),
        sa.Column("created_txid", sa.Text(), nullable=True),
        sa.Column("vid", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("block_from", sa.Integer(), nullable=False),
        sa.Column("block_to", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("vid", name=op.f("pk_listings")),
    )
    op.create_index("ix_listings_history", "listings", ["listing_id", "block_from"], unique=False)
    op.create_index(
        "ix_listings_status_current",
        "listings",
        ["status"],
        unique=False,
        postgresql_where=sa.text("block_to IS NULL"),
    )
    op.create_index("ix_listings_token", "listings", ["token_id"], unique=False)
    op.create_index(
        "uq_listings_current",
        "listings",
        ["listing_id"],
        unique=True,
        postgresql_where=sa.text("block_to IS NULL"),
    )
    op.create_table(
        "mempool_txs",
        sa.Column("txid", sa.Text(), nullable=False),
        sa.Column("raw_tx", sa.LargeBinary(), nullable=True),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("replaced_by", sa.Text(), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("txid", name=op.f("pk_mempool_txs")),
    )
    op.create_table(
        "raw_requests",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("event_path", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("payload_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raw_requests")),
        sa.UniqueConstraint("payload_hash", name=op.f("uq_raw_requests_payload_hash")),
    )
    op.create_table(
        "retirements",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("token_id", sa.BigInteger(), nullable=False),
        sa.Column("facility_id", sa.BigInteger(), nullable=False),
        sa.Column("wh", sa.BigInteger(), nullable=False),
        sa.Column("serial_start", sa.BigInteger(), nullable=False),
        sa.Column("serial_end", sa.BigInteger(), nullable=False),
        sa.Column("vintage", sa.Integer(), nullable=False),
        sa.Column("retiring_account", sa.Text(), nullable=False),
        sa.Column("beneficiary_name", sa.Text(), nullable=False),
        sa.Column("beneficiary_principal", sa.Text(), nullable=True),
        sa.Column("consumption_country", sa.Text(), nullable=True),
        sa.Column("consumption_subdivision", sa.Text(), nullable=True),
        sa.Column("consumption_boundary", sa.Text(), nullable=True),
        sa.Column("claim_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reporting_year", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=True),
        sa.Column("via_listing_id", sa.BigInteger(), nullable=True),
        sa.Column("block_height", sa.Integer(), nullable=False),
        sa.Column("index_block_hash", sa.Text(), nullable=False),
        sa.Column("txid", sa.Text(), nullable=False),
        sa.Column("event_index", sa.Integer(), nullable=False),
        sa.Column("block_time", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retirements")),
    )
    op.create_index(
        "ix_retirements_beneficiary",
        "retirements",
        ["beneficiary_name", "reporting_year"],
        unique=False,
    )
    op.create_index("ix_retirements_height", "retirements", ["block_height"], unique=False)
    op.create_index("ix_retirements_token", "retirements", ["token_id"], unique=False)
    op.create_table(
        "sales",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("listing_id", sa.BigInteger(), nullable=False),
        sa.Column("token_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("seller", sa.Text(), nullable=False),
        sa.Column("buyer", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("price", sa.Numeric(precision=39, scale=0), nullable=False),
        sa.Column("fee", sa.Numeric(precision=39, scale=0), nullable=False),
        sa.Column("wh", sa.BigInteger(), nullable=False),
        sa.Column("block_height", sa.Integer(), nullable=False),
        sa.Column("index_block_hash", sa.Text(), nullable=False),
        sa.Column("txid", sa.Text(), nullable=False),
        sa.Column("event_index", sa.Integer(), nullable=False),
        sa.Column("block_time", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sales")),
    )
    op.create_index("ix_sales_height", "sales", ["block_height"], unique=False)
    op.create_index("ix_sales_time", "sales", ["block_time"], unique=False)
    op.create_index("ix_sales_token", "sales", ["token_id"], unique=False)
    op.create_table(
        "transactions",
        sa.Column("index_block_hash", sa.Text(), nullable=False),
        sa.Column("txid", sa.Text(), nullable=False),
        sa.Column("block_height", sa.Integer(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("sender", sa.Text(), nullable=True),
        sa.Column("contract_id", sa.Text(), nullable=True),
        sa.Column("function_name", sa.Text(), nullable=True),
        sa.Column("fee", sa.BigInteger(), nullable=True),
        sa.Column("nonce", sa.BigInteger(), nullable=True),
        sa.Column("raw_result", sa.Text(), nullable=True),
        sa.Column("raw_tx", sa.LargeBinary(), nullable=True),
        sa.Column("canonical", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.PrimaryKeyConstraint("index_block_hash", "txid", name=op.f("pk_transactions")),
    )
    op.create_index("ix_transactions_txid", "transactions", ["txid"], unique=False)
    op.create_table(
        "transfers",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("token_id", sa.BigInteger(), nullable=False),
        sa.Column("sender", sa.Text(), nullable=True),
        sa.Column("recipient", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("price", sa.Numeric(precision=39, scale=0), nullable=True),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("block_height", sa.Integer(), nullable=False),
        sa.Column("index_block_hash", sa.Text(), nullable=False),
        sa.Column("txid", sa.Text(), nullable=False),
        sa.Column("event_index", sa.Integer(), nullable=False),
        sa.Column("block_time", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfers")),
    )
    op.create_index("ix_transfers_height", "transfers", ["block_height"], unique=False)
    op.create_index("ix_transfers_recipient", "transfers", ["recipient"], unique=False)
    op.create_index(
        "ix_transfers_token", "transfers", ["token_id", "block_height", "event_index"], unique=False
    )
    op.create_table(
        "verifiers",
        sa.Column("principal", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("added_height", sa.Integer(), nullable=False),
        sa.Column("vid", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("block_from", sa.Integer(), nullable=False),
        sa.Column("block_to", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("vid", name=op.f("pk_verifiers")),
    )
    op.create_index("ix_verifiers_history", "verifiers", ["principal", "block_from"], unique=False)
    op.create_index(
        "uq_verifiers_current",
        "verifiers",
        ["principal"],
        unique=True,
        postgresql_where=sa.text("block_to IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_verifiers_current", table_name="verifiers", postgresql_where=sa.text("block_to IS NULL")
    )
    op.drop_index("ix_verifiers_history", table_name="verifiers")
    op.drop_table("verifiers")
    op.drop_index("ix_transfers_token", table_name="transfers")
    op.drop_index("ix_transfers_recipient", table_name="transfers")
    op.drop_index("ix_transfers_height", table_name="transfers")
    op.drop_table("transfers")
    op.drop_index("ix_transactions_txid", table_name="transactions")
    op.drop_table("transactions")
    op.drop_index("ix_sales_token", table_name="sales")
    op.drop_index("ix_sales_time", table_name="sales")
    op.drop_index("ix_sales_height", table_name="sales")
    op.drop_table("sales")
    op.drop_index("ix_retirements_token", table_name="retirements")
    op.drop_index("ix_retirements_height", table_name="retirements")
    op.drop_index("ix_retirements_beneficiary", table_name="retirements")
    op.drop_table("retirements")
    op.drop_table("raw_requests")
    op.drop_table("mempool_txs")
    op.drop_index(
        "uq_listings_current", table_name="listings", postgresql_where=sa.text("block_to IS NULL")
    )
    op.drop_index("ix_listings_token", table_name="listings")
    op.drop_index(
        "ix_listings_status_current",
        table_name="listings",
        postgresql_where=sa.text("block_to IS NULL"),
    )
    op.drop_index("ix_listings_history", table_name="listings")
    op.drop_table("listings")
    op.drop_index(
        "uq_generation_reports_current",
        table_name="generation_reports",
        postgresql_where=sa.text("block_to IS NULL"),
    )
    op.drop_index("ix_generation_reports_history", table_name="generation_reports")
    op.drop_index("ix_generation_reports_facility", table_name="generation_reports")
    op.drop_table("generation_reports")
    op.drop_index(
        "uq_facilities_current",
        table_name="facilities",
        postgresql_where=sa.text("block_to IS NULL"),
    )
    op.drop_index(
        "ix_facilities_owner", table_name="facilities", postgresql_where=sa.text("block_to IS NULL")
    )
    op.drop_index("ix_facilities_history", table_name="facilities")
    op.drop_table("facilities")
    op.drop_index("ix_events_txid", table_name="events")
    op.drop_table("events")
    op.drop_table("checkpoints")
    op.drop_index(
        "uq_certificates_current",
        table_name="certificates",
        postgresql_where=sa.text("block_to IS NULL"),
    )
    op.drop_index("ix_certificates_parent", table_name="certificates")
    op.drop_index("ix_certificates_owner_history", table_name="certificates")
    op.drop_index(
        "ix_certificates_owner_current",
        table_name="certificates",
        postgresql_where=sa.text("block_to IS NULL"),
    )
    op.drop_index("ix_certificates_history", table_name="certificates")
    op.drop_index("ix_certificates_facility", table_name="certificates")
    op.drop_table("certificates")
    op.drop_index("ix_blocks_parent", table_name="blocks")
    op.drop_index(
        "ix_blocks_height_canonical", table_name="blocks", postgresql_where=sa.text("canonical")
    )
    op.drop_table("blocks")
    op.drop_index("ix_bids_listing", table_name="bids")
    op.drop_index("ix_bids_height", table_name="bids")
    op.drop_table("bids")
