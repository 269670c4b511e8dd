"""Output types. Plain fields are table columns (and thereby filterable); resolver fields are
relations, loaded in batches per operation at the same block as their parent."""

from __future__ import annotations

import base64
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from graphql_api.context import Context
from graphql_api.extras import ResolvedMetadata, metadata_for
from graphql_api.loaders import Relation, one_by, page_by
from graphql_api.meta import Block
from graphql_api.query import DEFAULT_FIRST, Connection, Entity, build_inputs, register
from graphql_api.scalars import BigDecimal, BigInt

WH_PER_MWH = Decimal(1_000_000)
At = strawberry.Private[int | None]
f = strawberry.field


def mwh(wh: int) -> Decimal:
    return Decimal(wh) / WH_PER_MWH


def price_per_mwh(price: Decimal | int | None, wh: int) -> Decimal | None:
    if price is None or not wh:
        return None
    return (Decimal(price) * WH_PER_MWH / Decimal(wh)).quantize(Decimal("0.000001"))


def global_id(type_name: str, key: Any) -> strawberry.ID:
    return strawberry.ID(base64.urlsafe_b64encode(f"{type_name}:{key}".encode()).decode())


def parse_global_id(value: str) -> tuple[str, str]:
    try:
        type_name, key = base64.urlsafe_b64decode(value.encode()).decode().split(":", 1)
    except (ValueError, UnicodeDecodeError):
        return "", ""
    return type_name, key


@strawberry.interface(description="An object with a global id, refetchable with `node(id)`.")
class Node:
    @strawberry.field(description="Global id: stable across blocks and forks.")
    def id(self) -> strawberry.ID:
        from graphql_api.query import ENTITIES

        entity = ENTITIES[type(self).__name__]
        return global_id(entity.name, getattr(self, entity.key_attr))


Ctx = Info[Context, None]
# Facts (transfers, bids) in the order the chain made them; the surrogate id breaks no real tie
# but makes the order total, as a keyset cursor needs.
IN_CHAIN_ORDER = (("t.block_height", False), ("t.event_index", False), ("t.id", False))
FACILITY_REPORTS = Relation(
    "Facility.reports",
    "GenerationReport",
    "facility_id",
    (("t.period_start", False), ("t.report_id", False)),
)
FACILITY_CERTIFICATES = Relation(
    "Facility.certificates",
    "Certificate",
    "facility_id",
    (("t.period_start", False), ("t.token_id", False)),
)
LISTING_BIDS = Relation("Listing.bids", "Bid", "listing_id", IN_CHAIN_ORDER)
CERTIFICATE_TRANSFERS = Relation("Certificate.transfers", "Transfer", "token_id", IN_CHAIN_ORDER)
CERTIFICATE_LISTINGS = Relation(
    "Certificate.listings", "Listing", "token_id", (("t.listing_id", False),)
)


async def block_at(info: Ctx, height: int) -> Block | None:
    """The canonical block at `height` (Stacks and Bitcoin heights for provenance), batched."""
    from collections.abc import Sequence

    from graphql_api.meta import BLOCK_COLUMNS

    ctx = info.context

    async def load(heights: Sequence[int]) -> list[Block | None]:
        rows = await ctx.reader.all(
            f"SELECT {BLOCK_COLUMNS} FROM blocks WHERE canonical AND block_height = ANY(:h)",
            {"h": list(heights)},
        )
        found = {r["block_height"]: Block.from_row(r) for r in rows}
        return [found.get(h) for h in heights]

    result: Block | None = await ctx.loader("block-at", load).load(height)
    return result


@strawberry.type(description="A verification body allowed to attest generation reports.")
class Verifier(Node):
    principal: str = f(description="Stacks principal of the verifier.")
    name: str = f(description="Display name.")
    status: str = f(description="active | revoked.")
    added_height: int = f(description="Block height at which it was added.")
    _at: At


