"""`recchain stacks ...`: decode and encode Clarity values, transactions and addresses."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# `stacks` is imported by the handlers only: building the CLI's parser must stay cheap.


def _arg(value: str) -> str:
    # `-` reads the argument from stdin so long hex strings can be piped in.
    return sys.stdin.read().strip() if value == "-" else value.strip()


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _decode_value(args: argparse.Namespace) -> int:
    from stacks import clarity

    value = clarity.decode_hex(_arg(args.hex))
    if args.json:
        _print_json(clarity.to_json(value))
    else:
        print(_readable(clarity.to_json(value)))
    return 0


def _readable(obj: dict[str, Any]) -> str:
    kind: str = obj["type"]
    value: Any = obj.get("value")
    if kind in ("uint",):
        return f"u{value}"
    if kind in ("int", "buffer"):
        return str(value)
    if kind == "bool":
        return "true" if value else "false"
    if kind in ("string-ascii", "string-utf8"):
        return ("u" if kind == "string-utf8" else "") + json.dumps(value, ensure_ascii=False)
    if kind == "principal":
        return f"'{value}"
    if kind == "none":
        return "none"
    if kind in ("some", "ok", "err"):
        return f"({kind} {_readable(value)})"
    if kind == "list":
        return "(list" + "".join(" " + _readable(v) for v in value) + ")"
    return "{" + ", ".join(f"{k}: {_readable(v)}" for k, v in value.items()) + "}"


def _encode_value(args: argparse.Namespace) -> int:
    from stacks import clarity

    try:
        obj = json.loads(_arg(args.json_value))
    except json.JSONDecodeError as exc:
        return _fail(f"not valid JSON: {exc}")
    print(clarity.encode_hex(clarity.from_json(obj)))
    return 0


def _decode_tx(args: argparse.Namespace) -> int:
    from stacks.transactions import decode_transaction_hex, transaction_json, verify_signatures

    tx = decode_transaction_hex(_arg(args.hex))
    check = verify_signatures(tx)
    described = transaction_json(tx, check)
    if args.json:
        _print_json(described)
        return 0
    origin = described["origin"]
    lines = [
        f"txid:            0x{described['txid']}",
        f"network:         {described['network']} (chain id 0x{described['chain_id']:08x})",
        f"auth:            {described['auth_type']}",
        f"origin:          {origin['signer_address']} ({origin['hash_mode_name']})"
        f" nonce {origin['nonce']} fee {origin['fee']}",
    ]
    if described["sponsor"] is not None:
        sponsor = described["sponsor"]
        lines.append(
            f"sponsor:         {sponsor['signer_address']} nonce {sponsor['nonce']}"
            f" fee {sponsor['fee']}"
        )
    validity = "yes" if check.ok else f"NO ({check.reason})"
    lines += [
        f"signature_valid: {validity}",
        f"anchor mode:     {described['anchor_mode']}",
        f"post-conditions: mode {described['post_condition_mode']},"
        f" {len(described['post_conditions'])} condition(s)",
    ]
    for pc in described["post_conditions"]:
        amount = pc.get("amount", "")
        what = pc.get("asset", "STX")
        asset_id = f" {_readable(pc['asset_id'])}" if "asset_id" in pc else ""
        lines.append(f"  {pc['principal']} {pc['condition']} {amount} {what}{asset_id}".rstrip())
    payload = described["payload"]
    lines.append(f"payload:         {payload['kind']}")
    if payload["kind"] == "contract-call":
        lines.append(f"  {payload['contract']}::{payload['function_name']}")
        lines += [f"  arg {i}: {_readable(a)}" for i, a in enumerate(payload["args"])]
    else:
        lines += [f"  {k}: {v}" for k, v in payload.items() if k != "kind"]
    print("\n".join(lines))
    return 0


def _address_decode(args: argparse.Namespace) -> int:
    from stacks import c32

    parsed = c32.parse_principal(_arg(args.address))
    out = {
        "version": parsed.version,
        "hash160": parsed.hash160.hex(),
        "network": "mainnet" if parsed.version in c32.MAINNET_VERSIONS else "testnet",
        "contract_name": parsed.contract_name,
    }
    if args.json:
        _print_json(out)
    else:
        print(
            f"version {out['version']} hash160 {out['hash160']}"
            + (f" contract {parsed.contract_name}" if parsed.contract_name else "")
        )
    return 0


def _address_encode(args: argparse.Namespace) -> int:
    from stacks import c32

    text = _arg(args.hash160)
    try:
        raw = bytes.fromhex(text[2:] if text.startswith("0x") else text)
    except ValueError:
        return _fail(f"hash160 is not hex: {text!r}")
    print(c32.address_from_hash160(args.version, raw))
    return 0


def _guarded(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        from stacks.c32 import AddressError
        from stacks.clarity import ClarityDecodeError, ClarityEncodeError, ClarityJsonError
        from stacks.transactions import TransactionDecodeError

        try:
            return int(fn(args))
        except (
            ClarityDecodeError,
            ClarityEncodeError,
            ClarityJsonError,
            TransactionDecodeError,
            AddressError,
        ) as exc:
            return _fail(str(exc))

    return run


def _version(text: str) -> int:
    value = int(text, 0)
    if not 0 <= value < 32:
        raise argparse.ArgumentTypeError("version must be 0..31 (22 SP, 20 SM, 26 ST, 21 SN)")
    return value


def register(sub: Any) -> None:
    parser = sub.add_parser("stacks", help="decode/encode Stacks wire formats")
    cmds = parser.add_subparsers(dest="stacks_command", metavar="ACTION")
    cmds.required = True

    p = cmds.add_parser("decode-value", help="decode a serialized Clarity value (hex)")
    p.add_argument("hex", help="0x-prefixed hex, or - for stdin")
    p.add_argument("--json", action="store_true", help="print the typed JSON form")
    p.set_defaults(handler=_guarded(_decode_value))

    p = cmds.add_parser("encode-value", help="encode a typed-JSON Clarity value to hex")
    p.add_argument("json_value", metavar="JSON", help='e.g. {"type":"uint","value":"5"}, or -')
    p.set_defaults(handler=_guarded(_encode_value))

    p = cmds.add_parser("decode-tx", help="decode a raw transaction and check its signatures")
    p.add_argument("hex", help="raw transaction hex, or - for stdin")
    p.add_argument("--json", action="store_true", help="print the decoded transaction as JSON")
    p.set_defaults(handler=_guarded(_decode_tx))

    p = cmds.add_parser("address", help="decode or encode c32check addresses")
    acts = p.add_subparsers(dest="address_command", metavar="decode|encode")
    acts.required = True
    a = acts.add_parser("decode", help="ADDR[.contract] to version and hash160")
    a.add_argument("address", help="c32check address, optionally .contract-name, or -")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.set_defaults(handler=_guarded(_address_decode))
    a = acts.add_parser("encode", help="version and hash160 to an address")
    a.add_argument("version", type=_version, help="22 SP, 20 SM, 26 ST, 21 SN")
    a.add_argument("hash160", help="20-byte hex, or -")
    a.set_defaults(handler=_guarded(_address_encode))
