"""An independent model of a recorded chain, rebuilt from the recorder's own call log.

`calls.jsonl` (contracts/devnet/README.md) lists every block the recorder built and every call in
it: sender, contract, function, arguments and the contract's answer. This module replays the
successful calls of one branch with the contracts' rules written out again in plain Python (it
reads no event and imports nothing of the indexer or the API), and answers the domain queries of
docs/domain.md from that state at any height. Tests compare the API with these answers: where
they differ, one of the two implementations is wrong.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

STX = "STX"
RE100_MAX_AGE = 15


def utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def year_of(seconds: int) -> int:
    return utc(seconds).year


def add_months(t: datetime, months: int) -> datetime:
    """PostgreSQL's `timestamptz + make_interval(months => n)` (day clipped to the month)."""
    month = t.month - 1 + months
    year, month = t.year + month // 12, month % 12 + 1
    days = [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28, 31, 30, 31, 30,
            31, 31, 30, 31, 30, 31][month - 1]  # fmt: skip
    return t.replace(year=year, month=month, day=min(t.day, days))


@dataclass
class Facility:
    facility_id: int
    owner: str
    name: str
    country: str
    subdivision: str
    market_boundary: str
    grid_zone: str
    energy_source: str
    technology: str
    capacity_w: int
    commissioning: int
    repowering: int | None
    status: str
    verifier: str | None
    registered_height: int
    registered_txid: str


@dataclass
class Report:
    report_id: int
    facility_id: int
    period_start: int
    period_end: int
    wh: int
    evidence_hash: str
    submitter: str
    status: str
    submitted_height: int
    submitted_txid: str
    verifier: str | None = None
    revoked_by: str | None = None
    revoked_height: int | None = None
    attested_height: int | None = None
    attested_txid: str | None = None
    reason: str = ""


@dataclass
class Token:
    token_id: int
    facility_id: int
    report_id: int
    period_start: int
    period_end: int
    vintage: int
    wh: int
    serial_start: int
    serial_end: int
    uri: str
    custody: str  # the principal holding the NFT (the marketplace while escrowed)
    status: str
    issued_height: int
    issued_txid: str
    issued_time: int
    parent: int | None = None
    split_height: int | None = None
    split_txid: str | None = None
    split_time: int | None = None
    escrow_seller: str | None = None
    revoked_height: int | None = None
    revoked_by: str | None = None
    revocation_reason: str | None = None

    @property
    def owner(self) -> str:
        """One owner at a time: an escrowed certificate is still its seller's."""
        return self.escrow_seller or self.custody


@dataclass
class Listing:
    listing_id: int
    kind: str  # fixed | auction (the API's names)
    token_id: int
    seller: str
    currency: str
    price: int
    reserve: int | None
    min_increment: int | None
    start_height: int
    end_height: int
    status: str = "active"
    highest_bidder: str | None = None
    highest_bid: int | None = None
    bid_count: int = 0
    buyer: str | None = None


@dataclass(frozen=True)
class Transfer:
    token_id: int
    kind: str
    sender: str | None
    recipient: str | None
    price: int | None
    currency: str | None
    txid: str
    height: int
    order: tuple[int, int, int]  # height, tx index, position in the transaction


@dataclass(frozen=True)
class Sale:
    listing_id: int
    token_id: int
    kind: str
    seller: str
    buyer: str
    currency: str
    price: int
    fee: int
    wh: int
    txid: str
    height: int
    time: int
    order: tuple[int, int]


@dataclass(frozen=True)
class Retirement:
    token_id: int
    facility_id: int
    wh: int
    serial_start: int
    serial_end: int
    vintage: int
    period_start: int
    period_end: int
    retiring_account: str
    beneficiary_name: str
    beneficiary_principal: str | None
    consumption_country: str
    consumption_subdivision: str
    consumption_boundary: str
    claim_start: int
    claim_end: int
    reporting_year: int
    purpose: str
    via_listing_id: int | None
    txid: str
    height: int
    order: tuple[int, int]


@dataclass
class Block:
    height: int
    index_block_hash: str
    parent: str
    time: int
    branch: str
    txs: list[dict[str, Any]]