@strawberry.type(description="A generating facility (device) registered on-chain.")
class Facility(Node):
    facility_id: int = f(description="On-chain facility id.")
    owner: str = f(description="Owner principal.")
    name: str = f(description="Facility name.")
    country: str = f(description="ISO 3166-1 alpha-2 country.")
    subdivision: str | None = f(description="ISO 3166-2 subdivision.")
    market_boundary: str | None = f(description="Market boundary, e.g. US-ERCOT, EU-AIB.")
    grid_zone: str | None = f(description="Grid operator or bidding zone.")
    latitude: Decimal | None = f(description="Latitude (degrees).")
    longitude: Decimal | None = f(description="Longitude (degrees).")
    energy_source: str = f(description="I-REC energy source code (ES100 solar, ES200 wind...).")
    technology: str | None = f(description="I-REC technology code (TC110 ground PV...).")
    capacity_w: BigInt | None = f(description="Capacity in W.")
    commissioning_date: date | None = f(description="Commissioning date.")
    repowering_date: date | None = f(description="Repowering date.")
    public_support: bool = f(description="Received public support.")
    registry_ids: JSON = f(description="External registry ids (I-REC code, meter GSRN...).")
    metadata_uri: str | None = f(description="Metadata URI (ipfs://CID).")
    status: str = f(description="pending | active | suspended | terminated.")
    verifier: str | None = f(
        description="Verifier of the latest status decision (approval, suspension,"
        " reactivation, termination)."
    )
    registered_height: int = f(description="Height of the block that registered it.")
    registered_txid: str | None = f(description="Registration transaction id.")
    _at: At

    @strawberry.field(description="Verified metadata of `metadataUri`, once resolved.")
    async def metadata(self, info: Ctx) -> ResolvedMetadata | None:
        return await metadata_for(info.context, self.metadata_uri)

    @strawberry.field(description="The verifier record (at the same block).")
    async def verifier_info(self, info: Ctx) -> Verifier | None:
        return await one_by(info.context, "Verifier", "principal", self.verifier, self._at)

    @strawberry.field(description="Generation reports of this facility, by period (a page).")
    async def reports(
        self, info: Ctx, first: int = DEFAULT_FIRST, after: str | None = None
    ) -> Connection[GenerationReport]:
        return await page_by(
            info.context, FACILITY_REPORTS, self.facility_id, self._at, first, after
        )

    @strawberry.field(description="Certificates issued by this facility, by period (a page).")
    async def certificates(
        self, info: Ctx, first: int = DEFAULT_FIRST, after: str | None = None
    ) -> Connection[Certificate]:
        return await page_by(
            info.context, FACILITY_CERTIFICATES, self.facility_id, self._at, first, after
        )


@strawberry.type(description="A generation report (issuance request) for a facility and period.")
class GenerationReport(Node):
    report_id: int = f(description="On-chain report id.")
    facility_id: int = f(description="Facility id.")
    period_start: datetime = f(description="Start of the generation period (inclusive).")
    period_end: datetime = f(description="End of the generation period (exclusive).")
    wh: BigInt = f(description="Energy generated, Wh.")
    evidence_hash: str | None = f(description="sha256 of the meter data (0x-hex).")
    submitter: str = f(description="Submitting principal.")
    verifier: str | None = f(
        description="Verifier that attested (or rejected) it; a revocation leaves it unchanged."
    )
    status: str = f(description="submitted | attested | minted | rejected | withdrawn | revoked.")
    submitted_height: int = f(description="Block height of submission.")
    submitted_txid: str | None = f(description="Submission transaction id.")
    attested_height: int | None = f(description="Block height of attestation.")
    attested_txid: str | None = f(description="Attestation transaction id.")
    revoked_by: str | None = f(description="Verifier that revoked it (null unless revoked).")
    revoked_height: int | None = f(description="Block height of the revocation.")
    reason: str | None = f(description="Reason given with a rejection or revocation.")
    _at: At

    @strawberry.field(description="The facility (at the same block).")
    async def facility(self, info: Ctx) -> Facility | None:
        return await one_by(info.context, "Facility", "facility_id", self.facility_id, self._at)


