"""Webhook endpoints and their history: every SQL the CLI (`recchain webhooks`), the relay's
`/v1/webhooks` routes and the sender's retention run, over the caller's connection.

`owner` scopes every call: None is the operator (sees and changes every endpoint); a string is
a relay API key's fingerprint, which sees only the endpoints it registered. Bad input raises
`WebhookError` with a code and changes nothing.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from db.channels import WEBHOOKS
from db.models.webhooks import DELIVERY_MODES, EVENT_STATUSES
from db.webhooks.filters import FilterError, compile_filters
from infra.config import Settings
from infra.netguard import Allowance, DestinationRefused, resolve_checked

SECRET_PREFIX = "whsec_"
MAX_URL = 2048


class WebhookError(ValueError):
    """A refused request; `code` is stable (the HTTP routes answer it), the text explains."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Destination:
    scheme: str
    host: str
    port: int


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def fingerprint(secret: str) -> str:
    """What listings show of a secret: enough to tell two apart, useless to sign with."""
    return secret[: len(SECRET_PREFIX) + 4] + "…"


def parse_url(url: Any) -> Destination:
    """Syntactic checks of an endpoint URL."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise WebhookError("invalid_url", f"url: expected an http(s) URL of at most {MAX_URL}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookError("invalid_url", f"url: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError("invalid_url", "url: expected http:// or https:// and a host")
    if parts.username is not None or parts.password is not None:
        raise WebhookError(
            "invalid_url", "url: credentials in the URL are refused; requests are signed instead"
        )
    if parts.fragment:
        raise WebhookError("invalid_url", "url: a fragment is never sent; remove it")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise WebhookError("invalid_url", "url: contains whitespace or control characters")
    default = 443 if parts.scheme == "https" else 80
    return Destination(parts.scheme, parts.hostname, port or default)


def allowance(settings: Settings) -> Allowance:
    return Allowance.parse(settings.webhooks.allow_internal_hosts)


async def check_destination(url: str, settings: Settings) -> Destination:
    """The URL's checks, and where it resolves now: internal addresses are refused unless
    allowed (`webhooks.allow_internal_hosts`). The sender checks again at every delivery."""
    dest = parse_url(url)
    try:
        await resolve_checked(dest.host, dest.port, allowance(settings))
    except DestinationRefused as exc:
        raise WebhookError(
            "destination_refused", f"url: {exc}; allow it in webhooks.allow_internal_hosts"
        ) from None
    return dest


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _owned(owner: str | None) -> str:
    return "" if owner is None else " AND e.owner = :owner"


_ENDPOINT_COLUMNS = """
    e.id, e.url, e.description, e.owner, e.delivery, e.status, e.secret, e.previous_secret_until,
    e.last_seq, e.created_at, e.updated_at,
    (SELECT coalesce(jsonb_agg(f.condition ORDER BY f.id), '[]'::jsonb)
     FROM webhook_filters f WHERE f.endpoint_id = e.id) AS filters,
    (SELECT count(*) FROM webhook_events ev
     WHERE ev.endpoint_id = e.id AND ev.status = 'pending') AS pending,
    (SELECT count(*) FROM webhook_events ev
     WHERE ev.endpoint_id = e.id AND ev.status = 'dead') AS dead,
    (SELECT extract(epoch FROM now() - min(ev.queued_at)) FROM webhook_events ev
     WHERE ev.endpoint_id = e.id AND ev.status = 'pending') AS oldest_pending_s,
    (SELECT ev.delivered_at FROM webhook_events ev
     WHERE ev.endpoint_id = e.id AND ev.status = 'delivered'
     ORDER BY ev.seq DESC LIMIT 1) AS last_delivered_at
