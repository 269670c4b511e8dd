"""Synthetic chains with the real event shapes: observer `/new_block` payloads whose print tuples
are built with the project codec exactly as contracts/EVENTS.md specifies them.

A `Market` holds the contract state a chain implies (who owns which token, open listings...), so
generated events are coherent; it can be copied at any block to grow a competing fork branch.
Used by `python -m ops.bench ingest` and by the indexer tests (forks, kill -9, bad input).
"""

from __future__ import annotations

import bisect
import copy
import functools
import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from infra.config import DEFAULT_DEPLOYER
from stacks.c32 import address_from_hash160, address_to_hash160
from stacks.clarity import (
    BoolCV,
    ClarityValue,
    IntCV,
    ListCV,
    NoneCV,
    SomeCV,
    StringAsciiCV,
    StringUtf8CV,
    TupleCV,
    UIntCV,
    decode_hex_to_python,
    encode_hex,
    principal_cv,
)
from stacks.hashing import sha512_256
from stacks.transactions import (
    AUTH_STANDARD,
    CHAIN_ID_TESTNET,
    KEY_COMPRESSED,
    TX_VERSION_TESTNET,
    Authorization,
    ContractCallPayload,
    HashMode,
    SingleSigCondition,
    Transaction,
    encode_transaction,
)

GENESIS = "0x" + "00" * 32
BASE_TIME = 1_767_225_600  # 2026-01-01T00:00:00Z


def ipfs_uri(name: str) -> str:
    """A well-formed `ipfs://` URI (a raw-leaf CID of `name`), as the contracts require."""
    from indexer.metadata.cid import raw_cid

    return f"ipfs://{raw_cid(name.encode())}"


def h32(*parts: object) -> str:
    return "0x" + hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


@functools.cache
def account(i: int) -> str:
    return address_from_hash160(26, hashlib.sha256(f"acct{i}".encode()).digest()[:20])


def _cv(value: Any) -> ClarityValue:
    """Plain Python -> Clarity, with the conventions of the print tuples."""
    if isinstance(value, ClarityValue.__args__):
        return value
    if isinstance(value, bool):
        return BoolCV(value)
    if isinstance(value, int):
        return UIntCV(value)
    if (isinstance(value, str) and value.startswith("S") and "." in value) or _is_addr(value):
        return _principal(value)
    if isinstance(value, str):
        return StringAsciiCV(value)
    if value is None:
        return NoneCV()
    if isinstance(value, list):
        return ListCV(tuple(_cv(v) for v in value))
    if isinstance(value, dict):
        return TupleCV.of({k: _cv(v) for k, v in value.items()})
    raise TypeError(type(value))


@functools.cache
def _principal(value: str) -> ClarityValue:
    # A few dozen principals recur in every event; c32-decoding them each time was most of the
    # generator's encoding cost (the values are frozen, so sharing them is safe).
    return principal_cv(value)


def _is_addr(value: Any) -> bool:
    return isinstance(value, str) and len(value) > 30 and value[:2] in ("ST", "SP", "SN", "SM")


def some(value: Any) -> SomeCV:
    return SomeCV(_cv(value))


def print_tuple(fields: dict[str, Any]) -> str:
    return encode_hex(_cv(fields))