def read_log(path: Path) -> list[Block]:
    out = []
    for line in path.read_text().splitlines():
        e = json.loads(line)
        out.append(
            Block(
                e["height"],
                e["index_block_hash"],
                e["parent_index_block_hash"],
                e["block_time"],
                e["branch"],
                e["txs"],
            )
        )
    return out


def branch_to(blocks: list[Block], tip: str) -> list[Block]:
    """The chain of blocks ending at `tip`, oldest first (what a node calls canonical)."""
    by_hash = {b.index_block_hash: b for b in blocks}
    chain = []
    while tip in by_hash:
        chain.append(by_hash[tip])
        tip = by_hash[tip].parent
    return chain[::-1]


@dataclass
class State:
    """Everything the contracts hold, as the model sees it after some block."""

    marketplace: str
    height: int = 0
    time: int = 0
    times: dict[int, int] = field(default_factory=dict)
    fee_bps: int = 250
    verifiers: dict[str, str] = field(default_factory=dict)
    facilities: dict[int, Facility] = field(default_factory=dict)
    reports: dict[int, Report] = field(default_factory=dict)
    tokens: dict[int, Token] = field(default_factory=dict)
    listings: dict[int, Listing] = field(default_factory=dict)
    serial: int = 0
    transfers: list[Transfer] = field(default_factory=list)
    sales: list[Sale] = field(default_factory=list)
    retirements: list[Retirement] = field(default_factory=list)


