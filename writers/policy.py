"""What the relay accepts: the checks between raw bytes and the outbox.

Pure functions over the codec in `stacks.transactions`; no I/O, so every rule is testable
alone and the benchmark measures exactly what the endpoint runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from infra.config import Settings
from stacks.transactions import (
    TX_VERSION_MAINNET,
    TX_VERSION_TESTNET,
    ContractCallPayload,
    Transaction,
    TransactionDecodeError,
    decode_transaction,
    verify_signatures,
)
from writers.errors import Reject, SubmissionRejected

POST_CONDITION_DENY = 2

# Whitelisted functions that can never move a fungible or non-fungible asset or STX, so a
# wallet may sign them in `allow` mode. Every other function must be signed in `deny` mode:
# then the chain aborts the call if it moves anything the signer did not list. Unknown means
# "may move assets" so that a new whitelisted function is safe by default.
NON_ASSET_MOVING: frozenset[str] = frozenset(
    {
        "verification.register-facility",
        "verification.submit-report",
        "verification.attest-report",
        "marketplace.update-price",
    }
)


@dataclass(frozen=True, slots=True)
class AcceptedTx:
    """The facts of a transaction that passed every check (what the outbox row records)."""

    txid: str  # 0x-prefixed lowercase hex
    raw: bytes
    sender: str
    sponsor: str | None
    nonce: int
    fee: int  # what the payer (the sponsor, when sponsored) pays
    contract_id: str
    function_name: str
    post_condition_mode: int


@dataclass(frozen=True, slots=True)
class Policy:
    network_version: int
    chain_id: int
    watched: frozenset[str]  # fully-qualified contract ids
    allowed: frozenset[tuple[str, str]]  # (fully-qualified contract id, function name)
    asset_moving_exempt: frozenset[tuple[str, str]]
    min_fee: int
    max_fee: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            network_version=TX_VERSION_MAINNET
            if settings.network == "mainnet"
            else TX_VERSION_TESTNET,
            chain_id=settings.chain_id,
            watched=settings.watched_contracts,
            allowed=_qualify(settings, settings.relay.allowed_functions),
            asset_moving_exempt=_qualify(settings, NON_ASSET_MOVING),
            min_fee=settings.relay.min_fee,
            max_fee=settings.relay.max_fee,
        )

    def check(self, raw: bytes) -> AcceptedTx:
        """Every check, cheapest and most basic first; raises SubmissionRejected."""
        try:
            tx = decode_transaction(raw)
        except TransactionDecodeError as exc:
            raise SubmissionRejected(Reject.UNDECODABLE, str(exc)) from None
        txid = "0x" + tx.txid
        if tx.version != self.network_version:
            raise SubmissionRejected(
                Reject.WRONG_NETWORK,
                f"transaction version 0x{tx.version:02x} is for {tx.network}; "
                f"this relay serves version 0x{self.network_version:02x}",
                txid,
            )
        if tx.chain_id != self.chain_id:
            raise SubmissionRejected(
                Reject.WRONG_CHAIN_ID,
                f"chain id 0x{tx.chain_id:08x}; this relay serves 0x{self.chain_id:08x}",
                txid,
            )
        # Signatures before policy: a forged or tampered transaction is reported as such, never
        # as a policy question about fields nobody actually signed.
        check = verify_signatures(tx)
        if not check.ok:
            raise SubmissionRejected(Reject.BAD_SIGNATURE, check.reason or "invalid", txid)
        payload = tx.payload
        if not isinstance(payload, ContractCallPayload):
            raise SubmissionRejected(
                Reject.PAYLOAD_NOT_ALLOWED,
                f"{tx.payload_kind} transactions are not relayed; only contract calls",
                txid,
            )
        contract = payload.contract
        if contract not in self.watched:
            raise SubmissionRejected(
                Reject.CONTRACT_NOT_ALLOWED, f"{contract} is not a contract of this market", txid
            )
        if (contract, payload.function_name) not in self.allowed:
            raise SubmissionRejected(
                Reject.FUNCTION_NOT_ALLOWED,
                f"{contract}::{payload.function_name} is not relayed",
                txid,
            )
        payer = tx.auth.sponsor or tx.auth.origin
        if payer.fee < self.min_fee:
            raise SubmissionRejected(
                Reject.FEE_TOO_LOW, f"fee {payer.fee} is below the minimum {self.min_fee}", txid
            )
        if payer.fee > self.max_fee:
            raise SubmissionRejected(
                Reject.FEE_TOO_HIGH, f"fee {payer.fee} is above the maximum {self.max_fee}", txid
            )
        if (
            tx.post_condition_mode != POST_CONDITION_DENY
            and (contract, payload.function_name) not in self.asset_moving_exempt
        ):
            raise SubmissionRejected(
                Reject.POST_CONDITION_MODE,
                f"{payload.function_name} can move assets: sign it with post-condition mode deny",
                txid,
            )
        return _facts(tx, txid, raw, contract, payload.function_name)


def _facts(tx: Transaction, txid: str, raw: bytes, contract: str, fn: str) -> AcceptedTx:
    sponsor = tx.auth.sponsor
    return AcceptedTx(
        txid=txid,
        raw=raw,
        sender=tx.sender_address,
        sponsor=None if sponsor is None else tx.signer_address(sponsor),
        nonce=tx.auth.origin.nonce,
        fee=(sponsor or tx.auth.origin).fee,
        contract_id=contract,
        function_name=fn,
        post_condition_mode=tx.post_condition_mode,
    )


def _qualify(settings: Settings, names: Iterable[str]) -> frozenset[tuple[str, str]]:
    """`contract.function` (contract short or fully qualified) -> (contract id, function)."""
    out = set()
    for name in names:
        contract, _, function = name.rpartition(".")
        if not contract or not function:
            raise ValueError(f"allowed function {name!r} is not 'contract.function'")
        out.add((settings.contract_id(contract), function))
    return frozenset(out)


def parse_body(body: bytes, content_type: str) -> bytes:
    """The raw transaction from a request body, in any form stacks-node's POST /v2/transactions
    takes: `application/octet-stream` bytes, or JSON that is either a hex string or
    `{"tx": hex}` (what @stacks/transactions' broadcastTransaction sends)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/octet-stream":
        if not body:
            raise SubmissionRejected(Reject.MALFORMED_BODY, "empty body")
        return body
    if media != "application/json":
        raise SubmissionRejected(
            Reject.UNSUPPORTED_MEDIA_TYPE,
            'send application/json ({"tx": "0x.."} or a hex string) or application/octet-stream',
        )
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise SubmissionRejected(Reject.MALFORMED_BODY, "body is not valid JSON") from None
    if isinstance(doc, dict):
        if doc.get("attachment") is not None:
            raise SubmissionRejected(Reject.MALFORMED_BODY, "attachments are not relayed")
        doc = doc.get("tx")
    if not isinstance(doc, str):
        raise SubmissionRejected(
            Reject.MALFORMED_BODY, 'expected {"tx": "<hex>"} or a JSON hex string'
        )
    text = doc[2:] if doc[:2] in ("0x", "0X") else doc
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise SubmissionRejected(Reject.MALFORMED_BODY, "tx is not a hex string") from None
    if not raw:
        raise SubmissionRejected(Reject.MALFORMED_BODY, "empty transaction")
    return raw