@dataclass
class Market:
    deployer: str = DEFAULT_DEPLOYER
    seed: int = 0
    owners: dict[int, str] = field(default_factory=dict)  # active, unlisted tokens
    tokens: dict[int, dict[str, Any]] = field(default_factory=dict)
    listings: dict[int, dict[str, Any]] = field(default_factory=dict)  # open fixed-price
    # The keys of `owners` and `listings` kept sorted (random picks index them): sorting the
    # dicts on every pick made generating a long chain quadratic.
    owned: list[int] = field(default_factory=list)
    listed: list[int] = field(default_factory=list)
    next_token: int = 1
    next_listing: int = 1
    next_report: int = 1
    facility_ready: bool = False
    serial: int = 0

    def cid(self, name: str) -> str:
        return f"{self.deployer}.{name}"

    def _own(self, tid: int, owner: str) -> None:
        if tid not in self.owners:
            bisect.insort(self.owned, tid)
        self.owners[tid] = owner

    def _unown(self, tid: int) -> str:
        del self.owned[bisect.bisect_left(self.owned, tid)]
        return self.owners.pop(tid)

    # ------------------------------------------------------------------ event builders
    def _print(self, contract: str, fields: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "contract_event",
            "contract_event": {
                "contract_identifier": self.cid(contract),
                "topic": "print",
                "raw_value": print_tuple(fields),
            },
        }

    def _nft(self, kind: str, token: int, sender: str | None, recipient: str | None) -> dict:
        body: dict[str, Any] = {"asset_identifier": self.cid("rec-nft") + "::rec"}
        if sender:
            body["sender"] = sender
        if recipient:
            body["recipient"] = recipient
        body["raw_value"] = encode_hex(UIntCV(token))
        return {"type": f"nft_{kind}_event", f"nft_{kind}_event": body}

    def _stx(self, sender: str, recipient: str, amount: int) -> dict[str, Any]:
        return {
            "type": "stx_transfer_event",
            "stx_transfer_event": {
                "sender": sender, "recipient": recipient, "amount": str(amount), "memo": "",
            },
        }  # fmt: skip

    def _facility(self, event: str, status: str, verifier: str | None) -> dict[str, Any]:
        return self._print(
            "verification",
            {
                "event": event, "facility-id": 1, "actor": account(0),
                "reason": StringUtf8CV(""), "owner": account(1),
                "name": StringUtf8CV("Solar Farm One"), "country": "US", "subdivision": "US-TX",
                "market-boundary": "US-ERCOT", "grid-zone": "ERCOT-NORTH",
                "latitude": IntCV(30_267_153), "longitude": IntCV(-97_743_061),
                "energy-source": "ES100", "technology": "TC110", "capacity-w": 50_000_000,
                "commissioning-date": BASE_TIME - 86400 * 400, "repowering-date": NoneCV(),
                "public-support": False, "irec-code": "IREC-0001", "meter-gsrn": "",
                "metadata-uri": ipfs_uri("facility-1"), "status": status,
                "verifier": some(verifier) if verifier else NoneCV(),
                "registered-at": 1, "last-attested-end": 0,
            },
        )  # fmt: skip

    # ------------------------------------------------------------------ operations
    def setup(self) -> list[list[dict[str, Any]]]:
        self.facility_ready = True
        return [
            [self._print("verification", {
                "event": "verifier-added", "verifier": account(0),
                "name": StringUtf8CV("Green Audit"), "active": True, "by": self.deployer,
            })],
            [self._facility("facility-registered", "pending", None)],
            [self._facility("facility-approved", "active", account(0))],
        ]  # fmt: skip

    def mint(self, rng: random.Random, height: int) -> list[dict[str, Any]]:
        rid, tid = self.next_report, self.next_token
        self.next_report += 1
        self.next_token += 1
        wh = rng.randint(1, 500) * 1000
        start = BASE_TIME + rid * 3600
        report = {
            "report-id": rid, "actor": account(0), "facility-id": 1, "period-start": start,
            "period-end": start + 3600, "wh": wh, "evidence-hash": some_buf(rid),
            "submitter": account(1), "verifier": some(account(0)), "revoked-by": NoneCV(),
            "status": "minted",
            "reason": StringUtf8CV(""), "token-id": some(tid), "submitted-at": height,
            "updated-at": height,
        }  # fmt: skip
        owner = account(1)
        cert = {
            "token-id": tid, "owner": owner, "facility-id": 1, "report-id": rid,
            "period-start": start, "period-end": start + 3600, "vintage": 2026, "wh": wh,
            "serial-start": self.serial, "serial-end": self.serial + wh,
            "token-uri": ipfs_uri(f"token-{tid}"), "status": "active", "parent-id": NoneCV(),
            "issued-at": height,
        }  # fmt: skip
        self.serial += wh
        self._own(tid, owner)
        self.tokens[tid] = cert
        return [
            self._print("verification", {**report, "event": "report-submitted",
                                         "status": "submitted", "verifier": NoneCV(),
                                         "token-id": NoneCV()}),
            self._print("verification", {**report, "event": "report-attested",
                                         "status": "attested", "token-id": NoneCV()}),
            self._print("verification", {**report, "event": "report-minted"}),
            self._print("rec-nft", {**cert, "event": "certificate-minted"}),
            self._nft("mint", tid, None, owner),
        ]  # fmt: skip

    def transfer(self, rng: random.Random, tid: int) -> list[dict[str, Any]]:
        sender = self.owners[tid]
        recipient = account(rng.randint(1, 40))
        if recipient == sender:
            recipient = account(41)
        self._own(tid, recipient)
        return [
            self._print("rec-nft", {
                "event": "certificate-transferred", "token-id": tid, "sender": sender,
                "recipient": recipient, "kind": "transfer", "status": "active",
            }),
            self._nft("transfer", tid, sender, recipient),
        ]  # fmt: skip

    def list_fixed(self, rng: random.Random, tid: int, height: int) -> list[dict[str, Any]]:
        seller = self._unown(tid)
        lid = self.next_listing
        self.next_listing += 1
        market = self.cid("marketplace")
        listing = {
            "listing-id": lid, "kind": "fixed-price", "token-id": tid, "seller": seller,
            "currency": NoneCV(), "price": rng.randint(1, 100) * 1_000_000, "reserve-price": 0,
            "min-increment": 0, "start-height": height, "end-height": height + 1000,
            "status": "active", "highest-bidder": NoneCV(), "highest-bid": 0, "bid-count": 0,
        }  # fmt: skip
        self.listings[lid] = listing
        bisect.insort(self.listed, lid)
        return [
            self._print("rec-nft", {
                "event": "certificate-transferred", "token-id": tid, "sender": seller,
                "recipient": market, "kind": "escrow", "status": "listed",
            }),
            self._nft("transfer", tid, seller, market),
            self._print("marketplace", {**listing, "event": "listing-created"}),
        ]  # fmt: skip

    def buy(self, rng: random.Random, lid: int, retire: bool) -> list[dict[str, Any]]:
        listing = self.listings.pop(lid)
        del self.listed[bisect.bisect_left(self.listed, lid)]
        tid, seller, price = listing["token-id"], listing["seller"], listing["price"]
        buyer = account(rng.randint(50, 90))
        fee = price * 250 // 10000
        market = self.cid("marketplace")
        events = [
            self._stx(buyer, self.deployer, fee),
            self._stx(buyer, seller, price - fee),
            self._print("marketplace", {
                "event": "sale", "listing-id": lid, "token-id": tid, "kind": "fixed-price",
                "seller": seller, "buyer": buyer, "currency": NoneCV(), "price": price,
                "fee": fee, "seller-proceeds": price - fee, "treasury": self.deployer,
                "fee-bps": 250, "retired": retire, "status": "sold",
            }),
            self._print("rec-nft", {
                "event": "certificate-transferred", "token-id": tid, "sender": market,
                "recipient": buyer, "kind": "release", "status": "active",
            }),
            self._nft("transfer", tid, market, buyer),
        ]  # fmt: skip
        if retire:
            events.append(self._retire_event(tid, buyer))
        else:
            self._own(tid, buyer)
        return events

    def _retire_event(self, tid: int, owner: str) -> dict[str, Any]:
        c = self.tokens[tid]
        return self._print("rec-nft", {
            "event": "certificate-retired", "token-id": tid, "owner": owner, "wh": c["wh"],
            "facility-id": 1, "report-id": c["report-id"], "vintage": 2026,
            "period-start": c["period-start"], "period-end": c["period-end"],
            "serial-start": c["serial-start"], "serial-end": c["serial-end"],
            "beneficiary-name": StringUtf8CV("Acme Corp"), "beneficiary": NoneCV(),
            "consumption-country": "US", "consumption-subdivision": "",
            "consumption-market-boundary": "US-ERCOT", "claim-period-start": BASE_TIME,
            "claim-period-end": BASE_TIME + 86400 * 365, "reporting-year": 2026,
            "purpose": "voluntary-scope2", "retired-at": 1, "status": "retired",
        })  # fmt: skip

    def retire(self, tid: int) -> list[dict[str, Any]]:
        return [self._retire_event(tid, self._unown(tid))]

    def split(self, tid: int) -> list[dict[str, Any]]:
        owner = self._unown(tid)
        parent = self.tokens[tid]
        half = parent["wh"] // 2
        children = []
        events = [self._nft("burn", tid, owner, None)]
        start = parent["serial-start"]
        for wh in (half, parent["wh"] - half):
            cid = self.next_token
            self.next_token += 1
            children.append({"token-id": cid, "wh": wh, "serial-start": start,
                             "serial-end": start + wh})  # fmt: skip
            self.tokens[cid] = {**parent, "token-id": cid, "wh": wh, "serial-start": start,
                                "serial-end": start + wh}  # fmt: skip
            self._own(cid, owner)
            start += wh
            events.append(self._nft("mint", cid, None, owner))
        split_ev = self._print("rec-nft", {
            "event": "certificate-split", "parent-id": tid, "owner": owner, "wh": parent["wh"],
            "serial-start": parent["serial-start"], "serial-end": parent["serial-end"],
            "children": children,
        })  # fmt: skip
        return [split_ev, *events]

    def random_tx(self, rng: random.Random, height: int) -> list[dict[str, Any]]:
        r = rng.random()
        if self.owners and r < 0.25:
            return self.transfer(rng, rng.choice(self.owned))
        if self.owners and r < 0.40:
            return self.list_fixed(rng, rng.choice(self.owned), height)
        if self.listings and r < 0.55:
            return self.buy(rng, rng.choice(self.listed), retire=rng.random() < 0.3)
        if self.owners and r < 0.60:
            return self.retire(rng.choice(self.owned))
        if self.owners and r < 0.65:
            return self.split(rng.choice(self.owned))
        return self.mint(rng, height)


