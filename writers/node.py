"""POST /v2/transactions to a stacks-node, what its answer means for the outbox, and asking the
node whether it already holds a txid.

Response shapes are stacks-core's (stackslib/src/net/api/posttransaction.rs and
MemPoolRejection's JSON in src/chainstate/stacks/db/blocks.rs): HTTP 200 with the txid as a JSON
string when the transaction is accepted *or the mempool already has it* (so re-sending is
harmless while it is there); HTTP 400 with `{"error": "transaction rejected", "reason": <code>,
"reason_data": {...}, "txid"}` when refused.

Once a mined transaction has left the node's mempool, the same bytes are judged on their nonce
and come back `BadNonce`. So a refusal is only believed after asking the node for the txid
(`lookup`): `GET /v2/transactions/unconfirmed/{txid}` (gettransaction_unconfirmed.rs: 200
`{"tx": hex, "status": "Mempool" | {"Microblock": {...}}}`, 404 when not held) and
`GET /v3/transaction/{txid}` (gettransaction.rs: 200 `{"index_block_hash", "tx", "result",
"block_height", "is_canonical"}`, 404 when unknown, 501 when the node runs without `txindex`).
"""

from __future__ import annotations

import contextlib
import enum
import json
from dataclasses import dataclass
from typing import Any

import httpx

from stacks.transactions import txid as compute_txid

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


class Presence(enum.Enum):
    PENDING = "pending"  # in the node's mempool (or an unconfirmed microblock)
    MINED = "mined"  # in a block of the node's canonical chain
    ABSENT = "absent"  # the node says it holds neither
    UNKNOWN = "unknown"  # the node could not tell (no txindex, an error, unreachable)


@dataclass(frozen=True, slots=True)
class Known:
    """What the node said about one txid."""

    presence: Presence
    index_block_hash: str | None = None
    block_height: int | None = None
    detail: str = ""

    @property
    def held(self) -> bool:
        """The node has admitted this transaction: a refusal of a resend is not final."""
        return self.presence in (Presence.PENDING, Presence.MINED)


def _same_tx(doc: dict[str, Any], txid: str) -> bool:
    # Trust the answer only if its bytes are the transaction asked about (a proxy or a wrong
    # URL must not make a refused transaction look admitted).
    raw = doc.get("tx")
    if not isinstance(raw, str):
        return False
    try:
        data = bytes.fromhex(raw.removeprefix("0x"))
    except ValueError:
        return False
    return compute_txid(data) == txid.removeprefix("0x")


def read_unconfirmed(status: int, body: bytes, txid: str) -> Known:
    """Classify an answer of GET /v2/transactions/unconfirmed/{txid}."""
    if status == 404:
        return Known(Presence.ABSENT, detail="not in the mempool")
    doc: Any = None
    with contextlib.suppress(ValueError):
        doc = json.loads(body)
    if status == 200 and isinstance(doc, dict) and _same_tx(doc, txid):
        return Known(Presence.PENDING, detail=f"in the mempool ({doc.get('status')!r})")
    return Known(Presence.UNKNOWN, detail=f"mempool lookup: HTTP {status}: {body[:200]!r}")


def read_transaction(status: int, body: bytes, txid: str) -> Known:
    """Classify an answer of GET /v3/transaction/{txid}."""
    if status == 404:
        return Known(Presence.ABSENT, detail="not in the node's chain")
    doc: Any = None
    with contextlib.suppress(ValueError):
        doc = json.loads(body)
    if status == 200 and isinstance(doc, dict) and _same_tx(doc, txid):
        height = doc.get("block_height")
        block = doc.get("index_block_hash")
        # Nodes older than the `is_canonical` field answered for canonical blocks only.
        if doc.get("is_canonical", True) is not True:
            return Known(Presence.ABSENT, detail=f"only in a non-canonical block {block}")
        return Known(
            Presence.MINED,
            index_block_hash=block if isinstance(block, str) else None,
            block_height=height if isinstance(height, int) else None,
            detail=f"mined in block {block} at height {height}",
        )
    if status == 501:
        return Known(Presence.UNKNOWN, detail="the node keeps no transaction index")
    return Known(Presence.UNKNOWN, detail=f"transaction lookup: HTTP {status}: {body[:200]!r}")


class NodeClient:
    def __init__(self, node_url: str, timeout_s: float = 10.0) -> None:
        self.base = node_url.rstrip("/")
        self.url = self.base + "/v2/transactions"
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def lookup(self, txid: str) -> Known:
        """Does the node hold `txid`: pending in its mempool, mined, absent, or can it not tell?"""
        bare = txid.lower().removeprefix("0x")
        try:
            response = await self._client.get(f"{self.base}/v2/transactions/unconfirmed/{bare}")
            pending = read_unconfirmed(response.status_code, response.content, bare)
            if pending.presence is Presence.PENDING:
                return pending
            response = await self._client.get(f"{self.base}/v3/transaction/{bare}")
        except httpx.HTTPError as exc:
            return Known(Presence.UNKNOWN, detail=f"lookup failed: {type(exc).__name__}: {exc}")
        mined = read_transaction(response.status_code, response.content, bare)
        if mined.presence is Presence.ABSENT and pending.presence is not Presence.ABSENT:
            # Not mined, and the mempool could not be asked: the node cannot say "absent".
            return pending
        return mined

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
