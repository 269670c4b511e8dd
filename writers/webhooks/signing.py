"""Signatures of webhook deliveries: HMAC-SHA256 over `"{timestamp}.{body}"`, sent as

    Recchain-Signature: t=1767225600,v1=5257a869e7ec...[,v1=...]

(the convention of Stripe's webhooks). The key is the endpoint's whole secret string
(`whsec_...`) as UTF-8. While a rotated secret is still valid the header carries one `v1` per
secret, newest first, so a receiver that knows either one accepts the delivery. Receivers must
compare in constant time and refuse a timestamp more than `REPLAY_WINDOW_S` from their clock: a
captured delivery replayed later then fails, and the event id (`Recchain-Event-Id`) makes a
replay inside the window a duplicate they already handled.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

HEADER = "Recchain-Signature"
REPLAY_WINDOW_S = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """The header value for `body` sent at `timestamp` (unix seconds)."""
    return ",".join([f"t={timestamp}", *(f"v1={signature(s, timestamp, body)}" for s in secrets)])


def verify(
    header: str,
    body: bytes,
    secret: str,
    *,
    now: float | None = None,
    tolerance_s: float = REPLAY_WINDOW_S,
) -> bool:
    """What a receiver does: one `v1` made with `secret`, and a timestamp inside the window."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, c) for c in candidates)
