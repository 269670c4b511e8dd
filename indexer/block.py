"""The one internal Block every source produces, and the parser of the observer's `/new_block`.

Only what the watched contracts touched is kept (their print events, their assets' nft/ft events,
stx transfers to or from them, and the transactions that carry those); every other event is
skipped by a string comparison, before any Clarity decoding. Everything is validated here, before
the first write, so a malformed payload is refused whole; that includes the bytes of every stored
transaction, which must hash to its txid and decode (`check_raw_tx`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from indexer.errors import PayloadError
from stacks.c32 import AddressError, is_valid_address, parse_principal
from stacks.hashing import sha512_256
from stacks.transactions import TransactionDecodeError, TxSummary, decode_transaction, summarize

# A flat character class (no nested repetition): this runs on every hex field of every kept event.
_HEX_BODY = re.compile(r"[0-9a-fA-F]*")
NFT_TYPES = ("nft_mint_event", "nft_transfer_event", "nft_burn_event")
FT_TYPES = ("ft_mint_event", "ft_transfer_event", "ft_burn_event")
STX_TYPES = ("stx_transfer_event", "stx_mint_event", "stx_burn_event", "stx_lock_event")
KNOWN_EVENT_TYPES = frozenset(("contract_event", *NFT_TYPES, *FT_TYPES, *STX_TYPES))
# stacks-node's `raw_tx` of a burnchain operation (a STX transfer or stack-stx sent on Bitcoin):
# there are no Stacks transaction bytes to check.
BURNCHAIN_OP_RAW_TX = "0x00"


@dataclass(slots=True)
class BlockHeader:
    index_block_hash: str
    block_hash: str
    block_height: int
    parent_index_block_hash: str
    parent_block_hash: str | None = None
    burn_block_hash: str | None = None
    burn_block_height: int | None = None
    burn_block_time: int | None = None
    block_time: int | None = None
    # Nakamoto blocks only (docs/stacks.md, "Event observer"): None before epoch 3.0.
    tenure_height: int | None = None
    consensus_hash: str | None = None
    signer_signature_hash: str | None = None
    signer_count: int | None = None


@dataclass(slots=True)
class Tx:
    txid: str
    tx_index: int
    status: str
    raw_result: str | None = None
    raw_tx: str | None = None
    # Sender, called contract and function, fee and nonce: decoded from `raw_tx` by
    # `check_raw_tx`, or, for a block rebuilt without bytes (the API source), read from the
    # transaction's `summary` by `parse_summary` (stored transactions only; None for a
    # burnchain operation).
    summary: TxSummary | None = None


@dataclass(slots=True)
class Event:
    txid: str
    tx_index: int
    event_index: int
    type: str
    contract_id: str  # contract (print events) or contract part of the asset identifier
    asset_identifier: str | None = None
    topic: str | None = None
    sender: str | None = None
    recipient: str | None = None
    amount: str | None = None
    raw_value: str | None = None
    # Decoded Clarity value (python form), filled by the decoder for watched events only.
    value: Any = None
    kind: str | None = None
    # Why the handlers do not apply it (a shape or kind they do not understand); stored anyway.
    skipped: str | None = None


@dataclass(slots=True)
class Block:
    header: BlockHeader
    txs: list[Tx] = field(default_factory=list)  # transactions carrying watched events
    events: list[Event] = field(default_factory=list)  # watched events, in chain order
    # Status of every transaction in the block (cheap): relayed transactions are matched by txid.
    tx_status: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    tx_count: int = 0
    event_count: int = 0

    @property
    def height(self) -> int:
        return self.header.block_height

    @property
    def hash(self) -> str:
        return self.header.index_block_hash


def _req(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise PayloadError(f"{where}.{key}: missing")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PayloadError(f"{where}.{key}: expected {_kind_name(kind)}, got {_json_type(value)}")
    return value


def _opt(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise PayloadError(f"{where}.{key}: expected {_kind_name(kind)}, got {_json_type(value)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return {"str": "string", "int": "integer", "list": "array", "dict": "object"}.get(
        kind.__name__, kind.__name__
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
        type(value).__name__, {"list": "array", "dict": "object"}.get(type(value).__name__, "?")
    )


def _hex(obj: Mapping[str, Any], key: str, where: str, required: bool = True) -> str | None:
    value = _req(obj, key, str, where) if required else _opt(obj, key, str, where)
    if value is not None and not (
        value[:2] == "0x" and len(value) % 2 == 0 and _HEX_BODY.fullmatch(value, 2)
    ):
        raise PayloadError(f"{where}.{key}: not 0x-prefixed hex")
    return value


def _is_hex(value: Any) -> bool:
    return (
        type(value) is str
        and value[:2] == "0x"
        and not len(value) & 1
        and _HEX_BODY.fullmatch(value, 2) is not None
    )


def _raw_value(body: Mapping[str, Any], where: str, decoded: bool) -> str | None:
    value = body.get("raw_value")
    if decoded and type(value) is str and value[:2] == "0x":
        return value  # the decoder reads every byte of it and refuses what is not hex
    return _hex(body, "raw_value", where)


def _check_tx(t: Mapping[str, Any], where: str) -> None:
    _hex(t, "txid", where)
    _req(t, "status", str, where)
    _opt_height(t, "tx_index", where, INT4_MAX)
    _hex(t, "raw_result", where, required=False)
    _opt(t, "raw_tx", str, where)


def check_raw_tx(tx: Tx, where: str) -> None:
    """Refuse stored transaction bytes that are not the transaction `txid` names: they must be
    hex, hash (SHA-512/256) to the txid and decode as a Stacks transaction. A truncated or
    altered copy is otherwise stored for good, and the genuine block, arriving later with the
    same index_block_hash, would be taken for a duplicate of it. The one decode also fills
    `tx.summary`, the columns analysts query."""
    raw = tx.raw_tx
    if raw == BURNCHAIN_OP_RAW_TX or raw is None:
        return
    _hex({"raw_tx": raw}, "raw_tx", where)
    data = bytes.fromhex(raw[2:])
    digest = sha512_256(data).hex()
    if tx.txid[2:].lower() != digest:
        raise PayloadError(
            f"{where}.raw_tx: its {len(data)} bytes hash to 0x{digest}, not to the txid {tx.txid}"
        )
    try:
        summary = summarize(decode_transaction(data))
    except TransactionDecodeError as exc:
        raise PayloadError(f"{where}.raw_tx: not a Stacks transaction ({exc})") from None
    # u64 on the wire, bigint in the table: a mined transaction paid its fee, so no real one
    # comes near the limit, and a payload claiming otherwise is refused here, not at COPY time.
    if summary.fee > INT8_MAX or summary.nonce > INT8_MAX:
        raise PayloadError(f"{where}.raw_tx: fee or nonce beyond {INT8_MAX}")
    tx.summary = summary


def parse_summary(obj: Any, where: str) -> TxSummary:
    """The `summary` a transaction without `raw_tx` may carry (`{sender, contract_id,
    function_name, fee, nonce}`, what `summarize` gives of the bytes): the API source's blocks
    have no bytes, but the API says the same of each transaction. Refused unless it could have
    come from bytes, so analysts read one meaning whichever source filled the columns."""
    if type(obj) is not dict:
        raise PayloadError(f"{where}: expected object, got {_json_type(obj)}")
    sender = _req(obj, "sender", str, where)
    if not is_valid_address(sender):
        raise PayloadError(f"{where}.sender: not a Stacks address: {sender[:80]!r}")
    contract_id = _opt(obj, "contract_id", str, where)
    if contract_id is not None:
        try:
            named = parse_principal(contract_id).contract_name is not None
        except AddressError:
            named = False
        if not named:
            raise PayloadError(f"{where}.contract_id: not a contract id: {contract_id[:80]!r}")
    function_name = _opt(obj, "function_name", str, where)
    if function_name is not None and (contract_id is None or not function_name):
        raise PayloadError(f"{where}.function_name: a call needs a contract_id and a name")
    return TxSummary(
        sender, contract_id, function_name, _u64(obj, "fee", where), _u64(obj, "nonce", where)
    )


def _u64(obj: Mapping[str, Any], key: str, where: str) -> int:
    """A count of the transaction (fee, nonce) that must fit the bigint column. The API writes
    micro-STX as decimal strings (they exceed JavaScript's integers), so those are read too."""
    value: Any = obj.get(key)
    if type(value) not in (int, str):
        raise PayloadError(f"{where}.{key}: expected integer or string, got {_json_type(value)}")
    shown = str(value)[:40]
    if type(value) is str:
        if not (value.isascii() and value.isdigit()):
            raise PayloadError(f"{where}.{key}: {shown!r} is not a decimal integer")
        # A longer one is out of range anyway, and int() of a huge string is slow.
        value = int(value) if len(value) <= 20 else -1
    if not 0 <= value <= INT8_MAX:
        raise PayloadError(f"{where}.{key}: {shown} is out of range (0 to {INT8_MAX})")
    return int(value)


# The columns' ranges (integer, bigint): a number beyond them is refused as bad input here, not
# by PostgreSQL at commit time, which would fail the same way on every retry of the node.
INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1


def _height(obj: Mapping[str, Any], key: str, where: str, limit: int = INT4_MAX) -> int:
    value = _req(obj, key, int, where)
    if value < 0 or value > limit:
        raise PayloadError(f"{where}.{key}: {value} is out of range (0 to {limit})")
    return int(value)


def _opt_height(obj: Mapping[str, Any], key: str, where: str, limit: int) -> int | None:
    if obj.get(key) is None:
        return None
    return _height(obj, key, where, limit)


def parse_header(payload: Mapping[str, Any], where: str = "block") -> BlockHeader:
    return BlockHeader(
        index_block_hash=_hex(payload, "index_block_hash", where) or "",
        block_hash=_hex(payload, "block_hash", where) or "",
        block_height=_height(payload, "block_height", where),
        parent_index_block_hash=_hex(payload, "parent_index_block_hash", where) or "",
        parent_block_hash=_hex(payload, "parent_block_hash", where, required=False),
        burn_block_hash=_hex(payload, "burn_block_hash", where, required=False),
        burn_block_height=_opt_height(payload, "burn_block_height", where, INT4_MAX),
        burn_block_time=_opt_height(payload, "burn_block_time", where, INT8_MAX),
        block_time=_opt_height(payload, "block_time", where, INT8_MAX),
        tenure_height=_opt_height(payload, "tenure_height", where, INT4_MAX),
        consensus_hash=_hex(payload, "consensus_hash", where, required=False),
        signer_signature_hash=_hex(payload, "signer_signature_hash", where, required=False),
        signer_count=_signer_count(payload, where),
    )


def _signer_count(payload: Mapping[str, Any], where: str) -> int | None:
    """How many signer signatures a Nakamoto block carries (`signer_signature`: 65-byte
    recoverable signatures in hex, stacks-node writes them without `0x`); None before Nakamoto."""
    signatures = _opt(payload, "signer_signature", list, where)
    if signatures is None:
        return None
    for i, sig in enumerate(signatures):
        if type(sig) is not str or not _HEX_BODY.fullmatch(sig.removeprefix("0x")):
            raise PayloadError(f"{where}.signer_signature[{i}]: not a hex signature")
    return len(signatures)


def _asset_contract(asset_identifier: str) -> str:
    return asset_identifier.split("::", 1)[0]


def parse_new_block(
    payload: Any,
    watched: frozenset[str],
    decode: Callable[[Event], None] | None = None,
) -> Block:
    """Validate an observer `/new_block` body and keep the watched part of it.

    `decode` (the Clarity step) is called for every kept event; it raises PayloadError subclasses.
    """
    if not isinstance(payload, dict):
        raise PayloadError(f"block: expected object, got {_json_type(payload)}")
    header = parse_header(payload)
    raw_txs = _req(payload, "transactions", list, "block")
    raw_events = _req(payload, "events", list, "block")
    block = Block(header=header, tx_count=len(raw_txs), event_count=len(raw_events))

    # Each loop checks the common well-formed shape inline and only on a mismatch re-runs the
    # field validators, which raise the precise error: the messages (with their `where` paths)
    # cost nothing on the path every transaction and event takes.
    txs: dict[str, Tx] = {}
    tx_status = block.tx_status
    for i, t in enumerate(raw_txs):
        if type(t) is not dict:
            raise PayloadError(f"transactions[{i}]: expected object, got {_json_type(t)}")
        txid: Any = t.get("txid")
        status: Any = t.get("status")
        tx_index = t.get("tx_index")
        raw_result = t.get("raw_result")
        raw_tx = t.get("raw_tx")
        if not (
            type(status) is str
            and (tx_index is None or (type(tx_index) is int and 0 <= tx_index <= INT4_MAX))
            and (raw_tx is None or type(raw_tx) is str)
            and _is_hex(txid)
            and (raw_result is None or _is_hex(raw_result))
        ):
            _check_tx(t, f"transactions[{i}]")
        tx = Tx(
            txid=txid,
            tx_index=i if tx_index is None else tx_index,
            status=status,
            raw_result=raw_result,
            raw_tx=raw_tx,
        )
        if raw_tx is None and (summary := t.get("summary")) is not None:
            # Only the API source's blocks carry one (at most their watched transactions);
            # with bytes, the bytes decide.
            tx.summary = parse_summary(summary, f"transactions[{i}].summary")
        txs[txid] = tx
        tx_status[txid] = (status, raw_result)

    kept_txids: dict[str, None] = {}
    for i, e in enumerate(raw_events):
        if type(e) is not dict:
            raise PayloadError(f"events[{i}]: expected object, got {_json_type(e)}")
        etype = e.get("type")
        if type(etype) is not str:
            _req(e, "type", str, f"events[{i}]")
        if e.get("committed") is False or etype not in KNOWN_EVENT_TYPES:
            continue  # a newer node may add kinds; none of them concern our contracts
        body = e.get(etype)
        if type(body) is not dict:
            raise PayloadError(f"events[{i}].{etype}: missing or not an object")
        ev: Event | None = None
        if etype == "contract_event":
            cid: Any = body.get("contract_identifier")
            if type(cid) is not str:
                _req(body, "contract_identifier", str, f"events[{i}].{etype}")
            if cid not in watched:
                continue
            where_b = f"events[{i}].{etype}"
            ev = Event(
                txid="",
                tx_index=0,
                event_index=0,
                type=etype,
                contract_id=cid,
                topic=_opt(body, "topic", str, where_b),
                raw_value=_raw_value(body, where_b, decode is not None),
            )
        elif etype in NFT_TYPES or etype in FT_TYPES:
            asset: Any = body.get("asset_identifier")
            if type(asset) is not str:
                _req(body, "asset_identifier", str, f"events[{i}].{etype}")
            cid = _asset_contract(asset)
            if cid not in watched:
                continue
            where_b = f"events[{i}].{etype}"
            ev = Event(
                txid="",
                tx_index=0,
                event_index=0,
                type=etype,
                contract_id=cid,
                asset_identifier=asset,
                sender=_opt(body, "sender", str, where_b),
                recipient=_opt(body, "recipient", str, where_b),
            )
            if etype in NFT_TYPES:
                ev.raw_value = _raw_value(body, where_b, decode is not None)
            else:
                ev.amount = str(_req(body, "amount", (str, int), where_b))
        else:
            where_b = f"events[{i}].{etype}"
            sender = _opt(body, "sender", str, where_b)
            recipient = _opt(body, "recipient", str, where_b)
            touched = sender if sender in watched else recipient if recipient in watched else None
            if touched is None:
                continue
            ev = Event(
                txid="",
                tx_index=0,
                event_index=0,
                type=etype,
                contract_id=touched,
                sender=sender,
                recipient=recipient,
                amount=str(_opt(body, "amount", (str, int), where_b) or "0"),
            )
        # A txid found among the (validated) transactions needs no check of its own.
        txid = e.get("txid")
        owner = txs.get(txid) if type(txid) is str else None
        if owner is None:
            txid = _hex(e, "txid", f"events[{i}]")
            raise PayloadError(f"events[{i}].txid: {txid} is not a transaction of this block")
        event_index: Any = e.get("event_index")
        if type(event_index) is not int or not 0 <= event_index <= INT4_MAX:
            _height(e, "event_index", f"events[{i}]")
        ev.txid = txid
        ev.tx_index = owner.tx_index
        ev.event_index = event_index
        if decode is not None:
            try:
                decode(ev)
            except PayloadError as exc:
                raise type(exc)(f"events[{i}]: {exc}") from None
        block.events.append(ev)
        if txid not in kept_txids:
            kept_txids[txid] = None
            if owner.raw_tx is not None:
                # Checked only for the transactions that are stored: the others' raw bytes
                # (the bulk of a block) are never used.
                check_raw_tx(owner, f"transactions[{owner.tx_index}]")

    # Chain order: events are delivered per transaction; keep (tx_index, event_index) order.
    block.events.sort(key=lambda ev: (ev.tx_index, ev.event_index))
    block.txs = [txs[t] for t in kept_txids]
    return block
