"""Transaction decoder: malformed input, tampering, payloads the reference cannot build."""

from __future__ import annotations

import dataclasses
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stacks import transactions
from stacks.transactions import (
    MultiSigCondition,
    PoisonMicroblockPayload,
    TransactionDecodeError,
    decode_transaction,
    decode_transaction_hex,
    encode_transaction,
    summarize,
    verify_signatures,
)
from tests.stacks.vectors import load

TRANSACTIONS = {v["name"]: v for v in load("transactions")}
TRANSFER = bytes.fromhex(TRANSACTIONS["stx transfer testnet #1"]["hex"])
CALL = bytes.fromhex(TRANSACTIONS["contract call stx+ft eq"]["hex"])
MULTISIG = bytes.fromhex(TRANSACTIONS["multisig p2sh 2-of-3"]["hex"])
# version, chain id, auth type; then the origin's hash mode, signer, nonce, fee, key encoding
HASH_MODE_AT = 6
KEY_ENCODING_AT = 6 + 1 + 20 + 8 + 8
ANCHOR_AT = KEY_ENCODING_AT + 1 + 65


def _patched(data: bytes, at: int, value: int) -> bytes:
    out = bytearray(data)
    out[at] = value
    return bytes(out)


CASES = [
    ("empty", b"", "truncated transaction version"),
    ("bad version", _patched(TRANSFER, 0, 0x01), "unknown transaction version"),
    ("bad auth type", _patched(TRANSFER, 5, 0x06), "unknown auth type"),
    ("bad hash mode", _patched(TRANSFER, HASH_MODE_AT, 0x04), "unknown hash mode"),
    ("bad key encoding", _patched(TRANSFER, KEY_ENCODING_AT, 0x02), "unknown key encoding"),
    (
        "p2wpkh uncompressed",
        _patched(_patched(TRANSFER, HASH_MODE_AT, 2), KEY_ENCODING_AT, 1),
        "P2WPKH",
    ),
    ("bad anchor mode", _patched(TRANSFER, ANCHOR_AT, 0x09), "unknown anchor mode"),
    (
        "bad post-condition mode",
        _patched(TRANSFER, ANCHOR_AT + 1, 0x00),
        "unknown post-condition mode",
    ),
    ("huge post-condition count", TRANSFER[: ANCHOR_AT + 2] + b"\xff\xff\xff\xff", "cannot fit"),
    ("bad payload type", TRANSFER[: ANCHOR_AT + 6] + b"\x09", "unknown payload type"),
    ("truncated memo", TRANSFER[:-1], "truncated memo"),
    ("trailing byte", TRANSFER + b"\x00", "after the transaction"),
    ("truncated signature", TRANSFER[: KEY_ENCODING_AT + 10], "truncated signature"),
    ("bad post-condition type", _patched(CALL, ANCHOR_AT + 6, 0x07), "unknown post-condition type"),
    ("bad principal type", _patched(CALL, ANCHOR_AT + 7, 0x04), "post-condition principal type"),
    (
        "bad multisig field",
        _patched(MULTISIG, HASH_MODE_AT + 1 + 20 + 16 + 4, 0x09),
        "auth field type",
    ),
    ("bad clarity arg", CALL[:-1], "bad Clarity value in argument"),
]


@pytest.mark.parametrize(
    ("data", "needle"), [(d, n) for _, d, n in CASES], ids=[c[0] for c in CASES]
)
def test_malformed_transactions_raise_typed_error(data: bytes, needle: str) -> None:
    with pytest.raises(TransactionDecodeError, match=needle) as info:
        decode_transaction(data)
    assert 0 <= info.value.offset <= len(data)


def test_bad_hex_is_a_decode_error() -> None:
    with pytest.raises(TransactionDecodeError, match="not a hex"):
        decode_transaction_hex("0xnothex")


def test_contract_call_with_bad_contract_name() -> None:
    tx = decode_transaction(CALL)
    offset = CALL.index(b"\x0arec-market")
    with pytest.raises(TransactionDecodeError, match="invalid contract name"):
        decode_transaction(_patched(CALL, offset + 1, ord("9")))
    assert tx.payload_kind == "contract-call"