def some_buf(i: int) -> SomeCV:
    from stacks.clarity import BufferCV

    return SomeCV(BufferCV(hashlib.sha256(str(i).encode()).digest()))


# The contract function that prints each event kind (contracts/EVENTS.md), for the generated
# transactions' payloads.
FUNCTION_OF = {
    "verifier-added": "add-verifier", "facility-registered": "register-facility",
    "facility-approved": "approve-facility", "report-submitted": "submit-report",
    "certificate-transferred": "transfer", "listing-created": "list-fixed", "sale": "buy",
    "certificate-retired": "retire", "certificate-split": "split",
}  # fmt: skip


def _event_contract(ev: dict[str, Any]) -> str | None:
    body = ev[ev["type"]]
    if ev["type"] == "contract_event":
        return str(body["contract_identifier"])
    if "asset_identifier" in body:
        return str(body["asset_identifier"]).split("::", 1)[0]
    return None


def contract_call_tx(seed: str, events: list[dict[str, Any]]) -> str:
    """A well-formed, signed-looking contract-call transaction (testnet, standard single-sig) to
    the contract the first event names, calling the function that prints it: real bytes whose
    SHA-512/256 is the txid, as a node sends them. The signature is not valid (nothing checks
    it at ingest); sender, nonce and fee are derived from `seed`."""
    digest = hashlib.sha256(seed.encode()).digest()
    contract = next(filter(None, map(_event_contract, events)), f"{DEFAULT_DEPLOYER}.marketplace")
    kind = "call"
    for ev in events:
        if ev["type"] == "contract_event":
            value = decode_hex_to_python(ev["contract_event"]["raw_value"])
            kind = FUNCTION_OF.get(value.get("event", ""), str(value.get("event", "call")))
            break
    address, name = contract.split(".", 1)
    version, h160 = address_to_hash160(address)
    origin = SingleSigCondition(
        HashMode.P2PKH,
        digest[:20],
        int.from_bytes(digest[20:22], "big"),
        180 + digest[22] * 10,
        KEY_COMPRESSED,
        bytes([digest[23] & 1]) + hashlib.sha512(digest).digest()[:64],
    )
    args = (UIntCV(int.from_bytes(digest[24:28], "big")), principal_cv(account(digest[28] % 64)))
    tx = Transaction(
        TX_VERSION_TESTNET,
        CHAIN_ID_TESTNET,
        Authorization(AUTH_STANDARD, origin),
        3,
        2,
        (),
        ContractCallPayload(version, h160, name, kind, args),
    )
    return "0x" + encode_transaction(tx).hex()


