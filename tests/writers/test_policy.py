"""The relay's checks on transactions signed by @stacks/transactions, and on tampered copies."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr

from infra.config import RelaySettings, Settings
from stacks.transactions import decode_transaction
from tests.stacks.vectors import load
from tests.writers.conftest import ACCEPTED, REFUSED, VECTORS
from writers.errors import Reject, SubmissionRejected
from writers.policy import Policy, parse_body

POLICY = Policy.from_settings(
    Settings(database_url=SecretStr("postgresql://unused/x"), network="testnet")
)


def code_of(raw: bytes) -> str:
    try:
        POLICY.check(raw)
    except SubmissionRejected as exc:
        return exc.reason.code
    return "accepted"


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_vector_gets_its_expected_answer(vector: dict[str, Any]) -> None:
    assert code_of(bytes.fromhex(vector["hex"])) == vector["expect"]


def test_accepted_facts_match_what_was_signed() -> None:
    buy = next(v for v in ACCEPTED if v["name"] == "single-sig buy, deny mode")
    tx = POLICY.check(bytes.fromhex(buy["hex"]))
    assert tx.txid == "0x" + buy["txid"]
    assert (tx.sender, tx.contract_id, tx.function_name, tx.fee, tx.nonce) == (
        buy["sender"],
        buy["contract_id"],
        buy["function_name"],
        buy["fee"],
        buy["nonce"],
    )
    sponsored = next(v for v in ACCEPTED if v["name"] == "sponsored single-sig buy")
    facts = POLICY.check(bytes.fromhex(sponsored["hex"]))
    assert facts.sponsor == sponsored["sponsor"]
    assert facts.fee == sponsored["fee"]  # the sponsor pays


def _offsets(raw: bytes) -> dict[str, int]:
    """Byte offsets in a standard single-sig transaction of the payer's fee (checked against the
    decoded fee), a byte inside its signature, and the last payload byte."""
    tx = decode_transaction(raw)
    fee = tx.auth.origin.fee if tx.auth.sponsor is None else tx.auth.sponsor.fee
    # Standard single-sig origin: version 1, chain 4, auth 1, hash mode 1, signer 20, nonce 8.
    fee_at = 1 + 4 + 1 + 1 + 20 + 8
    assert int.from_bytes(raw[fee_at : fee_at + 8], "big") == fee
    return {"fee": fee_at + 7, "signature": fee_at + 8 + 1 + 10, "payload": len(raw) - 1}


@pytest.mark.parametrize("part", ["fee", "signature", "payload"])
@pytest.mark.parametrize(
    "vector",
    [v for v in ACCEPTED if v["hex"][10:14] == "0400"],
    ids=lambda v: v["name"],
)
def test_a_flipped_byte_breaks_the_signature(vector: dict[str, Any], part: str) -> None:
    raw = bytearray(bytes.fromhex(vector["hex"]))
    at = _offsets(bytes(raw))[part]
    raw[at] ^= 0x01
    assert code_of(bytes(raw)) in {"bad_signature", "undecodable"}
    if part != "payload":  # a changed payload byte may also no longer decode
        assert code_of(bytes(raw)) == "bad_signature"


def test_tampered_multisig_and_sponsor_signatures_are_refused() -> None:
    for name in ("multisig 2-of-3 update-price", "sponsored single-sig buy"):
        raw = bytearray(bytes.fromhex(next(v for v in ACCEPTED if v["name"] == name)["hex"]))
        raw[-70] ^= 0x01  # inside the last Clarity argument: signed by everyone
        assert code_of(bytes(raw)) in {"bad_signature", "undecodable"}
        sponsored = bytes.fromhex(next(v for v in ACCEPTED if v["name"] == name)["hex"])
        if name.startswith("sponsored"):
            # The sponsor's signature is the last 65 bytes of its condition; find it by decoding.
            tx = decode_transaction(sponsored)
            assert tx.auth.sponsor is not None
            sig = tx.auth.sponsor.signature  # type: ignore[union-attr]
            at = sponsored.index(sig)
            forged = bytearray(sponsored)
            forged[at + 5] ^= 0x01
            assert code_of(bytes(forged)) == "bad_signature"


@pytest.mark.parametrize("cut", [1, 10, 100])
def test_truncated_and_padded_transactions_do_not_decode(cut: int) -> None:
    raw = bytes.fromhex(ACCEPTED[0]["hex"])
    assert code_of(raw[:-cut]) == "undecodable"
    assert code_of(raw + b"\x00" * cut) == "undecodable"


def test_every_refused_vector_keeps_its_txid_in_the_error() -> None:
    for vector in REFUSED:
        with pytest.raises(SubmissionRejected) as info:
            POLICY.check(bytes.fromhex(vector["hex"]))
        assert info.value.txid == "0x" + vector["txid"]


def test_body_forms_stacks_node_accepts() -> None:
    raw = bytes.fromhex(ACCEPTED[0]["hex"])
    hexed = raw.hex()
    assert parse_body(raw, "application/octet-stream") == raw
    assert parse_body(json.dumps({"tx": "0x" + hexed}).encode(), "application/json") == raw
    assert parse_body(json.dumps(hexed).encode(), "application/json; charset=utf-8") == raw


@pytest.mark.parametrize(
    ("body", "ctype", "reason"),
    [
        (b"{not json", "application/json", Reject.MALFORMED_BODY),
        (b'{"tx": "zz"}', "application/json", Reject.MALFORMED_BODY),
        (b'{"tx": 5}', "application/json", Reject.MALFORMED_BODY),
        (b'{"tx": "00", "attachment": "00"}', "application/json", Reject.MALFORMED_BODY),
        (b'""', "application/json", Reject.MALFORMED_BODY),
        (b"", "application/octet-stream", Reject.MALFORMED_BODY),
        (b"00", "text/plain", Reject.UNSUPPORTED_MEDIA_TYPE),
    ],
)
def test_malformed_bodies(body: bytes, ctype: str, reason: Reject) -> None:
    with pytest.raises(SubmissionRejected) as info:
        parse_body(body, ctype)
    assert info.value.reason is reason


def test_whitelist_is_configurable() -> None:
    settings = Settings(
        database_url=SecretStr("postgresql://unused/x"),
        relay=RelaySettings(allowed_functions=["verification.register-facility"]),
    )
    narrow = Policy.from_settings(settings)
    buy = bytes.fromhex(ACCEPTED[0]["hex"])
    with pytest.raises(SubmissionRejected) as info:
        narrow.check(buy)
    assert info.value.reason is Reject.FUNCTION_NOT_ALLOWED


def test_mainnet_relay_takes_mainnet_calls_to_contracts_at_real_addresses() -> None:
    """A mainnet transaction signed by @stacks/transactions, to a contract listed by its fully
    qualified id, is accepted by a mainnet relay and refused by a testnet one (and a testnet
    transaction by the mainnet relay)."""
    vectors = {v["name"]: v for v in load("transactions")}
    call = vectors["contract call mainnet rich args"]
    contract, function = call["payload"]["contract"], call["payload"]["function_name"]
    name = contract.rpartition(".")[2]
    mainnet = Policy.from_settings(
        Settings(
            database_url=SecretStr("postgresql://unused/x"),
            network="mainnet",
            contracts=[contract],
            relay=RelaySettings(allowed_functions=[f"{name}.{function}"]),
        )
    )
    facts = mainnet.check(bytes.fromhex(call["hex"]))
    assert (facts.contract_id, facts.function_name) == (contract, function)
    with pytest.raises(SubmissionRejected) as refused:
        POLICY.check(bytes.fromhex(call["hex"]))
    assert refused.value.reason is Reject.WRONG_NETWORK
    testnet_tx = next(v for v in VECTORS if v["expect"] == "accepted")
    with pytest.raises(SubmissionRejected) as refused:
        mainnet.check(bytes.fromhex(testnet_tx["hex"]))
    assert refused.value.reason is Reject.WRONG_NETWORK
