"""The REC domain (docs/domain.md), normalised. Entity tables are block-range versioned
(`Versioned`); fact tables are append-only rows tied to the block that produced them.

Units: energy in Wh (bigint), periods half-open `[start, end)` as timestamptz, money in the
currency's smallest unit (micro-STX, satoshi-like token units) as numeric(39) because Clarity
uints are 128-bit. Currency is `STX` or the SIP-010 contract identifier.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Index,
    Integer,
    Numeric,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, Versioned

Amount = Numeric(39, 0)


def _current(table: str, *cols: str) -> Index:
    """At most one current version per entity, and the fast path for 'now' queries."""
    return Index(
        f"uq_{table}_current", *cols, unique=True, postgresql_where=text("block_to IS NULL")
    )


def _history(table: str, *cols: str) -> Index:
    return Index(f"ix_{table}_history", *cols, "block_from")


class Verifier(Versioned, Base):
    __tablename__ = "verifiers"

    principal: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False)  # active | revoked
    added_height: Mapped[int] = mapped_column(Integer, nullable=False)

    __table_args__ = (_current("verifiers", "principal"), _history("verifiers", "principal"))


class Facility(Versioned, Base):
    __tablename__ = "facilities"

    facility_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    owner: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    country: Mapped[str] = mapped_column(Text, nullable=False)  # ISO 3166-1 alpha-2
    subdivision: Mapped[str | None] = mapped_column(Text)  # ISO 3166-2
    market_boundary: Mapped[str | None] = mapped_column(Text)
    grid_zone: Mapped[str | None] = mapped_column(Text)  # grid operator / bidding zone
    latitude: Mapped[Decimal | None] = mapped_column(Numeric(9, 6))
    longitude: Mapped[Decimal | None] = mapped_column(Numeric(9, 6))
    energy_source: Mapped[str] = mapped_column(Text, nullable=False)  # I-REC ES code
    technology: Mapped[str | None] = mapped_column(Text)  # I-REC TC code
    capacity_w: Mapped[int | None] = mapped_column(BigInteger)
    commissioning_date: Mapped[date | None] = mapped_column(Date)
    repowering_date: Mapped[date | None] = mapped_column(Date)
    public_support: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )
    registry_ids: Mapped[dict[str, str]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    metadata_uri: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, nullable=False)  # pending|active|suspended|terminated
    verifier: Mapped[str | None] = mapped_column(Text)  # of the latest status decision
    registered_height: Mapped[int] = mapped_column(Integer, nullable=False)
    registered_txid: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        _current("facilities", "facility_id"),
        _history("facilities", "facility_id"),
        Index("ix_facilities_owner", "owner", postgresql_where=text("block_to IS NULL")),
    )


class GenerationReport(Versioned, Base):
    __tablename__ = "generation_reports"

    report_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    facility_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    wh: Mapped[int] = mapped_column(BigInteger, nullable=False)
    evidence_hash: Mapped[str | None] = mapped_column(Text)  # 0x-hex sha256 of meter data
    submitter: Mapped[str] = mapped_column(Text, nullable=False)
    # The verifier that attested (or rejected) it; a revocation leaves it as it was.
    verifier: Mapped[str | None] = mapped_column(Text)
    # submitted | attested | minted | rejected | withdrawn | revoked
    status: Mapped[str] = mapped_column(Text, nullable=False)
    submitted_height: Mapped[int] = mapped_column(Integer, nullable=False)
    submitted_txid: Mapped[str | None] = mapped_column(Text)
    attested_height: Mapped[int | None] = mapped_column(Integer)
    attested_txid: Mapped[str | None] = mapped_column(Text)
    revoked_by: Mapped[str | None] = mapped_column(Text)
    revoked_height: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)  # of a rejection or revocation

    __table_args__ = (
        _current("generation_reports", "report_id"),
        _history("generation_reports", "report_id"),
        Index("ix_generation_reports_facility", "facility_id", "period_start"),
    )


class Certificate(Versioned, Base):
    __tablename__ = "certificates"

    token_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    facility_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    report_id: Mapped[int | None] = mapped_column(BigInteger)
    owner: Mapped[str] = mapped_column(Text, nullable=False)
    # active | listed | retired | revoked | split
    status: Mapped[str] = mapped_column(Text, nullable=False)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    vintage: Mapped[int] = mapped_column(Integer, nullable=False)
    wh: Mapped[int] = mapped_column(BigInteger, nullable=False)
    serial_start: Mapped[int] = mapped_column(BigInteger, nullable=False)
    serial_end: Mapped[int] = mapped_column(BigInteger, nullable=False)
    metadata_uri: Mapped[str | None] = mapped_column(Text)
    parent_token_id: Mapped[int | None] = mapped_column(BigInteger)
    # The original mint, also for split children (the contract's `issued-at`)...
    issued_height: Mapped[int] = mapped_column(Integer, nullable=False)
    issued_txid: Mapped[str | None] = mapped_column(Text)
    issued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_height: Mapped[int | None] = mapped_column(Integer)
    revocation_reason: Mapped[str | None] = mapped_column(Text)
    # ...and the split that created a child (NULL for a minted certificate).
    split_height: Mapped[int | None] = mapped_column(Integer)
    split_txid: Mapped[str | None] = mapped_column(Text)
    split_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_by: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        _current("certificates", "token_id"),
        _history("certificates", "token_id"),
        Index("ix_certificates_owner_current", "owner", postgresql_where=text("block_to IS NULL")),
        Index("ix_certificates_owner_history", "owner", "block_from", "block_to"),
        Index("ix_certificates_facility", "facility_id", "period_start"),
        Index("ix_certificates_parent", "parent_token_id"),
    )


class Listing(Versioned, Base):
    """A fixed-price listing or an English auction; the token is escrowed while it is open."""

    __tablename__ = "listings"

    listing_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)  # fixed | auction
    token_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    seller: Mapped[str] = mapped_column(Text, nullable=False)
    currency: Mapped[str] = mapped_column(Text, nullable=False)  # STX | SIP-010 contract id
    price: Mapped[Decimal | None] = mapped_column(Amount)  # fixed price, or auction start price
    reserve: Mapped[Decimal | None] = mapped_column(Amount)
    min_increment: Mapped[Decimal | None] = mapped_column(Amount)
    highest_bid: Mapped[Decimal | None] = mapped_column(Amount)
    highest_bidder: Mapped[str | None] = mapped_column(Text)
    bid_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    start_height: Mapped[int] = mapped_column(Integer, nullable=False)
    end_height: Mapped[int | None] = mapped_column(Integer)  # expiry / auction end
    # active | sold | cancelled | expired
    status: Mapped[str] = mapped_column(Text, nullable=False)
    buyer: Mapped[str | None] = mapped_column(Text)
    created_txid: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        _current("listings", "listing_id"),
        _history("listings", "listing_id"),
        Index("ix_listings_token", "token_id"),
        Index("ix_listings_status_current", "status", postgresql_where=text("block_to IS NULL")),
    )


class _Fact:
    """Columns every fact row carries: where on the chain it happened."""

    block_height: Mapped[int] = mapped_column(Integer, nullable=False)
    index_block_hash: Mapped[str] = mapped_column(Text, nullable=False)
    txid: Mapped[str] = mapped_column(Text, nullable=False)
    event_index: Mapped[int] = mapped_column(Integer, nullable=False)  # per transaction
    tx_index: Mapped[int | None] = mapped_column(Integer)  # chain order within the block
    block_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Transfer(_Fact, Base):
    """Every custody change of a certificate: the ownership history."""

    __tablename__ = "transfers"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    token_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sender: Mapped[str | None] = mapped_column(Text)  # NULL on mint
    recipient: Mapped[str | None] = mapped_column(Text)  # NULL on burn
    # mint | transfer | escrow | release (back to the seller) | sale (to a buyer) | split | retire
    # | revoke
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    price: Mapped[Decimal | None] = mapped_column(Amount)
    currency: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_transfers_token", "token_id", "block_height", "event_index"),
        Index("ix_transfers_height", "block_height"),
        Index("ix_transfers_recipient", "recipient"),
    )


class Bid(_Fact, Base):
    __tablename__ = "bids"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    listing_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    bidder: Mapped[str] = mapped_column(Text, nullable=False)
    amount: Mapped[Decimal] = mapped_column(Amount, nullable=False)

    __table_args__ = (
        Index("ix_bids_listing", "listing_id", "block_height"),
        Index("ix_bids_height", "block_height"),
    )


class Sale(_Fact, Base):
    __tablename__ = "sales"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    listing_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    token_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)  # fixed | auction
    seller: Mapped[str] = mapped_column(Text, nullable=False)
    buyer: Mapped[str] = mapped_column(Text, nullable=False)
    currency: Mapped[str] = mapped_column(Text, nullable=False)
    price: Mapped[Decimal] = mapped_column(Amount, nullable=False)
    fee: Mapped[Decimal] = mapped_column(Amount, nullable=False)
    wh: Mapped[int] = mapped_column(BigInteger, nullable=False)

    __table_args__ = (
        Index("ix_sales_height", "block_height"),
        Index("ix_sales_token", "token_id"),
        Index("ix_sales_time", "block_time"),
    )


class Retirement(_Fact, Base):
    """A final compliance claim. Never undone on-chain; only a fork can remove the row."""

    __tablename__ = "retirements"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    token_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    facility_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    wh: Mapped[int] = mapped_column(BigInteger, nullable=False)
    serial_start: Mapped[int] = mapped_column(BigInteger, nullable=False)
    serial_end: Mapped[int] = mapped_column(BigInteger, nullable=False)
    vintage: Mapped[int] = mapped_column(Integer, nullable=False)
    retiring_account: Mapped[str] = mapped_column(Text, nullable=False)
    beneficiary_name: Mapped[str] = mapped_column(Text, nullable=False)
    beneficiary_principal: Mapped[str | None] = mapped_column(Text)
    consumption_country: Mapped[str | None] = mapped_column(Text)
    consumption_subdivision: Mapped[str | None] = mapped_column(Text)
    consumption_boundary: Mapped[str | None] = mapped_column(Text)
    claim_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claim_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reporting_year: Mapped[int] = mapped_column(Integer, nullable=False)
    purpose: Mapped[str | None] = mapped_column(Text)
    via_listing_id: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_retirements_beneficiary", "beneficiary_name", "reporting_year"),
        Index("ix_retirements_token", "token_id"),
        Index("ix_retirements_height", "block_height"),
    )


class ExpiryRule(Base):
    """How long certificates of a market boundary stay usable: months after the end of the
    production period (EECS guarantees of origin: 12, RED II art. 19(3)). Reference data kept by
    operators (`recchain expiry`), not chain state: forks never touch it. A certificate's own
    `expires_at`, when set, takes precedence over its boundary's rule."""

    __tablename__ = "expiry_rules"

    market_boundary: Mapped[str] = mapped_column(Text, primary_key=True)
    months: Mapped[int] = mapped_column(Integer, nullable=False)
    reference: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (CheckConstraint("months > 0", name="months"),)