@strawberry.type(description="A custody change of a certificate.")
class Transfer(Node):
    id_: strawberry.Private[int]
    token_id: int = f(description="Certificate token id.")
    sender: str | None = f(description="Previous holder (null on mint and on a split child).")
    recipient: str | None = f(description="New holder (null on a split parent).")
    kind: str = f(
        description="mint | transfer (owner to owner) | escrow (seller to marketplace) | release"
        " (escrow back to the seller) | sale (escrow to a buyer, with price and currency) | split"
        " | retire | revoke."
    )
    price: BigInt | None = f(description="Sale price in the currency's smallest unit (sale).")
    currency: str | None = f(description="STX or a SIP-010 contract id (sale).")
    txid: str = f(description="Transaction id.")
    block_height: int = f(description="Stacks block height.")
    event_index: int = f(description="Event index within the block.")
    block_time: datetime | None = f(description="Block time.")
    _at: At

    @strawberry.field(description="The block (with its Bitcoin anchor) this happened in.")
    async def block(self, info: Ctx) -> Block | None:
        return await block_at(info, self.block_height)


@strawberry.type(description="A bid on an auction listing.")
class Bid(Node):
    id_: strawberry.Private[int]
    listing_id: int = f(description="Auction listing id.")
    bidder: str = f(description="Bidder principal.")
    amount: BigInt = f(description="Bid amount in the currency's smallest unit.")
    txid: str = f(description="Transaction id.")
    block_height: int = f(description="Stacks block height.")
    event_index: int = f(description="Event index.")
    block_time: datetime | None = f(description="Block time.")
    _at: At

    @strawberry.field(description="The block (with its Bitcoin anchor) this happened in.")
    async def block(self, info: Ctx) -> Block | None:
        return await block_at(info, self.block_height)


@strawberry.type(description="A fixed-price listing or English auction of a certificate.")
class Listing(Node):
    listing_id: int = f(description="On-chain listing id.")
    kind: str = f(description="fixed | auction.")
    token_id: int = f(description="Listed certificate.")
    seller: str = f(description="Seller principal.")
    currency: str = f(description="STX or a SIP-010 contract id (e.g. sBTC).")
    price: BigInt | None = f(description="Fixed price, or auction start price.")
    reserve: BigInt | None = f(description="Auction reserve.")
    min_increment: BigInt | None = f(description="Auction minimum bid increment.")
    highest_bid: BigInt | None = f(description="Current highest bid.")
    highest_bidder: str | None = f(description="Current highest bidder.")
    bid_count: int = f(description="Number of bids.")
    start_height: int = f(description="Block height the listing opened.")
    end_height: int | None = f(description="Expiry or auction end height.")
    status: str = f(
        description="active | sold | cancelled | expired (an auction settled unsold is expired)."
    )
    buyer: str | None = f(description="Buyer once sold.")
    created_txid: str | None = f(description="Listing transaction id.")
    _at: At

    @strawberry.field(description="The listed certificate (at the same block).")
    async def certificate(self, info: Ctx) -> Certificate | None:
        return await one_by(info.context, "Certificate", "token_id", self.token_id, self._at)

    @strawberry.field(description="Bids, oldest first (a page).")
    async def bids(
        self, info: Ctx, first: int = DEFAULT_FIRST, after: str | None = None
    ) -> Connection[Bid]:
        return await page_by(info.context, LISTING_BIDS, self.listing_id, self._at, first, after)


@strawberry.type(description="A completed sale (fill) of a listing.")
class Sale(Node):
    id_: strawberry.Private[int]
    listing_id: int = f(description="Listing id.")
    token_id: int = f(description="Certificate sold.")
    kind: str = f(description="fixed | auction.")
    seller: str = f(description="Seller principal.")
    buyer: str = f(description="Buyer principal.")
    currency: str = f(description="STX or a SIP-010 contract id.")
    price: BigInt = f(description="Price in the currency's smallest unit.")
    fee: BigInt = f(description="Platform fee in the currency's smallest unit.")
    wh: BigInt = f(description="Energy sold, Wh.")
    txid: str = f(description="Transaction id.")
    block_height: int = f(description="Stacks block height.")
    event_index: int = f(description="Event index.")
    block_time: datetime | None = f(description="Block time.")
    _at: At

    @strawberry.field(description="The block (with its Bitcoin anchor) this happened in.")
    async def block(self, info: Ctx) -> Block | None:
        return await block_at(info, self.block_height)

    @strawberry.field(description="Price per MWh in the currency's smallest unit.")
    def price_per_mwh(self) -> BigDecimal | None:
        return price_per_mwh(self.price, self.wh)

    @strawberry.field(description="The certificate as of the sale's block.")
    async def certificate(self, info: Ctx) -> Certificate | None:
        return await one_by(
            info.context, "Certificate", "token_id", self.token_id, self.block_height
        )