class Model:
    """Replays one branch; `at(h)` is the state after block h (kept for the heights asked)."""

    def __init__(self, blocks: list[Block], marketplace: str, keep: Iterable[int] = ()) -> None:
        self.state = State(marketplace=marketplace)
        self.snapshots: dict[int, State] = {}
        keep = set(keep)
        for b in blocks:
            self._block(b)
            if b.height in keep:
                self.snapshots[b.height] = copy.deepcopy(self.state)
        self.tip = self.state

    def at(self, height: int | None) -> State:
        return self.tip if height is None else self.snapshots[height]

    # -- replay ---------------------------------------------------------------------------------
    def _block(self, b: Block) -> None:
        s = self.state
        s.height, s.time = b.height, b.time
        s.times[b.height] = b.time
        for tx in b.txs:
            if tx["status"] != "success" or "fn" not in tx:
                continue
            name = tx["contract"].split(".")[1] + "." + tx["fn"]
            handler = getattr(self, "_" + name.replace("-", "_").replace(".", "__"), None)
            if handler is not None:
                self._tx = (b.height, tx["tx_index"], 0)
                handler(tx, tx["args"], tx["result"]["ok"])

    def _transfer(
        self,
        token: int,
        kind: str,
        sender: str | None,
        recipient: str | None,
        txid: str,
        price: int | None = None,
        currency: str | None = None,
    ) -> None:
        h, i, n = self._tx
        self._tx = (h, i, n + 1)
        self.state.transfers.append(
            Transfer(token, kind, sender, recipient, price, currency, txid, h, (h, i, n))
        )

    # verification
    def _verification__add_verifier(self, tx: dict, a: list, r: Any) -> None:
        self.state.verifiers[a[0]] = "active"

    def _verification__revoke_verifier(self, tx: dict, a: list, r: Any) -> None:
        self.state.verifiers[a[0]] = "revoked"

    def _verification__register_facility(self, tx: dict, a: list, r: Any) -> None:
        fid = int(r)
        self.state.facilities[fid] = Facility(
            fid, tx["sender"], a[0], a[1], a[2], a[3], a[4], a[7], a[8], int(a[9]), int(a[10]),
            None if a[11] is None else int(a[11]), "pending", None, self.state.height,
            tx["txid"],
        )  # fmt: skip

    def _decide(self, tx: dict, a: list, status: str) -> None:
        f = self.state.facilities[int(a[0])]
        f.status, f.verifier = status, tx["sender"]

    def _verification__approve_facility(self, tx: dict, a: list, r: Any) -> None:
        self._decide(tx, a, "active")

    def _verification__suspend_facility(self, tx: dict, a: list, r: Any) -> None:
        self._decide(tx, a, "suspended")

    def _verification__reactivate_facility(self, tx: dict, a: list, r: Any) -> None:
        self._decide(tx, a, "active")

    def _verification__terminate_facility(self, tx: dict, a: list, r: Any) -> None:
        self._decide(tx, a, "terminated")

    def _verification__submit_report(self, tx: dict, a: list, r: Any) -> None:
        rid = int(r)
        self.state.reports[rid] = Report(
            rid, int(a[0]), int(a[1]), int(a[2]), int(a[3]), a[4], tx["sender"], "submitted",
            self.state.height, tx["txid"],
        )  # fmt: skip

    def _verification__attest_report(self, tx: dict, a: list, r: Any) -> None:
        rep = self.state.reports[int(a[0])]
        rep.status, rep.verifier = "attested", tx["sender"]
        rep.attested_height, rep.attested_txid = self.state.height, tx["txid"]

    def _verification__reject_report(self, tx: dict, a: list, r: Any) -> None:
        rep = self.state.reports[int(a[0])]
        rep.status, rep.verifier, rep.reason = "rejected", tx["sender"], a[1]

    def _verification__withdraw_report(self, tx: dict, a: list, r: Any) -> None:
        self.state.reports[int(a[0])].status = "withdrawn"

    def _verification__revoke_report(self, tx: dict, a: list, r: Any) -> None:
        rep = self.state.reports[int(a[0])]
        rep.status, rep.revoked_by, rep.reason = "revoked", tx["sender"], a[1]
        rep.revoked_height = self.state.height

    # rec-nft
    def _rec_nft__mint(self, tx: dict, a: list, r: Any) -> None:
        s = self.state
        rep = s.reports[int(a[0])]
        rep.status = "minted"
        tid = int(r)
        start = s.serial
        s.serial += rep.wh
        owner = s.facilities[rep.facility_id].owner
        s.tokens[tid] = Token(
            tid, rep.facility_id, rep.report_id, rep.period_start, rep.period_end,
            year_of(rep.period_start), rep.wh, start, s.serial, a[1], owner, "active", s.height,
            tx["txid"], s.time,
        )  # fmt: skip
        self._transfer(tid, "mint", None, owner, tx["txid"])

    def _rec_nft__transfer(self, tx: dict, a: list, r: Any) -> None:
        t = self.state.tokens[int(a[0])]
        t.custody = a[2]
        self._transfer(t.token_id, "transfer", a[1], a[2], tx["txid"])

    def _rec_nft__split(self, tx: dict, a: list, r: Any) -> None:
        s = self.state
        parent = s.tokens[int(a[0])]
        parent.status = "split"
        self._transfer(parent.token_id, "split", parent.custody, None, tx["txid"])
        for child in r:
            cid = int(child["token-id"])
            s.tokens[cid] = dataclasses.replace(
                parent,
                token_id=cid,
                wh=int(child["wh"]),
                serial_start=int(child["serial-start"]),
                serial_end=int(child["serial-end"]),
                status="active",
                parent=parent.token_id,
                split_height=s.height,
                split_txid=tx["txid"],
                split_time=s.time,
            )
            self._transfer(cid, "split", None, parent.custody, tx["txid"])

    def _retire(self, tx: dict, token_id: int, c: list, via: int | None) -> None:
        s = self.state
        t = s.tokens[token_id]
        t.status = "retired"
        h, i, _ = self._tx
        s.retirements.append(
            Retirement(
                token_id, t.facility_id, t.wh, t.serial_start, t.serial_end, t.vintage,
                t.period_start, t.period_end, t.custody, c[0], c[1], c[2], c[3], c[4], int(c[5]),
                int(c[6]), int(c[7]), c[8], via, tx["txid"], h, (h, i),
            )
        )  # fmt: skip
        self._transfer(token_id, "retire", t.custody, t.custody, tx["txid"])

    def _rec_nft__retire(self, tx: dict, a: list, r: Any) -> None:
        self._retire(tx, int(a[0]), a[1:], None)

    def _rec_nft__revoke(self, tx: dict, a: list, r: Any) -> None:
        t = self.state.tokens[int(a[0])]
        t.status = "revoked"
        t.revoked_height, t.revoked_by, t.revocation_reason = self.state.height, tx["sender"], a[1]
        self._transfer(t.token_id, "revoke", t.custody, t.custody, tx["txid"])

    # marketplace
    def _list(self, tx: dict, a: list, r: Any, kind: str, reserve: Any, inc: Any) -> None:
        s = self.state
        t = s.tokens[int(a[0])]
        lid = int(r)
        s.listings[lid] = Listing(
            lid, kind, t.token_id, tx["sender"], a[1] or STX, int(a[2]),
            None if reserve is None else int(reserve), None if inc is None else int(inc),
            s.height, int(a[-1]),
        )  # fmt: skip
        self._transfer(t.token_id, "escrow", tx["sender"], s.marketplace, tx["txid"])
        t.custody, t.escrow_seller, t.status = s.marketplace, tx["sender"], "listed"

    def _marketplace__list_fixed(self, tx: dict, a: list, r: Any) -> None:
        self._list(tx, a, r, "fixed", None, None)

    def _marketplace__create_auction(self, tx: dict, a: list, r: Any) -> None:
        self._list(tx, a, r, "auction", a[3], a[4])

    def _release(self, tx: dict, l: Listing, to: str, sale: Sale | None = None) -> None:  # noqa: E741
        t = self.state.tokens[l.token_id]
        kind = "release" if sale is None else "sale"
        price = None if sale is None else sale.price
        currency = None if sale is None else l.currency
        self._transfer(t.token_id, kind, t.custody, to, tx["txid"], price, currency)
        t.custody, t.escrow_seller = to, None
        if t.status == "listed":
            t.status = "active"

    def _marketplace__update_price(self, tx: dict, a: list, r: Any) -> None:
        self.state.listings[int(a[0])].price = int(a[1])

    def _marketplace__cancel_listing(self, tx: dict, a: list, r: Any) -> None:
        l = self.state.listings[int(a[0])]  # noqa: E741
        l.status = "cancelled"
        self._release(tx, l, l.seller)

    def _marketplace__expire_listing(self, tx: dict, a: list, r: Any) -> None:
        l = self.state.listings[int(a[0])]  # noqa: E741
        l.status = "expired"
        self._release(tx, l, l.seller)

    def _sell(self, tx: dict, l: Listing, buyer: str, price: int) -> Sale:  # noqa: E741
        s = self.state
        h, i, _ = self._tx
        sale = Sale(
            l.listing_id, l.token_id, l.kind, l.seller, buyer, l.currency, price,
            price * s.fee_bps // 10000, s.tokens[l.token_id].wh, tx["txid"], h, s.time, (h, i),
        )  # fmt: skip
        s.sales.append(sale)
        l.status, l.buyer = "sold", buyer
        self._release(tx, l, buyer, sale)
        return sale

    def _marketplace__buy(self, tx: dict, a: list, r: Any) -> None:
        l = self.state.listings[int(a[0])]  # noqa: E741
        self._sell(tx, l, tx["sender"], l.price)

    def _marketplace__buy_and_retire(self, tx: dict, a: list, r: Any) -> None:
        l = self.state.listings[int(a[0])]  # noqa: E741
        self._sell(tx, l, tx["sender"], l.price)
        self._retire(tx, l.token_id, a[2:], l.listing_id)

    def _marketplace__place_bid(self, tx: dict, a: list, r: Any) -> None:
        l = self.state.listings[int(a[0])]  # noqa: E741
        l.highest_bidder, l.highest_bid, l.bid_count = tx["sender"], int(a[1]), l.bid_count + 1

    def _marketplace__settle_auction(self, tx: dict, a: list, r: Any) -> None:
        l = self.state.listings[int(a[0])]  # noqa: E741
        t = self.state.tokens[l.token_id]
        bid = l.highest_bid or 0
        if l.highest_bidder and bid >= (l.reserve or 0) and t.status != "revoked":
            self._sell(tx, l, l.highest_bidder, bid)
        else:
            l.status = "expired"
            self._release(tx, l, l.seller)

    def _marketplace__set_fee_bps(self, tx: dict, a: list, r: Any) -> None:
        self.state.fee_bps = int(a[0])


