"""The print-event schemas of contracts/EVENTS.md, and the decoding step of the pipeline.

Values are decoded with the project codec's fast path straight to plain Python (`(some v)` -> v,
`none` -> None, principals as strings). Each known kind is then checked field by field, so a
handler can index its tuple without guarding every access, and a value that does not match the
contract is refused before anything is written.
"""

from __future__ import annotations

from typing import Any

from indexer.block import FT_TYPES, NFT_TYPES, Event
from indexer.errors import EventSchemaError, PayloadError
from stacks.clarity import ClarityDecodeError, decode_to_python

# Field type codes: U uint, I int, S string, P principal, B bool, X buffer, L list; a trailing
# "?" means optional (None allowed).
_FACILITY = {
    "facility-id": "U", "actor": "P", "reason": "S", "owner": "P", "name": "S", "country": "S",
    "subdivision": "S", "market-boundary": "S", "grid-zone": "S", "latitude": "I",
    "longitude": "I", "energy-source": "S", "technology": "S", "capacity-w": "U",
    "commissioning-date": "U", "repowering-date": "U?", "public-support": "B", "irec-code": "S",
    "meter-gsrn": "S", "metadata-uri": "S", "status": "S", "verifier": "P?",
    "registered-at": "U",
}  # fmt: skip
_REPORT = {
    "report-id": "U", "actor": "P", "facility-id": "U", "period-start": "U", "period-end": "U",
    "wh": "U", "evidence-hash": "X?", "submitter": "P", "verifier": "P?", "revoked-by": "P?",
    "status": "S", "reason": "S", "token-id": "U?", "submitted-at": "U", "updated-at": "U",
}  # fmt: skip
_CERTIFICATE = {
    "token-id": "U", "owner": "P", "facility-id": "U", "report-id": "U", "period-start": "U",
    "period-end": "U", "vintage": "U", "wh": "U", "serial-start": "U", "serial-end": "U",
    "token-uri": "S", "status": "S", "parent-id": "U?", "issued-at": "U",
}  # fmt: skip

SCHEMAS: dict[str, dict[str, str]] = {
    "verifier-added": {"verifier": "P", "name": "S", "active": "B"},
    "verifier-revoked": {"verifier": "P", "name": "S", "active": "B"},
    **{k: _FACILITY for k in (
        "facility-registered", "facility-approved", "facility-suspended",
        "facility-reactivated", "facility-terminated",
    )},
    **{k: _REPORT for k in (
        "report-submitted", "report-attested", "report-rejected", "report-withdrawn",
        "report-revoked", "report-minted",
    )},
    "certificate-minted": _CERTIFICATE,
    "certificate-transferred": {
        "token-id": "U", "sender": "P", "recipient": "P", "kind": "S", "status": "S",
    },
    "certificate-split": {
        "parent-id": "U", "owner": "P", "wh": "U", "serial-start": "U", "serial-end": "U",
        "children": "L",
    },
    "certificate-retired": {
        "token-id": "U", "owner": "P", "wh": "U", "facility-id": "U", "report-id": "U",
        "vintage": "U", "period-start": "U", "period-end": "U", "serial-start": "U",
        "serial-end": "U", "beneficiary-name": "S", "beneficiary": "P?",
        "consumption-country": "S", "consumption-subdivision": "S",
        "consumption-market-boundary": "S", "claim-period-start": "U", "claim-period-end": "U",
        "reporting-year": "U", "purpose": "S", "retired-at": "U",
    },
    "certificate-revoked": {
        "token-id": "U", "owner": "P", "verifier": "P", "reason": "S", "previous-status": "S",
        "status": "S",
    },
    "listing-created": {
        "listing-id": "U", "kind": "S", "token-id": "U", "seller": "P", "currency": "P?",
        "price": "U", "reserve-price": "U", "min-increment": "U", "start-height": "U",
        "end-height": "U", "status": "S", "highest-bidder": "P?", "highest-bid": "U",
        "bid-count": "U",
    },
    "listing-price-updated": {
        "listing-id": "U", "token-id": "U", "seller": "P", "old-price": "U", "new-price": "U",
        "currency": "P?",
    },
    "listing-cancelled": {
        "listing-id": "U", "token-id": "U", "seller": "P", "kind": "S", "status": "S",
    },
    "listing-expired": {
        "listing-id": "U", "token-id": "U", "seller": "P", "kind": "S", "status": "S",
        "refunded-bidder": "P?", "refunded-amount": "U",
    },
    "bid-placed": {
        "listing-id": "U", "token-id": "U", "bidder": "P", "amount": "U", "currency": "P?",
        "bid-count": "U", "refunded-bidder": "P?", "refunded-amount": "U",
    },
    "sale": {
        "listing-id": "U", "token-id": "U", "kind": "S", "seller": "P", "buyer": "P",
        "currency": "P?", "price": "U", "fee": "U", "seller-proceeds": "U", "treasury": "P",
        "fee-bps": "U", "retired": "B", "status": "S",
    },
}  # fmt: skip
SPLIT_CHILD = {"token-id": "U", "wh": "U", "serial-start": "U", "serial-end": "U"}
SIP019 = "token-metadata-update"


