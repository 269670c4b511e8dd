"""Helpers of the webhook tests: register endpoints and read the outbox of a real database."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from pydantic import SecretStr

from db.session import engine_scope, to_libpq_url
from db.webhooks import store
from recchain.config import Settings, WebhookSettings


def settings_for(db_url: str, **webhooks: Any) -> Settings:
    webhooks.setdefault("allow_internal_hosts", ["127.0.0.1"])
    return Settings(database_url=SecretStr(db_url), webhooks=WebhookSettings(**webhooks))


async def register(
    db_url: str,
    filters: list[Any],
    *,
    url: str = "http://127.0.0.1:9/hook",
    delivery: str = "tip",
    owner: str | None = None,
) -> dict[str, Any]:
    """An endpoint as `recchain webhooks add` creates it (the answer, secret included)."""
    async with engine_scope(db_url, pool_size=1) as engine, engine.begin() as conn:
        return await store.add_endpoint(
            conn,
            url=url,
            filters=filters,
            settings=settings_for(db_url),
            delivery=delivery,
            owner=owner,
        )


async def add_endpoint(db_url: str, filters: list[Any], **kw: Any) -> int:
    return int((await register(db_url, filters, **kw))["id"])


def events(db_url: str, endpoint_id: int) -> list[dict[str, Any]]:
    """The endpoint's outbox rows in sequence order (ids as strings)."""
    with psycopg.connect(to_libpq_url(db_url), row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT * FROM webhook_events WHERE endpoint_id = %s ORDER BY seq", (endpoint_id,)
        ).fetchall()
    for r in rows:
        r["event_id"] = str(r["event_id"])
        r["retracted_by"] = None if r["retracted_by"] is None else str(r["retracted_by"])
    return rows
