"""One handler per event kind of contracts/EVENTS.md: print tuples -> versioned entities + facts.

The print tuples carry an entity's full state after the change, so handlers never call the chain;
native nft/ft/stx events are kept in `events` (they duplicate what the tuples say). Custody
changes become `transfers` rows with kinds mint / transfer / escrow / release / sale / split /
retire / revoke (docs/domain.md): a release to the buyer of a `sale` is the `sale` transfer, with
its price and currency.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg

from indexer.block import Block, Event
from indexer.schema import SIP019
from indexer.state import EntityCache


def ts(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def day(seconds: int | None) -> date | None:
    return None if not seconds else datetime.fromtimestamp(seconds, UTC).date()


def hex0x(value: bytes | None) -> str | None:
    return None if value is None else "0x" + value.hex()


@dataclass(slots=True)
class MetadataJob:
    uri: str
    subject_kind: str
    subject_id: int


@dataclass(slots=True)
class Ctx:
    conn: psycopg.AsyncConnection[Any]
    cache: EntityCache
    block: Block
    block_time: datetime | None
    # (txid, token id) -> the transaction's `sale` tuple. The marketplace prints it after the
    # release it pays for, so `apply_events` collects the block's sales before any handler runs.
    sales: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    jobs: list[MetadataJob] = field(default_factory=list)
    refresh: list[tuple[str, list[int] | None]] = field(default_factory=list)

    @property
    def h(self) -> int:
        return self.block.height

    def fact(self, table: str, ev: Event, **row: Any) -> None:
        row.update(
            block_height=self.h,
            index_block_hash=self.block.hash,
            txid=ev.txid,
            event_index=ev.event_index,
            tx_index=ev.tx_index,
            block_time=self.block_time,
        )
        self.cache.fact(table, row)
        self.cache.changes[table].add(row.get("listing_id", row.get("token_id")))


Handler = Callable[[Ctx, Event, dict[str, Any]], Awaitable[None]]
HANDLERS: dict[str, Handler] = {}


def on(*kinds: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for kind in kinds:
            HANDLERS[kind] = fn
        return fn

    return register


# ------------------------------------------------------------------------------ verification
@on("verifier-added", "verifier-revoked")
async def verifier(ctx: Ctx, ev: Event, v: dict[str, Any]) -> None:
    prev = await ctx.cache.get(ctx.conn, "verifiers", v["verifier"])
    added = v["active"] or prev is None
    ctx.cache.put(
        "verifiers",
        {
            "principal": v["verifier"],
            "name": v["name"],
            "status": "active" if v["active"] else "revoked",
            "added_height": ctx.h if added else prev["added_height"],  # type: ignore[index]
        },
        ctx.h,
    )


@on(
    "facility-registered",
    "facility-approved",
    "facility-suspended",
    "facility-reactivated",
    "facility-terminated",
)
async def facility(ctx: Ctx, ev: Event, v: dict[str, Any]) -> None:
    fid = v["facility-id"]
    prev = await ctx.cache.get(ctx.conn, "facilities", fid)
    registry = {k: v[f] for k, f in (("irec", "irec-code"), ("gsrn", "meter-gsrn")) if v[f]}
    row = {
        "facility_id": fid,
        "owner": v["owner"],
        "name": v["name"],
        "country": v["country"],
        "subdivision": v["subdivision"] or None,
        "market_boundary": v["market-boundary"] or None,
        "grid_zone": v["grid-zone"] or None,
        "latitude": Decimal(v["latitude"]).scaleb(-6),
        "longitude": Decimal(v["longitude"]).scaleb(-6),
        "energy_source": v["energy-source"],
        "technology": v["technology"] or None,
        "capacity_w": v["capacity-w"],
        "commissioning_date": day(v["commissioning-date"]),
        "repowering_date": day(v["repowering-date"]),
        "public_support": v["public-support"],
        "registry_ids": registry,
        "metadata_uri": v["metadata-uri"],
        "status": v["status"],
        "verifier": v["verifier"],
        "registered_height": v["registered-at"],
        "registered_txid": ev.txid if prev is None else prev["registered_txid"],
    }
    ctx.cache.put("facilities", row, ctx.h)
    if prev is None or prev["metadata_uri"] != row["metadata_uri"]:
        ctx.jobs.append(MetadataJob(v["metadata-uri"], "facility", fid))


@on(
    "report-submitted",
    "report-attested",
    "report-rejected",
    "report-withdrawn",
    "report-revoked",
    "report-minted",
)
async def report(ctx: Ctx, ev: Event, v: dict[str, Any]) -> None:
    rid = v["report-id"]
    prev = await ctx.cache.get(ctx.conn, "generation_reports", rid)
    attested = ev.kind == "report-attested"
    revoked = ev.kind == "report-revoked"
    ctx.cache.put(
        "generation_reports",
        {
            "report_id": rid,
            "facility_id": v["facility-id"],
            "period_start": ts(v["period-start"]),
            "period_end": ts(v["period-end"]),
            "wh": v["wh"],
            "evidence_hash": hex0x(v["evidence-hash"]),
            "submitter": v["submitter"],
            "verifier": v["verifier"],
            "status": v["status"],
            "submitted_height": v["submitted-at"],
            "submitted_txid": ev.txid if prev is None else prev["submitted_txid"],
            "attested_height": ctx.h if attested else prev and prev["attested_height"],
            "attested_txid": ev.txid if attested else prev and prev["attested_txid"],
            "revoked_by": v["revoked-by"],
            "revoked_height": ctx.h if revoked else prev and prev["revoked_height"],
            "reason": v["reason"] or None,
        },
        ctx.h,
    )


# ------------------------------------------------------------------------------ rec-nft
def _cert_row(v: dict[str, Any], ev: Event, ctx: Ctx) -> dict[str, Any]:
    start = ts(v["period-start"])
    return {
        "token_id": v["token-id"],
        "facility_id": v["facility-id"],
        "report_id": v["report-id"],
        "owner": v["owner"],
        "status": v["status"],
        "period_start": start,
        "period_end": ts(v["period-end"]),
        "vintage": v["vintage"],
        "wh": v["wh"],
        "serial_start": v["serial-start"],
        "serial_end": v["serial-end"],
        "metadata_uri": v["token-uri"],
        "parent_token_id": v["parent-id"],
        "issued_height": v["issued-at"],
        "issued_txid": ev.txid,
        "issued_at": ctx.block_time,
        "expires_at": None,
        "revoked_height": None,
        "revocation_reason": None,
        "split_height": None,
        "split_txid": None,
        "split_at": None,
        "revoked_by": None,
    }


@on("certificate-minted")
async def minted(ctx: Ctx, ev: Event, v: dict[str, Any]) -> None:
    await ctx.cache.get(ctx.conn, "certificates", v["token-id"])
    ctx.cache.put("certificates", _cert_row(v, ev, ctx), ctx.h)
    ctx.fact(
        "transfers", ev, token_id=v["token-id"], sender=None, recipient=v["owner"], kind="mint"
    )
    ctx.jobs.append(MetadataJob(v["token-uri"], "certificate", v["token-id"]))


async def _update_cert(ctx: Ctx, token_id: int, **changes: Any) -> dict[str, Any] | None:
    cert = await ctx.cache.get(ctx.conn, "certificates", token_id)
    if cert is None:
        return None  # a token minted before the indexed range; nothing to version
    cert.update(changes)
    ctx.cache.put("certificates", cert, ctx.h)
    return cert


@on("certificate-transferred")
async def transferred(ctx: Ctx, ev: Event, v: dict[str, Any]) -> None:
    await _update_cert(ctx, v["token-id"], owner=v["recipient"], status=v["status"])
    sale = ctx.sales.get((ev.txid, v["token-id"]))
    is_sale = sale is not None and v["kind"] == "release" and sale["buyer"] == v["recipient"]
    ctx.fact(
        "transfers",
        ev,
        token_id=v["token-id"],
        sender=v["sender"],
        recipient=v["recipient"],
        kind="sale" if is_sale else v["kind"],
        price=Decimal(sale["price"]) if is_sale else None,  # type: ignore[index]
        currency=_currency(sale["currency"]) if is_sale else None,  # type: ignore[index]
    )


@on("certificate-split")
async def split(ctx: Ctx, ev: Event, v: dict[str, Any]) -> None:
    parent = await _update_cert(ctx, v["parent-id"], status="split")
    ctx.fact(
        "transfers", ev, token_id=v["parent-id"], sender=v["owner"], recipient=None, kind="split"
    )
    for child in v["children"]:
        await ctx.cache.get(ctx.conn, "certificates", child["token-id"])
        row = dict(parent) if parent is not None else None
        if row is None:
            continue
        # The child keeps the original issuance (issued_*) and records its own split.
        row.update(
            token_id=child["token-id"],
            wh=child["wh"],
            serial_start=child["serial-start"],
            serial_end=child["serial-end"],
            parent_token_id=v["parent-id"],
            status="active",
            owner=v["owner"],
            split_height=ctx.h,
            split_txid=ev.txid,
            split_at=ctx.block_time,
        )
        ctx.cache.put("certificates", row, ctx.h)
        ctx.fact(
            "transfers",
            ev,
            token_id=child["token-id"],
            sender=None,
            recipient=v["owner"],
            kind="split",
        )


@on("certificate-retired")
async def retired(ctx: Ctx, ev: Event, v: dict[str, Any]) -> None:
    await _update_cert(ctx, v["token-id"], status="retired", owner=v["owner"])
    sale = ctx.sales.get((ev.txid, v["token-id"]))
    ctx.fact(
        "transfers", ev, token_id=v["token-id"], sender=v["owner"], recipient=v["owner"],
        kind="retire",
    )  # fmt: skip
    ctx.fact(
        "retirements",
        ev,
        token_id=v["token-id"],
        facility_id=v["facility-id"],
        wh=v["wh"],
        serial_start=v["serial-start"],
        serial_end=v["serial-end"],
        vintage=v["vintage"],
        retiring_account=v["owner"],
        beneficiary_name=v["beneficiary-name"],
        beneficiary_principal=v["beneficiary"],
        consumption_country=v["consumption-country"] or None,
        consumption_subdivision=v["consumption-subdivision"] or None,
        consumption_boundary=v["consumption-market-boundary"] or None,
        claim_start=ts(v["claim-period-start"]),
        claim_end=ts(v["claim-period-end"]),
        reporting_year=v["reporting-year"],
        purpose=v["purpose"],
        via_listing_id=sale["listing-id"] if sale is not None else None,
    )


@on("certificate-revoked")
async def revoked(ctx: Ctx, ev: Event, v: dict[str, Any]) -> None:
    await _update_cert(
        ctx,
        v["token-id"],
        status="revoked",
        revoked_height=ctx.h,
        revocation_reason=v["reason"],
        revoked_by=v["verifier"],
    )
    ctx.fact(
        "transfers", ev, token_id=v["token-id"], sender=v["owner"], recipient=v["owner"],
        kind="revoke",
    )  # fmt: skip


# ------------------------------------------------------------------------------ marketplace
def _currency(value: str | None) -> str:
    return "STX" if value is None else value


def _listing_kind(kind: str) -> str:
    return "fixed" if kind == "fixed-price" else kind


@on("listing-created")
async def listing_created(ctx: Ctx, ev: Event, v: dict[str, Any]) -> None:
    await ctx.cache.get(ctx.conn, "listings", v["listing-id"])
    fixed = v["kind"] == "fixed-price"
    ctx.cache.put(
        "listings",
        {
            "listing_id": v["listing-id"],
            "kind": _listing_kind(v["kind"]),
            "token_id": v["token-id"],
            "seller": v["seller"],
            "currency": _currency(v["currency"]),
            "price": Decimal(v["price"]),
            "reserve": None if fixed else Decimal(v["reserve-price"]),
            "min_increment": None if fixed else Decimal(v["min-increment"]),
            "highest_bid": Decimal(v["highest-bid"]) if v["highest-bid"] else None,
            "highest_bidder": v["highest-bidder"],
            "bid_count": v["bid-count"],
            "start_height": v["start-height"],
            "end_height": v["end-height"],
            "status": v["status"],
            "buyer": None,
            "created_txid": ev.txid,
        },
        ctx.h,
    )


async def _update_listing(ctx: Ctx, listing_id: int, **changes: Any) -> dict[str, Any] | None:
    listing = await ctx.cache.get(ctx.conn, "listings", listing_id)
    if listing is None:
        return None
    listing.update(changes)
    ctx.cache.put("listings", listing, ctx.h)
    return listing


@on("listing-price-updated")
async def price_updated(ctx: Ctx, ev: Event, v: dict[str, Any]) -> None:
    await _update_listing(ctx, v["listing-id"], price=Decimal(v["new-price"]))


@on("listing-cancelled", "listing-expired")
async def listing_closed(ctx: Ctx, ev: Event, v: dict[str, Any]) -> None:
    await _update_listing(ctx, v["listing-id"], status=v["status"])


@on("bid-placed")
async def bid_placed(ctx: Ctx, ev: Event, v: dict[str, Any]) -> None:
    amount = Decimal(v["amount"])
    await _update_listing(
        ctx,
        v["listing-id"],
        highest_bid=amount,
        highest_bidder=v["bidder"],
        bid_count=v["bid-count"],
    )
    ctx.fact("bids", ev, listing_id=v["listing-id"], bidder=v["bidder"], amount=amount)


@on("sale")
async def sale(ctx: Ctx, ev: Event, v: dict[str, Any]) -> None:
    await _update_listing(ctx, v["listing-id"], status=v["status"], buyer=v["buyer"])
    cert = await ctx.cache.get(ctx.conn, "certificates", v["token-id"])
    ctx.fact(
        "sales",
        ev,
        listing_id=v["listing-id"],
        token_id=v["token-id"],
        kind=_listing_kind(v["kind"]),
        seller=v["seller"],
        buyer=v["buyer"],
        currency=_currency(v["currency"]),
        price=Decimal(v["price"]),
        fee=Decimal(v["fee"]),
        wh=cert["wh"] if cert is not None else 0,
    )


@on(SIP019)
async def metadata_update(ctx: Ctx, ev: Event, v: dict[str, Any]) -> None:
    payload = v.get("payload")
    if not isinstance(payload, dict):
        return
    ids = payload.get("token-ids")
    token_ids = [i for i in ids if type(i) is int] if isinstance(ids, list) else None
    kind = "facility" if ev.contract_id.endswith(".verification") else "certificate"
    ctx.refresh.append((kind, token_ids))


async def apply_events(ctx: Ctx) -> None:
    for ev in ctx.block.events:
        if ev.kind == "sale" and isinstance(ev.value, dict):
            ctx.sales[(ev.txid, ev.value["token-id"])] = ev.value
    for ev in ctx.block.events:
        if ev.kind is None or not isinstance(ev.value, dict):
            continue
        handler = HANDLERS.get(ev.kind)
        if handler is not None:
            await handler(ctx, ev, ev.value)