@strawberry.type(description="A final retirement (compliance claim) of a certificate.")
class Retirement(Node):
    id_: strawberry.Private[int]
    token_id: int = f(description="Retired certificate.")
    facility_id: int = f(description="Facility of origin.")
    wh: BigInt = f(description="Energy retired, Wh.")
    serial_start: BigInt = f(description="First serial (Wh) of the retired interval.")
    serial_end: BigInt = f(description="End serial (exclusive).")
    vintage: int = f(description="Vintage year.")
    retiring_account: str = f(description="Account that retired.")
    beneficiary_name: str = f(description="Beneficiary of the claim.")
    beneficiary_principal: str | None = f(description="Beneficiary principal, if any.")
    consumption_country: str | None = f(description="Country of consumption.")
    consumption_subdivision: str | None = f(description="Subdivision of consumption.")
    consumption_boundary: str | None = f(description="Market boundary of consumption.")
    claim_start: datetime | None = f(description="Claim period start (inclusive).")
    claim_end: datetime | None = f(description="Claim period end (exclusive).")
    reporting_year: int = f(description="Reporting year of the claim.")
    purpose: str | None = f(description="Scope 2, RE100, CDP, RPS compliance...")
    via_listing_id: int | None = f(description="Listing when bought-and-retired.")
    txid: str = f(description="Transaction id.")
    block_height: int = f(description="Stacks block height.")
    event_index: int = f(description="Event index.")
    block_time: datetime | None = f(description="Block time.")
    _at: At

    @strawberry.field(description="The block (with its Bitcoin anchor) this happened in.")
    async def block(self, info: Ctx) -> Block | None:
        return await block_at(info, self.block_height)

    @strawberry.field(description="Retired energy in MWh.")
    def mwh(self) -> BigDecimal:
        return mwh(self.wh)

    @strawberry.field(description="The certificate as of the retirement's block.")
    async def certificate(self, info: Ctx) -> Certificate | None:
        return await one_by(
            info.context, "Certificate", "token_id", self.token_id, self.block_height
        )

    @strawberry.field(description="The facility as of the retirement's block.")
    async def facility(self, info: Ctx) -> Facility | None:
        return await one_by(
            info.context, "Facility", "facility_id", self.facility_id, self.block_height
        )


@strawberry.type(description="A Renewable Energy Certificate (the REC NFT).")
class Certificate(Node):
    token_id: int = f(description="NFT token id.")
    facility_id: int = f(description="Facility of origin.")
    report_id: int | None = f(description="Generation report it was minted from.")
    owner: str = f(
        description="Holder of the NFT (the marketplace contract while listed; the certificate"
        " is still its seller's, see `holdings`)."
    )
    status: str = f(description="active | listed | retired | revoked | split.")
    period_start: datetime = f(description="Generation period start (inclusive).")
    period_end: datetime = f(description="Generation period end (exclusive).")
    vintage: int = f(description="Vintage year.")
    wh: BigInt = f(description="Energy, Wh.")
    serial_start: BigInt = f(description="First serial (Wh) of the interval.")
    serial_end: BigInt = f(description="End serial (exclusive).")
    metadata_uri: str | None = f(description="Metadata URI (ipfs://CID).")
    parent_token_id: int | None = f(description="Parent token when it came from a split.")
    issued_height: int = f(
        description="Height of the block of the original mint (a split child keeps its"
        " ancestor's; its own creation is `splitHeight`)."
    )
    issued_txid: str | None = f(description="Transaction of the original mint.")
    issued_at: datetime | None = f(description="Time of the original mint.")
    split_height: int | None = f(
        description="Height of the split that created it (null for a minted certificate)."
    )
    split_txid: str | None = f(description="Transaction of the split that created it.")
    split_at: datetime | None = f(description="Time of the split that created it.")
    expires_at: datetime | None = f(description="Expiry, if any.")
    revoked_height: int | None = f(description="Block height of revocation.")
    revoked_by: str | None = f(description="Verifier that revoked it.")
    revocation_reason: str | None = f(description="Reason of revocation.")
    _at: At

    @strawberry.field(description="Energy in MWh.")
    def mwh(self) -> BigDecimal:
        return mwh(self.wh)

    @strawberry.field(description="Verified metadata of `metadataUri`, once resolved.")
    async def metadata(self, info: Ctx) -> ResolvedMetadata | None:
        return await metadata_for(info.context, self.metadata_uri)

    @strawberry.field(description="The facility (at the same block).")
    async def facility(self, info: Ctx) -> Facility | None:
        return await one_by(info.context, "Facility", "facility_id", self.facility_id, self._at)

    @strawberry.field(description="The generation report (at the same block).")
    async def report(self, info: Ctx) -> GenerationReport | None:
        return await one_by(info.context, "GenerationReport", "report_id", self.report_id, self._at)

    @strawberry.field(description="The parent certificate of a split (at the same block).")
    async def parent(self, info: Ctx) -> Certificate | None:
        return await one_by(info.context, "Certificate", "token_id", self.parent_token_id, self._at)

    @strawberry.field(description="Custody changes of this token, oldest first (a page).")
    async def transfers(
        self, info: Ctx, first: int = DEFAULT_FIRST, after: str | None = None
    ) -> Connection[Transfer]:
        return await page_by(
            info.context, CERTIFICATE_TRANSFERS, self.token_id, self._at, first, after
        )

    @strawberry.field(description="Listings of this token, oldest first (a page).")
    async def listings(
        self, info: Ctx, first: int = DEFAULT_FIRST, after: str | None = None
    ) -> Connection[Listing]:
        return await page_by(
            info.context, CERTIFICATE_LISTINGS, self.token_id, self._at, first, after
        )

    @strawberry.field(description="The retirement of this token, if retired.")
    async def retirement(self, info: Ctx) -> Retirement | None:
        return await one_by(info.context, "Retirement", "token_id", self.token_id, self._at)