# -- the domain queries, answered from a state -------------------------------------------------


def live_tokens(s: State) -> Iterator[Token]:
    """Certificates that exist (split parents are gone)."""
    return (t for t in s.tokens.values() if t.status != "split")


def holdings(s: State) -> dict[str, dict[str, Any]]:
    """Query 8 for every owner: total Wh and Wh per status, vintage, source, technology and
    boundary, and the token ids."""
    out: dict[str, dict[str, Any]] = {}
    for t in live_tokens(s):
        f = s.facilities[t.facility_id]
        h = out.setdefault(t.owner, {"total": 0, "tokens": [], "by": defaultdict(int)})
        h["total"] += t.wh
        h["tokens"].append(t.token_id)
        for dim, key in (
            ("status", t.status),
            ("vintage", str(t.vintage)),
            ("energySource", f.energy_source),
            ("technology", f.technology),
            ("marketBoundary", f.market_boundary),
        ):
            h["by"][(dim, key)] += t.wh
    return out


def statement(s: State, beneficiary: str, year: int | None) -> list[Retirement]:
    """Query 1: the retirements of a beneficiary (name or principal) in a reporting year."""
    return sorted(
        (
            r
            for r in s.retirements
            if beneficiary in (r.beneficiary_name, r.beneficiary_principal)
            and (year is None or r.reporting_year == year)
        ),
        key=lambda r: r.order,
    )