_TYPES: dict[str, type] = {"U": int, "I": int, "S": str, "P": str, "B": bool, "X": bytes, "L": list}
# A schema compiled to (field, python type, optional, unsigned): checking it is then a type
# identity test per field instead of a string dispatch (it runs on every field of every event).
_Compiled = tuple[tuple[str, type, bool, bool], ...]


def _compile(schema: dict[str, str]) -> _Compiled:
    return tuple(
        (name, _TYPES[code[0]], code.endswith("?"), code[0] == "U") for name, code in schema.items()
    )


def check_fields(kind: str, value: dict[str, Any], schema: _Compiled) -> None:
    for name, typ, optional, unsigned in schema:
        try:
            v = value[name]
        except KeyError:
            raise EventSchemaError(f"{kind}: field {name!r} missing") from None
        found = type(v)
        if found is typ:
            if unsigned and v < 0:
                raise EventSchemaError(f"{kind}: field {name!r} has the wrong type (int)")
        elif not (optional and v is None):
            raise EventSchemaError(f"{kind}: field {name!r} has the wrong type ({found.__name__})")


_COMPILED: dict[str, _Compiled] = {kind: _compile(schema) for kind, schema in SCHEMAS.items()}
_SPLIT_CHILD = _compile(SPLIT_CHILD)


def decode_event(ev: Event) -> None:
    """Decode one watched event in place (sets `value` and `kind`); raises PayloadError."""
    if ev.raw_value is None:
        return
    # Strict hex (the parser leaves the check to this step): `fromhex` skips whitespace, which
    # the length comparison catches.
    digits = ev.raw_value[2:] if ev.raw_value[:2] == "0x" else ev.raw_value
    try:
        data = bytes.fromhex(digits)
    except ValueError:
        data = b""
    if len(data) * 2 != len(digits) or not digits:
        raise PayloadError("raw_value: not 0x-prefixed hex")
    try:
        value = decode_to_python(data)
    except ClarityDecodeError as exc:
        raise PayloadError(f"raw_value is not a Clarity value: {exc}") from None
    if ev.type in NFT_TYPES:
        if ev.asset_identifier is not None and type(value) is not int:
            raise EventSchemaError(f"{ev.type}: token id is not a uint")
        ev.value = value
        return
    if ev.type in FT_TYPES:
        ev.value = value
        return
    if not isinstance(value, dict):
        raise EventSchemaError(f"print from {ev.contract_id} is not a tuple")
    kind = value.get("event")
    if kind is None and value.get("notification") == SIP019:
        ev.kind = SIP019
        ev.value = value
        return
    if type(kind) is not str:
        raise EventSchemaError(f"print from {ev.contract_id} has no string 'event' field")
    schema = _COMPILED.get(kind)
    if schema is not None:
        check_fields(kind, value, schema)
        if kind == "certificate-split":
            for child in value["children"]:
                if not isinstance(child, dict):
                    raise EventSchemaError("certificate-split: a child is not a tuple")
                check_fields("certificate-split child", child, _SPLIT_CHILD)
    ev.kind = kind
    ev.value = value