def test_poison_microblock_round_trip_follows_stacks_core_layout() -> None:
    # @stacks/transactions writes no body here; stacks-core carries two microblock headers.
    base = decode_transaction(TRANSFER)
    headers = PoisonMicroblockPayload(bytes(range(132)), bytes(reversed(range(132))))
    tx = dataclasses.replace(base, payload=headers)
    raw = encode_transaction(tx)
    assert decode_transaction(raw) == tx
    with pytest.raises(TransactionDecodeError, match="microblock header"):
        decode_transaction(raw[:-1])
    assert verify_signatures(decode_transaction(raw)).ok is False  # payload changed after signing


def test_changing_any_signed_field_breaks_the_signature() -> None:
    tx = decode_transaction(CALL)
    assert verify_signatures(tx).ok
    for changed in (
        dataclasses.replace(tx, chain_id=tx.chain_id + 1),
        dataclasses.replace(tx, post_condition_mode=1),
        dataclasses.replace(tx, post_conditions=tx.post_conditions[:1]),
        dataclasses.replace(
            tx,
            auth=dataclasses.replace(
                tx.auth, origin=dataclasses.replace(tx.auth.origin, nonce=tx.auth.origin.nonce + 1)
            ),
        ),
    ):
        check = verify_signatures(changed)
        assert check.ok is False
        assert check.reason and check.signers[0].ok is False


def test_multisig_with_a_missing_signature_fails() -> None:
    tx = decode_transaction(MULTISIG)
    origin = tx.auth.origin
    assert verify_signatures(tx).ok
    assert isinstance(origin, MultiSigCondition)
    fewer = dataclasses.replace(origin, fields=origin.fields[1:])
    check = verify_signatures(
        dataclasses.replace(tx, auth=dataclasses.replace(tx.auth, origin=fewer))
    )
    assert check.ok is False
    assert "signatures given" in (check.reason or "") or "hash to" in (check.reason or "")


def test_bad_recovery_id_is_reported_not_raised() -> None:
    data = bytearray(TRANSFER)
    data[KEY_ENCODING_AT + 1] = 7
    check = verify_signatures(decode_transaction(bytes(data)))
    assert check.ok is False
    assert "recovery id" in (check.reason or "")


@settings(max_examples=600, deadline=None)
@given(st.sampled_from([TRANSFER, CALL, MULTISIG]), st.data())
def test_corrupted_transactions_only_raise_decode_errors(base: bytes, data: st.DataObject) -> None:
    raw = bytearray(base)
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        try:
            tx = decode_transaction(candidate)
        except TransactionDecodeError:
            continue
        assert encode_transaction(tx) == candidate
        verify_signatures(tx)  # must report, never raise


def _outcome(data: bytes) -> object:
    try:
        return decode_transaction(data)
    except TransactionDecodeError as exc:
        return ("error", str(exc))


@settings(max_examples=600, deadline=None)
@given(st.sampled_from([TRANSFER, CALL, MULTISIG]), st.data())
def test_single_sig_head_in_one_unpack_decodes_as_field_by_field(
    base: bytes, data: st.DataObject
) -> None:
    """The one-unpack reading of a standard single-sig head gives the same transaction, or the
    same error, as reading it field by field, whatever the head's bytes."""
    raw = bytearray(base)
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, ANCHOR_AT + 1))] = data.draw(
            st.sampled_from([0, 1, 2, 3, 4, 5, 0x80, 0xFF, data.draw(st.integers(0, 255))])
        )
    candidate = bytes(raw[: data.draw(st.integers(0, len(raw)))])
    fast = _outcome(candidate)
    with mock.patch.object(transactions, "_single_sig_head", lambda data: None):
        assert _outcome(candidate) == fast


@pytest.mark.parametrize("vector", load("transactions"), ids=lambda v: v["name"])
def test_summary_matches_what_stacks_js_built(vector: dict) -> None:
    """The ingest summary (sender, contract, function, fee paid, nonce) of every vector equals
    the fields `@stacks/transactions` built it with."""
    s = summarize(decode_transaction(bytes.fromhex(vector["hex"])))
    payload = vector["payload"]
    assert s.sender == vector["origin"]["signer_address"]
    assert s.nonce == int(vector["origin"]["nonce"])
    assert s.fee == int((vector["sponsor"] or vector["origin"])["fee"])
    if payload["kind"] == "contract-call":
        assert (s.contract_id, s.function_name) == (payload["contract"], payload["function_name"])
    elif "smart-contract" in payload["kind"]:
        assert (s.contract_id, s.function_name) == (f"{s.sender}.{payload['contract_name']}", None)
    else:
        assert (s.contract_id, s.function_name) == (None, None)