"""


def _endpoint(row: Any) -> dict[str, Any]:
    m = dict(row._mapping)
    m["secret"] = fingerprint(m["secret"])
    oldest = m.pop("oldest_pending_s")
    m["oldest_pending_s"] = None if oldest is None else round(float(oldest), 3)
    return {k: _iso(v) for k, v in m.items()}


async def add_endpoint(
    conn: AsyncConnection,
    *,
    url: str,
    filters: Any,
    settings: Settings,
    delivery: str = "tip",
    description: str | None = None,
    owner: str | None = None,
) -> dict[str, Any]:
    """Register an endpoint inside the caller's transaction. The answer carries the whole
    signing secret: the only time it is shown."""
    parse_url(url)
    if delivery not in DELIVERY_MODES:
        raise WebhookError("invalid_request", f"delivery: one of {', '.join(DELIVERY_MODES)}")
    if description is not None and (not isinstance(description, str) or len(description) > 500):
        raise WebhookError("invalid_request", "description: a string of at most 500 characters")
    try:
        compiled = compile_filters(filters)
    except FilterError as exc:
        raise WebhookError("invalid_filter", str(exc)) from None
    if owner is not None:
        # Serialises registrations of one key, so two at once cannot both pass the limit.
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:o))"), {"o": owner})
        count = (
            await conn.execute(
                text("SELECT count(*) FROM webhook_endpoints WHERE owner = :o"), {"o": owner}
            )
        ).scalar_one()
        limit = settings.webhooks.max_endpoints_per_key
        if count >= limit:
            raise WebhookError("limit_reached", f"this key already has {limit} endpoints")
    secret = new_secret()
    endpoint_id = (
        await conn.execute(
            text(
                "INSERT INTO webhook_endpoints (url, description, owner, delivery, secret)"
                " VALUES (:url, :description, :owner, :delivery, :secret) RETURNING id"
            ),
            {
                "url": url,
                "description": description,
                "owner": owner,
                "delivery": delivery,
                "secret": secret,
            },
        )
    ).scalar_one()
    for c in compiled:
        await conn.execute(
            text(
                "INSERT INTO webhook_filters (endpoint_id, kind, condition, path, vars)"
                " VALUES (:e, :kind, CAST(:condition AS jsonb), CAST(:path AS jsonpath),"
                " CAST(:vars AS jsonb))"
            ),
            {
                "e": endpoint_id,
                "kind": c.kind,
                "condition": json.dumps(c.condition),
                "path": c.path,
                "vars": json.dumps(c.vars),
            },
        )
    endpoint = await get_endpoint(conn, endpoint_id, owner)
    assert endpoint is not None
    endpoint["secret"] = secret
    return endpoint


async def list_endpoints(conn: AsyncConnection, owner: str | None) -> list[dict[str, Any]]:
    rows = await conn.execute(
        text(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints e WHERE TRUE{_owned(owner)}"
            " ORDER BY e.id"
        ),
        {"owner": owner},
    )
    return [_endpoint(r) for r in rows]


async def get_endpoint(
    conn: AsyncConnection, endpoint_id: int, owner: str | None
) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            text(
                f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints e WHERE e.id = :id"
                f"{_owned(owner)}"
            ),
            {"id": endpoint_id, "owner": owner},
        )
    ).one_or_none()
    return None if row is None else _endpoint(row)


async def _require(conn: AsyncConnection, endpoint_id: int, owner: str | None) -> None:
    found = (
        await conn.execute(
            text(f"SELECT 1 FROM webhook_endpoints e WHERE e.id = :id{_owned(owner)} FOR UPDATE"),
            {"id": endpoint_id, "owner": owner},
        )
    ).one_or_none()
    if found is None:
        raise WebhookError("not_found", f"no webhook endpoint {endpoint_id}")


async def remove_endpoint(conn: AsyncConnection, endpoint_id: int, owner: str | None) -> None:
    """Delete an endpoint with its queue and history."""
    await _require(conn, endpoint_id, owner)
    await conn.execute(text("DELETE FROM webhook_endpoints WHERE id = :id"), {"id": endpoint_id})


async def set_status(
    conn: AsyncConnection, endpoint_id: int, owner: str | None, status: str
) -> None:
    """`paused` holds deliveries (events keep being queued); `active` resumes them."""
    if status not in ("active", "paused"):
        raise WebhookError("invalid_request", "status: active or paused")
    await _require(conn, endpoint_id, owner)
    await conn.execute(
        text("UPDATE webhook_endpoints SET status = :s, updated_at = now() WHERE id = :id"),
        {"s": status, "id": endpoint_id},
    )
    if status == "active":
        await conn.execute(text("SELECT pg_notify(:c, '')"), {"c": WEBHOOKS})


async def rotate_secret(
    conn: AsyncConnection, endpoint_id: int, owner: str | None, overlap_s: float
) -> dict[str, Any]:
    """A new secret signs from now on; the current one keeps signing beside it (a second
    signature in the same header) for `overlap_s`, so receivers can switch without a gap."""
    if not 0 <= overlap_s <= 30 * 86400:
        raise WebhookError("invalid_request", "overlap: between 0 and 30 days")
    await _require(conn, endpoint_id, owner)
    secret = new_secret()
    until = (
        await conn.execute(
            text(
                "UPDATE webhook_endpoints SET previous_secret = secret, secret = :s,"
                " previous_secret_until = now() + make_interval(secs => :o), updated_at = now()"
                " WHERE id = :id RETURNING previous_secret_until"
            ),
            {"s": secret, "o": float(overlap_s), "id": endpoint_id},
        )
    ).scalar_one()
    return {"id": endpoint_id, "secret": secret, "previous_secret_until": _iso(until)}


def _uuids(values: Any) -> list[uuid.UUID]:
    if not isinstance(values, list) or len(values) > 10_000:
        raise WebhookError("invalid_request", "event_ids: a list of at most 10000 event ids")
    try:
        return [uuid.UUID(str(v)) for v in values]
    except ValueError:
        raise WebhookError("invalid_request", "event_ids: not event ids (UUIDs)") from None


async def redeliver(
    conn: AsyncConnection,
    endpoint_id: int,
    owner: str | None,
    *,
    event_ids: Any = None,
    dead: bool = False,
    from_seq: int | None = None,
) -> int:
    """Queue events again (as new: attempts and dead-letter age restart), in their original
    order: given ids, every dead letter, and/or everything from sequence `from_seq` on.
    Retracted events (their block was orphaned) are never sent again. Returns the count."""
    ids = None if event_ids is None else _uuids(event_ids)
    if ids is None and not dead and from_seq is None:
        raise WebhookError("invalid_request", "give event ids, dead or a from sequence")
    if from_seq is not None and (not isinstance(from_seq, int) or from_seq < 1):
        raise WebhookError("invalid_request", "from_seq: a sequence number >= 1")
    await _require(conn, endpoint_id, owner)
    picks = []
    if ids is not None:
        picks.append("event_id = ANY(:ids)")
    if dead:
        picks.append("status = 'dead'")
    if from_seq is not None:
        picks.append("seq >= :from_seq")
    count = (
        await conn.execute(
            text(
                "WITH r AS (UPDATE webhook_events SET status = 'pending', attempts = 0,"
                " queued_at = now(), next_attempt_at = now(), last_error = NULL"
                " WHERE endpoint_id = :e AND status IN ('delivered', 'dead') AND ("
                + " OR ".join(picks)
                + ") RETURNING 1) SELECT count(*) FROM r"
            ),
            {"e": endpoint_id, "ids": ids, "from_seq": from_seq},
        )
    ).scalar_one()
    if count:
        await conn.execute(text("SELECT pg_notify(:c, '')"), {"c": WEBHOOKS})
    return int(count)


async def deliveries(
    conn: AsyncConnection,
    endpoint_id: int,
    owner: str | None,
    *,
    status: str | None = None,
    limit: int = 50,
    before_seq: int | None = None,
) -> list[dict[str, Any]]:
    """An endpoint's events, newest first, each with its last attempt."""
    if status is not None and status not in EVENT_STATUSES:
        raise WebhookError("invalid_request", f"status: one of {', '.join(EVENT_STATUSES)}")
    if not 1 <= limit <= 1000:
        raise WebhookError("invalid_request", "limit: between 1 and 1000")
    await _require(conn, endpoint_id, owner)
    rows = await conn.execute(
        text(
            "SELECT ev.seq, ev.event_id, ev.type, ev.block_height, ev.index_block_hash,"
            " ev.status, ev.attempts, ev.created_at, ev.queued_at, ev.next_attempt_at,"
            " ev.delivered_at, ev.last_status, ev.last_error, ev.retracted_by"
            " FROM webhook_events ev WHERE ev.endpoint_id = :e"
            + (" AND ev.status = :status" if status else "")
            + (" AND ev.seq < :before" if before_seq is not None else "")
            + " ORDER BY ev.seq DESC LIMIT :limit"
        ),
        {"e": endpoint_id, "status": status, "before": before_seq, "limit": limit},
    )
    out = []
    for r in rows:
        m = {k: _iso(v) for k, v in r._mapping.items()}
        m["event_id"] = str(m["event_id"])
        m["retracted_by"] = None if m["retracted_by"] is None else str(m["retracted_by"])
        out.append(m)
    return out


