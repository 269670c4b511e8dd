"""The relay's `/v1/webhooks` routes over real HTTP on loopback, a real PostgreSQL, the real
sender and a real receiver: API keys own their endpoints, bad input changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from pydantic import SecretStr

from db.session import engine_scope
from infra.config import RelaySettings, Settings, WebhookSettings
from ops.bench.chaingen import Chain, to_requests
from ops.bench.receiver import Behaviour, Receiver
from tests.indexer.helpers import query, run_requests
from tests.webhooks.helpers import fast, running_sender, statuses, wait_for
from tests.writers.conftest import serve_app
from writers.app import build_app
from writers.metrics import RelayMetrics
from writers.webhooks import signing

A = {"authorization": "Bearer key-a"}
B = {"x-api-key": "key-b"}


def _settings(db_url: str, keys: list[str], **webhooks: Any) -> Settings:
    webhooks.setdefault("allow_internal_hosts", ["127.0.0.1"])
    return Settings(
        database_url=SecretStr(db_url),
        relay=RelaySettings(api_keys=[SecretStr(k) for k in keys], max_body_bytes=4096),
        webhooks=WebhookSettings(**webhooks),
    )


@asynccontextmanager
async def relay(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    assert settings.database_url is not None
    async with engine_scope(settings.database_url.get_secret_value(), pool_size=2) as engine:
        app = build_app(settings, engine, RelayMetrics())
        async with serve_app(app) as base, httpx.AsyncClient(base_url=base) as client:
            yield client


def _count(db_url: str) -> int:
    return int(query(db_url, "SELECT count(*) FROM webhook_endpoints")[0][0])


async def test_routes_need_configured_keys_and_a_valid_one(db_url: str) -> None:
    async with relay(_settings(db_url, [])) as client:
        r = await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/x"})
        assert r.status_code == 403 and r.json()["error"] == "keys_required"
    async with relay(_settings(db_url, ["key-a"])) as client:
        r = await client.get("/v1/webhooks", headers={"authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        r = await client.get("/v1/webhooks")
        assert r.status_code == 401
    assert _count(db_url) == 0


async def test_keys_own_their_endpoints(db_url: str) -> None:
    async with relay(_settings(db_url, ["key-a", "key-b"])) as client:
        r = await client.post(
            "/v1/webhooks",
            headers=A,
            json={
                "url": "http://127.0.0.1:9/a",
                "filters": [{"kind": "retirement", "where": {"beneficiaryName": "City of Oslo"}}],
                "description": "procurement",
            },
        )
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
        assert r.headers["location"] == f"/v1/webhooks/{created['id']}"
        listed = (await client.get("/v1/webhooks", headers=A)).json()["endpoints"]
        assert [e["id"] for e in listed] == [created["id"]]
        assert listed[0]["secret"] != created["secret"] and listed[0]["secret"].endswith("…")
        assert listed[0]["filters"] == [
            {"kind": "retirement", "where": {"beneficiaryName": "City of Oslo"}}
        ]
        # Key B sees nothing of A's.
        assert (await client.get("/v1/webhooks", headers=B)).json() == {"endpoints": []}
        path = f"/v1/webhooks/{created['id']}"
        for method, url in (("GET", path), ("DELETE", path), ("POST", path + "/pause")):
            r = await client.request(method, url, headers=B)
            assert r.status_code == 404 and r.json()["error"] == "not_found", (method, url)
        assert (await client.delete(path, headers=A)).status_code == 204
        assert (await client.get(path, headers=A)).status_code == 404
    assert _count(db_url) == 0


async def test_bad_requests_are_refused_and_change_nothing(db_url: str) -> None:
    settings = _settings(db_url, ["key-a"], max_endpoints_per_key=1)
    good = {"url": "http://127.0.0.1:9/x", "filters": ["block"]}
    cases: list[tuple[Any, int, str, str]] = [
        ({**good, "filters": [{"kind": "listing", "where": {"colour": "red"}}]}, 400,
         "invalid_filter", "filters[0].where.colour"),
        ({**good, "filters": []}, 400, "invalid_filter", "non-empty"),
        ({**good, "url": "ftp://example.org/"}, 400, "invalid_url", "http"),
        ({**good, "url": "http://user:pw@127.0.0.1/"}, 400, "invalid_url", "credentials"),
        ({**good, "url": "http://169.254.169.254/latest"}, 400, "destination_refused",
         "link-local"),
        ({**good, "url": "http://10.1.2.3/"}, 400, "destination_refused", "private"),
        ({**good, "delivery": "sometimes"}, 400, "invalid_request", "delivery"),
        ({**good, "secret": "mine"}, 400, "invalid_request", "unknown field"),
        ("not an object", 400, "invalid_request", "JSON object"),
        ({**good, "description": "x" * 5000}, 413, "body_too_large", "exceeds"),
    ]  # fmt: skip
    async with relay(settings) as client:
        for body, status, code, words in cases:
            r = await client.post("/v1/webhooks", headers=A, json=body)
            assert (r.status_code, r.json()["error"]) == (status, code), (body, r.text)
            assert words in r.json()["message"], r.json()
        r = await client.post("/v1/webhooks", headers=A, content=b"{oops", timeout=10)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"
        assert _count(db_url) == 0
        assert (await client.post("/v1/webhooks", headers=A, json=good)).status_code == 201
        r = await client.post("/v1/webhooks", headers=A, json=good)
        assert r.status_code == 409 and r.json()["error"] == "limit_reached"
    assert _count(db_url) == 1


async def test_manage_deliveries_through_the_routes(db_url: str) -> None:
    settings = _settings(db_url, ["key-a"])
    async with Receiver() as rx, relay(settings) as client:
        r = await client.post(
            "/v1/webhooks", headers=A, json={"url": rx.url("/mine"), "filters": ["block"]}
        )
        ep = r.json()
        rx.behaviours["/mine"] = Behaviour(secrets=[ep["secret"]])
        base = f"/v1/webhooks/{ep['id']}"
        assert (await client.post(base + "/pause", headers=A)).json()["status"] == "paused"
        chain = Chain(seed=51)
        await run_requests(db_url, [[q] for q in to_requests(chain.grow(None, 3, "main"))])
        sending = fast(db_url)
        async with running_sender(db_url, sending):
            # Paused: queued, held.
            await wait_for(lambda: len(statuses(db_url, ep["id"])) == 3, "three queued")
            assert rx.of("/mine") == []
            assert (await client.post(base + "/resume", headers=A)).json()["status"] == "active"
            await wait_for(lambda: set(statuses(db_url, ep["id"])) == {"delivered"}, "resumed")
            history = (await client.get(base + "/deliveries", headers=A)).json()["deliveries"]
            assert [h["seq"] for h in history] == [3, 2, 1]
            assert {h["status"] for h in history} == {"delivered"}
            page = await client.get(base + "/deliveries?limit=1&before_seq=3", headers=A)
            assert [h["seq"] for h in page.json()["deliveries"]] == [2]
            one = await client.get(f"{base}/deliveries/{history[0]['event_id']}", headers=A)
            assert one.json()["payload"]["block"]["height"] == 3
            assert [a["http_status"] for a in one.json()["attempts"]] == [200]
            # Redeliver from sequence 2 on: sent again, in order, same ids.
            r = await client.post(base + "/redeliver", headers=A, json={"from_seq": 2})
            assert r.status_code == 202 and r.json() == {"queued": 2}
            await wait_for(lambda: len(rx.of("/mine")) == 5, "the redelivery")
            # Rotate: the receiver switches to the new secret at once.
            rotated = (await client.post(base + "/rotate-secret", headers=A, json={})).json()
            rx.behaviours["/mine"] = Behaviour(secrets=[rotated["secret"]])
            r = await client.post(
                base + "/redeliver", headers=A, json={"event_ids": [history[0]["event_id"]]}
            )
            assert r.json() == {"queued": 1}
            await wait_for(lambda: len(rx.of("/mine")) == 6, "signed with the new secret")
    got = rx.of("/mine")
    assert [d.json["sequence"] for d in got] == [1, 2, 3, 2, 3, 3]
    assert all(d.verified for d in got)
    assert got[3].json["id"] == got[1].json["id"], "a redelivery keeps the idempotency key"
    assert signing.verify(got[-1].headers["recchain-signature"], got[-1].body, ep["secret"])