def new_block(
    height: int,
    parent: str,
    label: str,
    txs: list[list[dict[str, Any]]],
    extra_txs: int = 0,
) -> dict[str, Any]:
    """An observer `/new_block` body; `extra_txs` unrelated transactions pad it like a real one.
    Each transaction carrying events gets real bytes (`contract_call_tx`) and their txid."""
    index_hash = h32("index", label, height)
    transactions = []
    events = []
    for i, tx_events in enumerate(txs):
        raw_tx = contract_call_tx(f"tx|{label}|{height}|{i}", tx_events)
        txid = "0x" + sha512_256(bytes.fromhex(raw_tx[2:])).hex()
        transactions.append({
            "txid": txid, "tx_index": i, "status": "success", "raw_result": "0x0703",
            "raw_tx": raw_tx, "execution_cost": {}, "microblock_sequence": None,
            "contract_abi": None, "vm_error": None,
        })  # fmt: skip
        for j, ev in enumerate(tx_events):
            events.append({"txid": txid, "event_index": j, "committed": True, **ev})
    for k in range(extra_txs):
        transactions.append(
            {
                "txid": h32("other", label, height, k),
                "tx_index": len(txs) + k,
                "status": "success",
                "raw_result": "0x03",
                "raw_tx": "0x00",
            }
        )
    return {
        "block_hash": h32("block", label, height),
        "block_height": height,
        "block_time": BASE_TIME + height * 10,
        "burn_block_hash": h32("burn", height),
        "burn_block_height": height + 100,
        "burn_block_time": BASE_TIME + height * 10,
        "index_block_hash": index_hash,
        "parent_index_block_hash": parent,
        "parent_block_hash": h32("block-parent", label, height),
        "miner_txid": h32("miner", label, height),
        "transactions": transactions,
        "events": events,
        "matured_miner_rewards": [],
    }