async def attempts(
    conn: AsyncConnection, endpoint_id: int, owner: str | None, event_id: Any
) -> dict[str, Any]:
    """One event with its payload and every attempt, oldest first."""
    (eid,) = _uuids([event_id])
    await _require(conn, endpoint_id, owner)
    event = (
        await conn.execute(
            text(
                "SELECT id, seq, event_id, type, block_height, index_block_hash, status,"
                " payload, created_at, delivered_at, retracted_by FROM webhook_events"
                " WHERE endpoint_id = :e AND event_id = :id"
            ),
            {"e": endpoint_id, "id": eid},
        )
    ).one_or_none()
    if event is None:
        raise WebhookError("not_found", f"no event {eid} for endpoint {endpoint_id}")
    tries = await conn.execute(
        text(
            "SELECT attempt, started_at, duration_ms, http_status, error, response"
            " FROM webhook_attempts WHERE event_id = :id ORDER BY started_at, id"
        ),
        {"id": event.id},
    )
    m = {k: _iso(v) for k, v in event._mapping.items() if k != "id"}
    m["event_id"] = str(m["event_id"])
    m["retracted_by"] = None if m["retracted_by"] is None else str(m["retracted_by"])
    m["attempts"] = [{k: _iso(v) for k, v in t._mapping.items()} for t in tries]
    return m
