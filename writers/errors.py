"""Why a submission is refused: one code per check, each with its HTTP status.

The codes are the relay's public contract (documented in writers/README.md); clients match on
`error`, never on the message.
"""

from __future__ import annotations

import enum


class Reject(enum.Enum):
    """(code, HTTP status). Order follows the order in which the checks run."""

    UNAUTHORIZED = ("unauthorized", 401)
    RATE_LIMITED = ("rate_limited", 429)
    TOO_MANY_CONCURRENT = ("too_many_concurrent", 429)
    BODY_TOO_LARGE = ("body_too_large", 413)
    UNSUPPORTED_MEDIA_TYPE = ("unsupported_media_type", 415)
    MALFORMED_BODY = ("malformed_body", 400)
    UNDECODABLE = ("undecodable", 400)
    WRONG_NETWORK = ("wrong_network", 400)
    WRONG_CHAIN_ID = ("wrong_chain_id", 400)
    BAD_SIGNATURE = ("bad_signature", 400)
    PAYLOAD_NOT_ALLOWED = ("payload_not_allowed", 403)
    CONTRACT_NOT_ALLOWED = ("contract_not_allowed", 403)
    FUNCTION_NOT_ALLOWED = ("function_not_allowed", 403)
    FEE_TOO_LOW = ("fee_too_low", 400)
    FEE_TOO_HIGH = ("fee_too_high", 400)
    POST_CONDITION_MODE = ("post_condition_mode", 400)
    BAD_TXID = ("bad_txid", 400)
    NOT_FOUND = ("not_found", 404)
    DATABASE_UNAVAILABLE = ("database_unavailable", 503)  # nothing stored; try again later

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def http_status(self) -> int:
        return self.value[1]


class SubmissionRejected(Exception):
    """A refused request: nothing was stored, and the client gets `code` and `message`."""

    def __init__(self, reason: Reject, message: str, txid: str | None = None) -> None:
        super().__init__(f"{reason.code}: {message}")
        self.reason = reason
        self.message = message
        self.txid = txid

    def to_json(self) -> dict[str, str]:
        body = {"error": self.reason.code, "message": self.message}
        if self.txid is not None:
            body["txid"] = self.txid
        return body