@dataclass
class Chain:
    """A growing chain of generated blocks with market snapshots for forking."""

    seed: int = 0
    txs_per_block: int = 3
    snapshots: bool = True  # keep market state per block (needed only to fork from it)
    blocks: list[dict[str, Any]] = field(default_factory=list)  # in delivery order
    _state: dict[str, tuple[Market, int]] = field(default_factory=dict)

    def grow(self, parent: str | None, count: int, label: str) -> list[dict[str, Any]]:
        """Append `count` blocks on top of `parent` (None = genesis) on branch `label`."""
        if parent is None:
            market, height, tip = Market(seed=self.seed), 0, GENESIS
        else:
            snap, height = self._state[parent]
            market, tip = copy.deepcopy(snap), parent
        rng = random.Random(f"{self.seed}|{label}|{height}")
        made = []
        for _ in range(count):
            height += 1
            block = _next_block(market, rng, height, tip, label, self.txs_per_block)
            tip = block["index_block_hash"]
            if self.snapshots or _ == count - 1:
                self._state[tip] = (copy.deepcopy(market), height)
            made.append(block)
        self.blocks.extend(made)
        return made


def _next_block(
    market: Market, rng: random.Random, height: int, parent: str, label: str, txs_per_block: int
) -> dict[str, Any]:
    txs = market.setup() if not market.facility_ready else []
    txs += [market.random_tx(rng, height) for _ in range(txs_per_block)]
    return new_block(height, parent, label, txs)


def stream(seed: int, txs_per_block: int, label: str = "bench", chunk: int = 200) -> Iterator[dict]:
    """An endless unforked chain, block by block: the blocks `Chain(seed, txs_per_block)` makes
    growing `chunk` blocks at a time on `label`, without its per-call market copies (which grow
    with the chain and made a long run quadratic)."""
    market, height, tip = Market(seed=seed), 0, GENESIS
    while True:
        rng = random.Random(f"{seed}|{label}|{height}")
        for _ in range(chunk):
            height += 1
            block = _next_block(market, rng, height, tip, label, txs_per_block)
            tip = block["index_block_hash"]
            yield block


def to_requests(blocks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [("/new_block", json.dumps(b, separators=(",", ":"))) for b in blocks]
