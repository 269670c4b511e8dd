"""The codec on real chain data (tests/recordings.py): every transaction of every recorded block,
microblock and mempool request decodes, re-encodes byte for byte and hashes to its txid; every
Clarity value (event values, transaction results) round-trips byte for byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stacks import clarity
from stacks.hashing import sha512_256
from stacks.transactions import decode_transaction, encode_transaction
from tests import recordings


def _txs(payload: Any) -> list[dict[str, Any]]:
    return payload.get("transactions", []) if isinstance(payload, dict) else []


def _collect(path: Path) -> tuple[list[tuple[str | None, bytes]], list[bytes]]:
    """(txid or None, raw transaction) and raw Clarity values of one recording."""
    txs: list[tuple[str | None, bytes]] = []
    values: list[bytes] = []
    for event_path, text in recordings.requests(path):
        payload = json.loads(text)
        if event_path == "/new_mempool_tx":
            txs += [(None, bytes.fromhex(t.removeprefix("0x"))) for t in payload]
            continue
        if event_path not in ("/new_block", "/new_microblocks"):
            continue
        for t in _txs(payload):
            raw = bytes.fromhex(t["raw_tx"].removeprefix("0x"))
            if raw not in (b"", b"\x00"):  # `0x00`: a burnchain operation, no Stacks bytes
                txs.append((t["txid"], raw))
            if t.get("raw_result"):
                values.append(bytes.fromhex(t["raw_result"][2:]))
        for e in payload.get("events", []):
            body = e.get(e.get("type"), {})
            if isinstance(body, dict) and isinstance(body.get("raw_value"), str):
                values.append(bytes.fromhex(body["raw_value"][2:]))
    return txs, values


@pytest.mark.parametrize("path", recordings.params())
def test_every_transaction_and_value_round_trips(path: Path) -> None:
    txs, values = _collect(path)
    assert txs, "every recording holds transactions"
    for txid, raw in txs:
        tx = decode_transaction(raw)
        assert encode_transaction(tx) == raw
        if txid is not None:
            assert "0x" + sha512_256(raw).hex() == txid
    for raw in values:
        assert clarity.encode(clarity.decode(raw)) == raw
