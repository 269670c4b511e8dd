"""POST /v2/transactions to a stacks-node, and what its answer means for the outbox.

Response shapes are stacks-core's (src/net/api/posttransaction.rs and MemPoolRejection's JSON
in src/chainstate/stacks/db/blocks.rs): HTTP 200 with the txid as a JSON string when the
transaction is accepted *or the mempool already has it* (so re-sending is harmless); HTTP 400
with `{"error": "transaction rejected", "reason": <code>, "reason_data": {...}, "txid"}` when
refused.
"""

from __future__ import annotations

import contextlib
import enum
import json
from dataclasses import dataclass
from typing import Any

import httpx

# Reasons that re-sending the same signed bytes can never fix: the fee, nonce, payload and
# signature are fixed by the signer, so the outbox gives up and reports the reason.
FINAL_REASONS: frozenset[str] = frozenset(
    {
        "Serialization",
        "Deserialization",
        "SignatureValidation",
        "FeeTooLow",
        "BadNonce",  # the nonce is already used (future nonces are admitted by the node)
        "NotEnoughFunds",
        "NoSuchContract",
        "NoSuchPublicFunction",
        "BadFunctionArgument",
        "ContractAlreadyExists",
        "ConflictingNonceInMempool",  # another tx holds this nonce; only a higher fee replaces
        "BadAddressVersionByte",
        "BadTransactionVersion",
        "NoCoinbaseViaMempool",
        "NoTenureChangeViaMempool",
        "TransferRecipientCannotEqualSender",
        "TransferAmountMustBePositive",
        "PoisonMicroblocksDoNotConflict",
        "PoisonMicroblockHasUnknownPubKeyHash",
        "PoisonMicroblockIsInvalid",
    }
)
# Reasons about the node's state, not the transaction: try again later.
RETRYABLE_REASONS: frozenset[str] = frozenset(
    {
        "ServerFailureNoSuchChainTip",
        "ServerFailureDatabase",
        "ServerFailureOther",
        "TooMuchChaining",
        "TemporarilyBlacklisted",
        "EstimatorError",
    }
)


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # final
    RETRY = "retry"


@dataclass(frozen=True, slots=True)
class NodeAnswer:
    outcome: Outcome
    http_status: int | None
    reason: str | None = None
    reason_data: dict[str, Any] | None = None
    detail: str | None = None


def classify(status: int, body: bytes, txid: str) -> NodeAnswer:
    """Map one HTTP answer of POST /v2/transactions to what the outbox does next."""
    if status == 200:
        try:
            answered = json.loads(body)
        except ValueError:
            answered = None
        if isinstance(answered, str) and answered.lower().removeprefix("0x") == txid.removeprefix(
            "0x"
        ):
            return NodeAnswer(Outcome.ACCEPTED, status)
        # A 200 for another txid means a proxy or a misconfigured URL, not our node.
        return NodeAnswer(Outcome.RETRY, status, detail=f"200 with unexpected body {body[:200]!r}")
    doc: Any = None
    with contextlib.suppress(ValueError):
        doc = json.loads(body)
    reason = doc.get("reason") if isinstance(doc, dict) else None
    reason_data = doc.get("reason_data") if isinstance(doc, dict) else None
    if not isinstance(reason_data, dict):
        reason_data = None
    if status == 400 and isinstance(reason, str):
        if reason in RETRYABLE_REASONS or reason.startswith("ServerFailure"):
            return NodeAnswer(Outcome.RETRY, status, reason, reason_data, detail=reason)
        # Unknown reasons are final too: the node judged the transaction itself.
        return NodeAnswer(Outcome.REJECTED, status, reason, reason_data, detail=reason)
    # 429, 5xx, a 400 without a reason (HTTP-level error), or anything else: the transaction
    # was not judged, so it is retried (bounded by the broadcaster's attempt limit).
    return NodeAnswer(
        Outcome.RETRY,
        status,
        reason if isinstance(reason, str) else None,
        reason_data,
        detail=f"HTTP {status}: {body[:200]!r}",
    )


class NodeClient:
    def __init__(self, node_url: str, timeout_s: float = 10.0) -> None:
        self.url = node_url.rstrip("/") + "/v2/transactions"
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def post(self, raw: bytes, txid: str) -> NodeAnswer:
        try:
            response = await self._client.post(
                self.url, content=raw, headers={"content-type": "application/octet-stream"}
            )
        except httpx.HTTPError as exc:
            return NodeAnswer(Outcome.RETRY, None, detail=f"{type(exc).__name__}: {exc}")
        return classify(response.status_code, response.content, txid)

    async def aclose(self) -> None:
        await self._client.aclose()
