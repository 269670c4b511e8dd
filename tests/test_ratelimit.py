"""Rate limits: in-process buckets, buckets shared through a real Redis by several replicas
(the API's and the relay's), and the fall-back to per-process buckets when Redis is gone."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from graphql_api.app import create_app
from infra.ratelimit import BACKEND_ERRORS, LocalBuckets, RedisBuckets, make_buckets
from tests.graphql_api.conftest import api_settings, start_server
from writers.app import ClientLimits

REDIS_URL = os.environ.get("RECCHAIN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _redis_up() -> bool:
    host, port = "127.0.0.1", 6379
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


needs_redis = pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_local_bucket_bursts_then_refills() -> None:
    b = LocalBuckets(per_minute=6)  # one token every 10 s, burst of 6
    assert [b.take_now("a", 100.0) for _ in range(6)] == [0.0] * 6
    wait = b.take_now("a", 100.0)
    assert wait == pytest.approx(10.0)
    assert b.take_now("b", 100.0) == 0.0  # another client has its own bucket
    assert b.take_now("a", 105.0) == pytest.approx(5.0)
    assert b.take_now("a", 110.0) == 0.0
    assert b.take_now("a", 110.0) > 0


def test_local_buckets_forget_refilled_clients_first() -> None:
    b = LocalBuckets(per_minute=60)
    b.MAX_CLIENTS = 3
    for i in range(3):
        b.take_now(f"old{i}", 0.0)
    b.take_now("busy", 59.0)
    b.take_now("new", 61.0)  # over the cap: the refilled "old" buckets go, "busy" stays
    assert "busy" in b.buckets and "new" in b.buckets
    assert not any(k.startswith("old") for k in b.buckets)


@needs_redis
async def test_redis_buckets_are_shared_between_replicas() -> None:
    ns = f"test-{uuid.uuid4().hex}"
    one = RedisBuckets(REDIS_URL, 6, namespace=ns)
    two = RedisBuckets(REDIS_URL, 6, namespace=ns)
    try:
        answers = [await (one if i % 2 else two).take("1.2.3.4") for i in range(6)]
        assert answers == [0.0] * 6
        wait = await one.take("1.2.3.4")
        assert 9.0 < wait <= 10.0
        assert await two.take("1.2.3.4") > 0
        assert await two.take("5.6.7.8") == 0.0
        # Idle buckets expire once they would be full again.
        ttl = await one.client.pttl(one.prefix + "1.2.3.4")
        assert 0 < ttl <= 61_000
    finally:
        await one.client.delete(one.prefix + "1.2.3.4", one.prefix + "5.6.7.8")
        await one.aclose()
        await two.aclose()


async def test_unreachable_redis_falls_back_to_own_buckets() -> None:
    buckets = make_buckets(2, f"redis://127.0.0.1:{_closed_port()}/0", namespace="fallback")
    assert isinstance(buckets, RedisBuckets)
    before = BACKEND_ERRORS.labels("fallback")._value.get()
    try:
        assert await buckets.take("c") == 0.0
        assert await buckets.take("c") == 0.0
        assert await buckets.take("c") > 0  # still limited: per process, never unlimited
        # One failed lookup, then Redis is left alone for a pause instead of per request.
        assert BACKEND_ERRORS.labels("fallback")._value.get() == before + 1
    finally:
        await buckets.aclose()


@needs_redis
async def test_relay_replicas_share_the_submission_rate() -> None:
    ns_url = REDIS_URL
    a = ClientLimits(per_minute=3, max_in_flight=4, redis_url=ns_url)
    b = ClientLimits(per_minute=3, max_in_flight=4, redis_url=ns_url)
    client = f"ip:test-{uuid.uuid4().hex}"
    try:
        assert [await x.take(client) for x in (a, b, a)] == [0.0, 0.0, 0.0]
        assert await b.take(client) > 0
    finally:
        assert isinstance(a.buckets, RedisBuckets)
        await a.buckets.client.delete(a.buckets.prefix + client)
        await a.buckets.aclose()
        await b.buckets.aclose()


@pytest.fixture
async def two_apis(db_url: str, engine: AsyncEngine) -> AsyncIterator[list[str]]:
    """Two API processes' worth of app, each with its own engine and buckets, one Redis."""
    settings = api_settings(db_url, rate_limit_per_minute=3)
    settings = settings.model_copy(update={"redis_url": SecretStr(REDIS_URL)})
    servers = []
    urls = []
    for _ in range(2):
        server, task, port = await start_server(create_app(settings, engine=engine))
        servers.append((server, task))
        urls.append(f"http://127.0.0.1:{port}/graphql")
    yield urls
    for server, task in servers:
        server.should_exit = True
        await task


@needs_redis
async def test_api_replicas_enforce_one_limit(two_apis: list[str]) -> None:
    import redis.asyncio as redis

    store = redis.Redis.from_url(REDIS_URL)
    await store.delete("recchain:ratelimit:api:127.0.0.1")
    try:
        async with httpx.AsyncClient() as client:
            query = {"query": "{ _meta { block { height } } }"}
            codes = []
            for i in range(4):
                resp = await client.post(two_apis[i % 2], json=query)
                codes.append(resp.status_code)
            assert codes == [200, 200, 200, 429]
            assert int(resp.headers["retry-after"]) >= 1
            assert resp.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    finally:
        await store.delete("recchain:ratelimit:api:127.0.0.1")
        await store.aclose()
    await asyncio.sleep(0)


async def test_relay_counts_backend_failures_on_its_own_registry() -> None:
    from prometheus_client import generate_latest

    from writers.metrics import RelayMetrics

    metrics = RelayMetrics()
    limits = ClientLimits(
        per_minute=5,
        max_in_flight=1,
        redis_url=f"redis://127.0.0.1:{_closed_port()}/0",
        backend_errors=metrics.ratelimit_backend_errors,
    )
    try:
        assert await limits.take("ip:1.2.3.4") == 0.0
    finally:
        await limits.buckets.aclose()
    exposition = generate_latest(metrics.registry).decode()
    assert 'recchain_ratelimit_backend_errors_total{service="relay"} 1.0' in exposition