def scope2_reasons(s: State, r: Retirement, window: int = 1) -> list[str]:
    """Query 2: why a retirement fails the GHG Protocol Scope 2 quality criteria."""
    reasons = []
    if abs(r.vintage - r.reporting_year) > window:
        reasons.append("vintage_outside_window")
    if s.facilities[r.facility_id].market_boundary != r.consumption_boundary:
        reasons.append("boundary_mismatch")
    return reasons


def re100(s: State, rows: list[Retirement]) -> tuple[int, int]:
    """Query 3: (total Wh, Wh from facilities commissioned or repowered within 15 years)."""
    total = eligible = 0
    for r in rows:
        f = s.facilities[r.facility_id]
        newest = max(f.commissioning, f.repowering or 0)
        total += r.wh
        if r.reporting_year - year_of(newest) <= RE100_MAX_AGE:
            eligible += r.wh
    return total, eligible


def cdp(s: State, rows: list[Retirement]) -> dict[tuple[Any, ...], int]:
    """Query 4: Wh per consumption country x source x origin x commissioning year x vintage."""
    out: dict[tuple[Any, ...], int] = defaultdict(int)
    for r in rows:
        f = s.facilities[r.facility_id]
        key = (r.consumption_country, f.energy_source, f.country, year_of(f.commissioning),
               r.vintage)  # fmt: skip
        out[key] += r.wh
    return dict(out)


def hourly_matching(
    s: State, beneficiary: str, zone: str, consumption: dict[int, int]
) -> dict[int, int]:
    """Query 5: matched Wh per consumption hour (unix seconds): retired certificates generated
    inside that UTC hour at a facility of `zone`, whose claim period covers the hour."""
    supply: dict[int, int] = defaultdict(int)
    for r in s.retirements:
        if beneficiary not in (r.beneficiary_name, r.beneficiary_principal):
            continue
        if s.facilities[r.facility_id].grid_zone != zone:
            continue
        hour = r.period_start - r.period_start % 3600
        if r.period_end > hour + 3600 or not (r.claim_start <= hour and r.claim_end >= hour + 3600):
            continue
        supply[hour] += r.wh
    return {h: min(wh, supply.get(h, 0)) for h, wh in consumption.items()}


def lineage(s: State, token_id: int) -> list[int]:
    """The token and its split ancestors, the token first."""
    out = [token_id]
    while s.tokens[out[-1]].parent is not None:
        out.append(s.tokens[out[-1]].parent)  # type: ignore[arg-type]
    return out


def history(s: State, token_id: int) -> list[Transfer]:
    """Query 6: every custody change of a certificate, its ancestors' up to their split
    included; oldest first."""
    tokens = set(lineage(s, token_id))
    return sorted((t for t in s.transfers if t.token_id in tokens), key=lambda t: t.order)


