"""Builds a small, consistent chain state through the models: blocks, versioned entities and
facts, following the same rules as the indexer (a change closes the current version at the
block's height and opens a new one; several changes in one block update that block's version).
The builder also keeps its own plain record of what happened, so tests can derive expected
answers independently of the API's SQL."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from db.models.chain import Block as BlockRow
from db.models.domain import (
    Bid,
    Certificate,
    Facility,
    GenerationReport,
    Listing,
    Retirement,
    Sale,
    Transfer,
    Verifier,
)

GENESIS = datetime(2025, 1, 1, tzinfo=UTC)
VERSIONED = {
    "verifiers": (Verifier, "principal"),
    "facilities": (Facility, "facility_id"),
    "generation_reports": (GenerationReport, "report_id"),
    "certificates": (Certificate, "token_id"),
    "listings": (Listing, "listing_id"),
}
FACTS = {"transfers": Transfer, "bids": Bid, "sales": Sale, "retirements": Retirement}


def _hash(*parts: object) -> str:
    return "0x" + hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


@dataclass
class BlockRec:
    height: int
    hash: str
    parent: str
    time: datetime
    canonical: bool


@dataclass
class Chain:
    blocks: list[BlockRec] = field(default_factory=list)
    versions: dict[tuple[str, Any], list[dict[str, Any]]] = field(default_factory=dict)
    facts: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {name: [] for name in FACTS}
    )
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _events: itertools.count[int] = field(default_factory=itertools.count)
    _serial: int = 0

    # -- blocks ---------------------------------------------------------------------------
    @property
    def tip(self) -> BlockRec:
        return max((b for b in self.blocks if b.canonical), key=lambda b: b.height)

    @property
    def height(self) -> int:
        return self.tip.height

    def block(
        self, *, canonical: bool = True, height: int | None = None, seconds: int = 600
    ) -> BlockRec:
        h = height if height is not None else (self.tip.height + 1 if self.blocks else 1)
        parent = next(
            (b.hash for b in self.blocks if b.canonical and b.height == h - 1), _hash("genesis")
        )
        rec = BlockRec(
            height=h,
            hash=_hash("block", h, canonical, len(self.blocks)),
            parent=parent,
            time=GENESIS + timedelta(seconds=seconds * h),
            canonical=canonical,
        )
        self.blocks.append(rec)
        return rec

    def canonical_block(self, height: int) -> BlockRec:
        return next(b for b in self.blocks if b.canonical and b.height == height)

    # -- versioned entities ---------------------------------------------------------------
    def current(self, table: str, key: Any) -> dict[str, Any]:
        return self.versions[(table, key)][-1]

    def put(self, table: str, key: Any, **values: Any) -> dict[str, Any]:
        """Create the entity or change it at the tip height."""
        h = self.height
        history = self.versions.setdefault((table, key), [])
        if history and history[-1]["block_from"] == h:
            history[-1].update(values)
            return history[-1]
        new = dict(history[-1]) if history else {}
        if history:
            history[-1]["block_to"] = h
        new.update(values, block_from=h, block_to=None)
        history.append(new)
        return new

    def at(self, table: str, key: Any, height: int) -> dict[str, Any] | None:
        for v in self.versions.get((table, key), []):
            if v["block_from"] <= height and (v["block_to"] is None or v["block_to"] > height):
                return v
        return None

    def fact(self, table: str, **values: Any) -> dict[str, Any]:
        tip = self.tip
        row = {
            "block_height": tip.height,
            "index_block_hash": tip.hash,
            "txid": values.pop("txid", None) or _hash("tx", table, next(self._events)),
            "event_index": next(self._events),
            "block_time": tip.time,
            **values,
        }
        self.facts[table].append(row)
        return row

    # -- domain operations ----------------------------------------------------------------
    def verifier(self, principal: str, name: str) -> None:
        self.put(
            "verifiers",
            principal,
            principal=principal,
            name=name,
            status="active",
            added_height=self.height,
        )

    def facility(self, **kw: Any) -> int:
        fid = next(self._ids)
        values: dict[str, Any] = {
            "facility_id": fid,
            "owner": "ST1OWNER",
            "name": f"Facility {fid}",
            "country": "DE",
            "subdivision": "DE-BY",
            "market_boundary": "EU-AIB",
            "grid_zone": "10Y1001A1001A82H",
            "energy_source": "ES100",
            "technology": "TC110",
            "capacity_w": 5_000_000,
            "commissioning_date": datetime(2020, 1, 1).date(),
            "public_support": False,
            "registry_ids": {},
            "status": "active",
            "verifier": None,
            "registered_height": self.height,
            "registered_txid": _hash("reg", fid),
        }
        values.update(kw)
        self.put("facilities", fid, **values)
        return fid

    def mint(
        self,
        facility_id: int,
        owner: str,
        wh: int,
        *,
        vintage: int = 2025,
        month: int = 1,
        expires_at: datetime | None = None,
    ) -> int:
        token = next(self._ids)
        rid = next(self._ids)
        start = datetime(vintage, month, 1, tzinfo=UTC)
        end = (
            datetime(vintage, month + 1, 1, tzinfo=UTC)
            if month < 12
            else datetime(vintage + 1, 1, 1, tzinfo=UTC)
        )
        self.put(
            "generation_reports",
            rid,
            report_id=rid,
            facility_id=facility_id,
            period_start=start,
            period_end=end,
            wh=wh,
            evidence_hash=_hash("ev", rid),
            submitter=owner,
            verifier="ST1VERIFIER",
            status="minted",
            submitted_height=self.height,
            attested_height=self.height,
        )
        serial = self._serial
        self._serial += wh
        tx = _hash("mint", token)
        self.put(
            "certificates",
            token,
            token_id=token,
            facility_id=facility_id,
            report_id=rid,
            owner=owner,
            status="active",
            period_start=start,
            period_end=end,
            vintage=vintage,
            wh=wh,
            serial_start=serial,
            serial_end=serial + wh,
            metadata_uri=f"ipfs://cid{token}",
            parent_token_id=None,
            issued_height=self.height,
            issued_txid=tx,
            issued_at=self.tip.time,
            expires_at=expires_at,
        )
        self.fact("transfers", token_id=token, sender=None, recipient=owner, kind="mint", txid=tx)
        return token

    def transfer(self, token: int, to: str) -> None:
        cert = self.current("certificates", token)
        self.fact("transfers", token_id=token, sender=cert["owner"], recipient=to, kind="transfer")
        self.put("certificates", token, owner=to)

    def list_fixed(self, token: int, price: int, currency: str = "STX") -> int:
        lid = next(self._ids)
        cert = self.current("certificates", token)
        tx = _hash("list", lid)
        self.put(
            "listings",
            lid,
            listing_id=lid,
            kind="fixed",
            token_id=token,
            seller=cert["owner"],
            currency=currency,
            price=Decimal(price),
            reserve=None,
            min_increment=None,
            highest_bid=None,
            highest_bidder=None,
            bid_count=0,
            start_height=self.height,
            end_height=self.height + 1000,
            status="active",
            buyer=None,
            created_txid=tx,
        )
        self.fact(
            "transfers",
            token_id=token,
            sender=cert["owner"],
            recipient="MARKET",
            kind="escrow",
            txid=tx,
        )
        self.put("certificates", token, status="listed")
        return lid

    def auction(self, token: int, start_price: int, currency: str = "STX") -> int:
        lid = self.list_fixed(token, start_price, currency)
        self.put(
            "listings", lid, kind="auction", reserve=Decimal(start_price), min_increment=Decimal(1)
        )
        return lid

    def bid(self, listing: int, bidder: str, amount: int) -> None:
        cur = self.current("listings", listing)
        self.fact("bids", listing_id=listing, bidder=bidder, amount=Decimal(amount))
        self.put(
            "listings",
            listing,
            highest_bid=Decimal(amount),
            highest_bidder=bidder,
            bid_count=cur["bid_count"] + 1,
        )

    def reprice(self, listing: int, price: int) -> None:
        self.put("listings", listing, price=Decimal(price))

    def cancel(self, listing: int) -> None:
        lst = self.current("listings", listing)
        self.put("listings", listing, status="cancelled")
        self.fact(
            "transfers",
            token_id=lst["token_id"],
            sender="MARKET",
            recipient=lst["seller"],
            kind="release",
        )
        self.put("certificates", lst["token_id"], status="active")

    def buy(self, listing: int, buyer: str, fee_bps: int = 100) -> None:
        lst = self.current("listings", listing)
        cert = self.current("certificates", lst["token_id"])
        price = lst["highest_bid"] if lst["kind"] == "auction" else lst["price"]
        tx = _hash("buy", listing)
        self.fact(
            "sales",
            listing_id=listing,
            token_id=lst["token_id"],
            kind=lst["kind"],
            seller=lst["seller"],
            buyer=buyer,
            currency=lst["currency"],
            price=price,
            fee=price * fee_bps // 10_000,
            wh=cert["wh"],
            txid=tx,
        )
        self.fact(
            "transfers",
            token_id=lst["token_id"],
            sender="MARKET",
            recipient=buyer,
            kind="sale",
            price=price,
            currency=lst["currency"],
            txid=tx,
        )
        self.put("listings", listing, status="sold", buyer=buyer)
        self.put("certificates", lst["token_id"], owner=buyer, status="active")

    def split(self, token: int, parts: list[int]) -> list[int]:
        cert = self.current("certificates", token)
        assert sum(parts) == cert["wh"]
        children = []
        serial = cert["serial_start"]
        tx = _hash("split", token)
        for wh in parts:
            child = next(self._ids)
            values = {k: v for k, v in cert.items() if k not in ("block_from", "block_to")}
            values.update(
                token_id=child,
                wh=wh,
                serial_start=serial,
                serial_end=serial + wh,
                parent_token_id=token,
                split_height=self.height,
                split_txid=tx,
                split_at=self.tip.time,
            )
            serial += wh
            self.put("certificates", child, **values)
            self.fact(
                "transfers",
                token_id=child,
                sender=None,
                recipient=cert["owner"],
                kind="split",
                txid=tx,
            )
            children.append(child)
        self.fact(
            "transfers", token_id=token, sender=cert["owner"], recipient=None, kind="split", txid=tx
        )
        self.put("certificates", token, status="split")
        return children

    def retire(
        self,
        token: int,
        beneficiary: str,
        *,
        year: int = 2025,
        boundary: str | None = "EU-AIB",
        country: str = "DE",
        purpose: str = "RE100",
    ) -> dict[str, Any]:
        cert = self.current("certificates", token)
        tx = _hash("retire", token)
        row = self.fact(
            "retirements",
            token_id=token,
            facility_id=cert["facility_id"],
            wh=cert["wh"],
            serial_start=cert["serial_start"],
            serial_end=cert["serial_end"],
            vintage=cert["vintage"],
            retiring_account=cert["owner"],
            beneficiary_name=beneficiary,
            beneficiary_principal=None,
            consumption_country=country,
            consumption_subdivision=None,
            consumption_boundary=boundary,
            claim_start=datetime(year, 1, 1, tzinfo=UTC),
            claim_end=datetime(year + 1, 1, 1, tzinfo=UTC),
            reporting_year=year,
            purpose=purpose,
            via_listing_id=None,
            txid=tx,
        )
        self.fact(
            "transfers",
            token_id=token,
            sender=cert["owner"],
            recipient=None,
            kind="retire",
            txid=tx,
        )
        self.put("certificates", token, status="retired")
        return row

    # -- persistence ----------------------------------------------------------------------
    async def write(self, engine: AsyncEngine) -> None:
        """Replace the database's chain and domain rows by this chain's."""
        async with engine.begin() as conn:
            for model in [BlockRow, *FACTS.values(), *(m for m, _ in VERSIONED.values())]:
                await conn.execute(delete(model))
            await conn.execute(
                insert(BlockRow),
                [
                    {
                        "index_block_hash": b.hash,
                        "block_hash": "b" + b.hash,
                        "block_height": b.height,
                        "parent_index_block_hash": b.parent,
                        "burn_block_height": 100 + b.height,
                        "burn_block_hash": "burn" + b.hash,
                        "burn_block_time": int(b.time.timestamp()),
                        "block_time": int(b.time.timestamp()),
                        "canonical": b.canonical,
                    }
                    for b in self.blocks
                ],
            )
            for (table, _key), history in sorted(self.versions.items(), key=lambda kv: kv[0][0]):
                model = VERSIONED[table][0]
                await conn.execute(insert(model), [dict(v) for v in history])
            for table, rows in self.facts.items():
                if rows:
                    # executemany takes its columns from the first row: give every row all keys.
                    keys = set().union(*rows)
                    await conn.execute(
                        insert(FACTS[table]), [{k: r.get(k) for k in keys} for r in rows]
                    )
