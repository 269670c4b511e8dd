"""Helpers of the webhook tests: register endpoints and read the outbox of a real database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from pydantic import SecretStr

from db.session import engine_scope, to_libpq_url
from db.webhooks import store
from infra.config import Settings, WebhookSettings
from writers.webhooks.sender import Sender


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


@asynccontextmanager
async def running_sender(db_url: str, settings: Settings) -> AsyncIterator[Sender]:
    """A real Sender on the test database, in this process, for the length of the block."""
    sender = Sender(to_libpq_url(db_url), settings)
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    try:
        yield sender
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def wait_for(predicate: Callable[[], Any], what: str, limit: float = 60.0) -> None:
    """Poll a condition (sync or async); the limit only stops a broken run from hanging."""
    deadline = asyncio.get_running_loop().time() + limit
    while True:
        got = predicate()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return
        assert asyncio.get_running_loop().time() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


def fast(db_url: str, **webhooks: Any) -> Settings:
    """Sender settings for tests: short backoffs and polls, loopback allowed."""
    webhooks.setdefault("backoff_initial_s", 0.05)
    webhooks.setdefault("backoff_max_s", 0.4)
    webhooks.setdefault("poll_interval_s", 0.2)
    webhooks.setdefault("timeout_s", 5.0)
    webhooks.setdefault("metrics_port", 0)
    return settings_for(db_url, **webhooks)


def statuses(db_url: str, endpoint_id: int) -> list[str]:
    return [e["status"] for e in events(db_url, endpoint_id)]