def serial_pieces(s: State, start: int, end: int) -> list[tuple[int, int, int]]:
    """Query 6 for a serial interval: (token, overlap start, overlap end) of the certificates
    that exist and cover part of [start, end), by serial."""
    return sorted(
        (
            (t.token_id, max(start, t.serial_start), min(end, t.serial_end))
            for t in live_tokens(s)
            if t.serial_start < end and start < t.serial_end
        ),
        key=lambda piece: piece[1],
    )


def issuance(s: State, by: str = "vintage") -> dict[tuple[Any, ...], dict[str, int]]:
    """Query 10: issued / active / listed / retired / revoked Wh per facility and vintage (or
    generation month, or generation period)."""
    out: dict[tuple[Any, ...], dict[str, int]] = {}
    for t in live_tokens(s):
        if by == "vintage":
            key: tuple[Any, ...] = (t.facility_id, t.vintage)
        elif by == "month":
            start = utc(t.period_start)
            key = (t.facility_id, datetime(start.year, start.month, 1, tzinfo=UTC))
        else:
            key = (t.facility_id, utc(t.period_start), utc(t.period_end))
        row = out.setdefault(key, defaultdict(int))
        row["issued"] += t.wh
        row[t.status] += t.wh
    return out


def revoked_retirements(s: State) -> list[Retirement]:
    """Query 11: retirements whose certificate was revoked afterwards."""
    return [r for r in s.retirements if s.tokens[r.token_id].status == "revoked"]


def expiry(
    s: State, rules: dict[str, int], as_of: datetime, days: int
) -> list[tuple[int, datetime]]:
    """Query 9: (token, expiry) of active and listed certificates expiring in [asOf, asOf+days),
    by the boundary rule in months after the end of production; soonest first."""
    out = []
    for t in live_tokens(s):
        boundary = s.facilities[t.facility_id].market_boundary
        if t.status not in ("active", "listed") or boundary not in rules:
            continue
        exp = add_months(utc(t.period_end), rules[boundary])
        if as_of <= exp < as_of + timedelta(days=days):
            out.append((t.token_id, exp))
    return sorted(out, key=lambda x: (x[1], x[0]))


def ppm(price: int, wh: int, rounding: str | None = None) -> Decimal:
    """Price per MWh to six decimals (half-even, or `rounding`)."""
    exact = Decimal(price) * Decimal(1_000_000) / Decimal(wh)
    return exact.quantize(Decimal("0.000001"), rounding=rounding)


def market(s: State, currency: str) -> dict[str, Any]:
    """Query 12 for one currency: totals per group, daily OHLC of the price per MWh, and the
    open fixed-price listings' depth."""
    sales = sorted((x for x in s.sales if x.currency == currency), key=lambda x: x.order)
    groups: dict[str, dict[str | None, list[int]]] = defaultdict(dict)
    for x in sales:
        t, f = s.tokens[x.token_id], s.facilities[s.tokens[x.token_id].facility_id]
        for g, key in (
            ("all", None),
            ("energySource", f.energy_source),
            ("technology", f.technology),
            ("vintage", str(t.vintage)),
            ("boundary", f.market_boundary),
        ):
            acc = groups[g].setdefault(key, [0, 0, 0, 0])
            acc[0] += 1
            acc[1] += x.wh
            acc[2] += x.price
            acc[3] += x.fee
    days: dict[date, list[Sale]] = defaultdict(list)
    for x in sales:
        days[utc(x.time).date()].append(x)
    candles = {
        d: {
            "open": ppm(xs[0].price, xs[0].wh),
            "high": max(ppm(x.price, x.wh) for x in xs),
            "low": min(ppm(x.price, x.wh) for x in xs),
            "close": ppm(xs[-1].price, xs[-1].wh),
            "volumeWh": sum(x.wh for x in xs),
        }
        for d, xs in days.items()
    }
    depth: dict[Decimal, list[int]] = defaultdict(lambda: [0, 0])
    for l in s.listings.values():  # noqa: E741
        if l.status == "active" and l.kind == "fixed" and l.currency == currency:
            wh = s.tokens[l.token_id].wh
            level = depth[ppm(l.price, wh, ROUND_HALF_UP)]
            level[0] += 1
            level[1] += wh
    return {"groups": groups, "candles": candles, "depth": dict(depth)}