ORDER_FACTS = ("block_height", "event_index", "txid")
register(Entity(Verifier, "verifiers", "principal", True, ("name", "added_height", "status")))
register(
    Entity(
        Facility,
        "facilities",
        "facility_id",
        True,
        (
            "facility_id",
            "name",
            "country",
            "energy_source",
            "capacity_w",
            "registered_height",
            "commissioning_date",
        ),
        nested={"verifier_info": ("Verifier", "verifier", "principal")},
    )
)
register(
    Entity(
        GenerationReport,
        "generation_reports",
        "report_id",
        True,
        ("report_id", "period_start", "wh", "submitted_height", "status"),
        nested={"facility": ("Facility", "facility_id", "facility_id")},
    )
)
register(
    Entity(
        Certificate,
        "certificates",
        "token_id",
        True,
        (
            "token_id",
            "vintage",
            "wh",
            "period_start",
            "issued_height",
            "split_height",
            "serial_start",
            "owner",
            "status",
            "facility_id",
        ),
        nested={"facility": ("Facility", "facility_id", "facility_id")},
    )
)
register(
    Entity(
        Listing,
        "listings",
        "listing_id",
        True,
        ("listing_id", "price", "start_height", "end_height", "bid_count", "currency", "status"),
        nested={"certificate": ("Certificate", "token_id", "token_id")},
    )
)
register(
    Entity(
        Transfer,
        "transfers",
        "id",
        False,
        (*ORDER_FACTS, "token_id"),
        nested={"certificate": ("Certificate", "token_id", "token_id")},
    )
)
register(
    Entity(
        Bid,
        "bids",
        "id",
        False,
        (*ORDER_FACTS, "amount"),
        nested={"listing": ("Listing", "listing_id", "listing_id")},
    )
)
register(
    Entity(
        Sale,
        "sales",
        "id",
        False,
        (*ORDER_FACTS, "price", "wh", "block_time"),
        nested={
            "certificate": ("Certificate", "token_id", "token_id"),
            "listing": ("Listing", "listing_id", "listing_id"),
        },
    )
)
register(
    Entity(
        Retirement,
        "retirements",
        "id",
        False,
        (*ORDER_FACTS, "wh", "vintage", "reporting_year", "beneficiary_name"),
        nested={
            "certificate": ("Certificate", "token_id", "token_id"),
            "facility": ("Facility", "facility_id", "facility_id"),
        },
    )
)

# Filters and order inputs are generated once every entity is registered.
build_inputs()
