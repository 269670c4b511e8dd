"""Every vector produced by @stacks/transactions must decode, re-encode and verify exactly."""

from __future__ import annotations

from typing import Any

import pytest

from stacks import c32, clarity
from stacks.transactions import (
    decode_transaction_hex,
    transaction_json,
    verify_signatures,
)
from tests.stacks.vectors import ids, load

CLARITY = load("clarity")
ADDRESSES = load("addresses")
TRANSACTIONS = load("transactions")


def test_vector_counts_meet_the_brief() -> None:
    assert len(CLARITY) >= 200
    assert len(ADDRESSES) >= 50
    assert len([v for v in TRANSACTIONS if v["signature_valid"]]) >= 30
    assert any(not v["signature_valid"] for v in TRANSACTIONS)


@pytest.mark.parametrize("vector", CLARITY, ids=ids(CLARITY))
def test_clarity_vector(vector: dict[str, Any]) -> None:
    value = clarity.decode_hex(vector["hex"])
    assert clarity.to_json(value) == vector["json"]
    assert clarity.encode_hex(value) == vector["hex"]
    assert clarity.from_json(vector["json"]) == value
    assert clarity.decode_hex_to_python(vector["hex"]) == clarity.to_python(value)


@pytest.mark.parametrize("vector", ADDRESSES, ids=ids(ADDRESSES, "address"))
def test_address_vector(vector: dict[str, Any]) -> None:
    hash160 = bytes.fromhex(vector["hash160"])
    assert c32.address_from_hash160(vector["version"], hash160) == vector["address"]
    assert c32.address_to_hash160(vector["address"]) == (vector["version"], hash160)
    assert vector["address"].startswith(vector["prefix"])


@pytest.mark.parametrize("vector", TRANSACTIONS, ids=ids(TRANSACTIONS))
def test_transaction_vector(vector: dict[str, Any]) -> None:
    tx = decode_transaction_hex(vector["hex"])
    assert tx.serialize().hex() == vector["hex"]
    assert tx.txid == vector["txid"]
    described = transaction_json(tx)
    for key in (
        "version",
        "network",
        "chain_id",
        "auth_type",
        "origin",
        "sponsor",
        "anchor_mode",
        "post_condition_mode",
        "post_conditions",
    ):
        assert described[key] == vector[key], key
    payload = dict(described["payload"])
    payload.pop("memo", None)  # the reference decoder reports only the memo text
    assert payload == vector["payload"]
    check = verify_signatures(tx)
    assert check.ok is vector["signature_valid"], check.reason
    assert check.signers[0].address == vector["origin"]["signer_address"]
    if not check.ok:
        assert check.reason


def test_sponsored_vectors_check_both_signers() -> None:
    sponsored = [v for v in TRANSACTIONS if v["auth_type"] == "sponsored" and v["signature_valid"]]
    assert sponsored
    for vector in sponsored:
        check = verify_signatures(decode_transaction_hex(vector["hex"]))
        assert [s.role for s in check.signers] == ["origin", "sponsor"]
        assert check.signers[1].address == vector["sponsor"]["signer_address"]
