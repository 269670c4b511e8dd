"""Several API processes behind the bundled nginx, reading a hot standby: shared rate limits
through Redis, one LISTEN connection each on the primary, and a subscriber that loses its
process (SIGKILL) resuming on the other one with what it missed.

Real parts: the primary + standby pair (tests/pgcluster.py), two `recchain serve` processes,
nginx with ops/nginx/nginx.conf (tests/nginxproxy.py), the machine's Redis, blocks indexed on
the primary through the real indexer pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
import websockets

from db.session import to_libpq_url
from infra.config import PROJECT_ROOT
from ops.bench.e2e import free_port
from ops.bench.tls import tls
from tests.graphql_api.livechain import LiveChain
from tests.graphql_api.wsclient import TRANSPORT_WS
from tests.nginxproxy import NginxProxy, require_nginx
from tests.pgcluster import ReplicaDb

RATE_PER_MINUTE = 20
REDIS = ("127.0.0.1", 6379)


def require_redis() -> str:
    try:
        with socket.create_connection(REDIS, timeout=1):
            pass
    except OSError:
        pytest.skip("no Redis on 127.0.0.1:6379 (redis-server) for the shared rate limits")
    return f"redis://{REDIS[0]}:{REDIS[1]}/0"


def client_address() -> str:
    """A client address of this run alone, so buckets in the shared Redis are ours."""
    r = random.Random(uuid.uuid4().int)
    return f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"


@dataclass
class Serve:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, prefix: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(prefix))  # fmt: skip


def start_serve(db: ReplicaDb, redis_url: str) -> Serve:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECCHAIN_")}
    env.pop("DATABASE_URL", None)
    env.update(
        RECCHAIN_DATABASE_URL=db.primary,
        RECCHAIN_API__READ_DATABASE_URL=db.standby,
        RECCHAIN_REDIS_URL=redis_url,
        RECCHAIN_API__RATE_LIMIT_PER_MINUTE=str(RATE_PER_MINUTE),
        RECCHAIN_HTTP__TRUSTED_PROXIES='["127.0.0.1"]',
        RECCHAIN_LOG_LEVEL="WARNING",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "recchain.cli", "serve", "--port", str(port)],
        env=env,
        cwd=PROJECT_ROOT,
    )
    return Serve(port, proc)


def wait_ready(serve: Serve) -> None:
    deadline = time.monotonic() + 120
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{serve.url}/readyz", timeout=2, verify=tls()).status_code == 200:
                return
        assert serve.proc.poll() is None, "recchain serve exited"
        assert time.monotonic() < deadline, "recchain serve did not become ready"
        time.sleep(0.2)


@dataclass
class ScaleOut:
    db: ReplicaDb
    serves: list[Serve]
    proxy: NginxProxy


@pytest.fixture
def scaleout(replica_db: ReplicaDb) -> Iterator[ScaleOut]:
    require_nginx()
    redis_url = require_redis()
    serves = [start_serve(replica_db, redis_url) for _ in range(2)]
    proxy: NginxProxy | None = None
    try:
        for s in serves:
            wait_ready(s)
        proxy = NginxProxy(api=[s.port for s in serves]).start()
        yield ScaleOut(replica_db, serves, proxy)
    finally:
        if proxy is not None:
            proxy.stop()
        for s in serves:
            if s.proc.poll() is None:
                s.proc.kill()
            s.proc.wait(timeout=30)


def listeners(db: ReplicaDb) -> list[str]:
    """The API's LISTEN connections on the primary, by application name."""
    with psycopg.connect(to_libpq_url(db.primary), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT application_name FROM pg_stat_activity WHERE datname = %s"
            " AND application_name LIKE 'recchain-api-listen:%%' ORDER BY 1",
            (db.name,),
        ).fetchall()
    return [r[0] for r in rows]


def until(probe: Any, what: str, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_replicas_share_one_rate_limit_through_redis(scaleout: ScaleOut) -> None:
    me = client_address()
    field = 'recchain_api_field_seconds_count{field="_meta"}'
    before = [s.metric(field) for s in scaleout.serves]
    codes = []
    with httpx.Client(base_url=scaleout.proxy.url, timeout=30) as http:
        for _ in range(2 * RATE_PER_MINUTE):
            r = http.post(
                "/graphql",
                json={"query": "{ _meta { tipHeight } }"},
                headers={"X-Forwarded-For": me},
            )
            codes.append(r.status_code)
    answered = [s.metric(field) - b for s, b in zip(scaleout.serves, before, strict=True)]
    # Both processes answered this client, and together they let through one limit's worth
    # (each on its own would have let through one each); the rest was refused.
    assert all(n > 0 for n in answered), answered
    assert set(codes) == {200, 429}
    assert RATE_PER_MINUTE <= codes.count(200) <= RATE_PER_MINUTE + 2, codes


SUBSCRIBE = {
    "blocks": "subscription($a: String) { blocks(afterHash: $a) { block { height hash } } }",
    "listings": "subscription($h: Int) { listingUpdates(afterHeight: $h)"
    " { kind listingId listing { status } } }",
    "cert": "subscription($h: Int) { certificateEvents(tokenId: 1, afterHeight: $h)"
    " { kind blockHeight certificate { owner } transfers { recipient } } }",
}


class Client:
    """A graphql-transport-ws client through the proxy, with its pushes sorted by operation."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.pushes: dict[str, asyncio.Queue[dict[str, Any]]] = {
            k: asyncio.Queue() for k in SUBSCRIBE
        }
        self.closed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, me: str, resume: dict[str, Any] | None = None) -> Client:
        ws = await websockets.connect(
            url,
            subprotocols=[TRANSPORT_WS],  # type: ignore[list-item]
            additional_headers={"X-Forwarded-For": me},
        )
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "connection_ack"
        resume = resume or {}
        for op, query in SUBSCRIBE.items():
            variables = {k: v for k, v in resume.get(op, {}).items()}
            msg = {
                "id": op,
                "type": "subscribe",
                "payload": {"query": query, "variables": variables},
            }
            await ws.send(json.dumps(msg))
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if msg["type"] == "next":
                    self.pushes[msg["id"]].put_nowait(msg["payload"])
                elif msg["type"] in ("error", "complete"):
                    raise AssertionError(f"subscription ended: {msg}")
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def next(self, op: str) -> dict[str, Any]:
        payload = await asyncio.wait_for(self.pushes[op].get(), 30)
        assert "errors" not in payload, payload
        data: dict[str, Any] = payload["data"]
        return data

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


async def test_a_subscriber_of_a_killed_replica_resumes_on_the_other(scaleout: ScaleOut) -> None:
    db = scaleout.db
    # Each process holds its own LISTEN connection on the primary from start-up.
    held = until(lambda: len(names := listeners(db)) == 2 and names, "two listeners")
    assert len(set(held)) == 2
    chain = LiveChain(db.primary)
    await chain.add(chain.setup_and_mint(tokens=2))  # 1
    await chain.add([chain.list_token(1)])  # 2: listing 1

    def followed() -> bool:
        return all(s.metric("recchain_api_notified_height ") == 2 for s in scaleout.serves)

    # Both have pushed block 2 already: what the client subscribes to next is live only.
    await asyncio.to_thread(until, followed, "both processes to follow the chain")
    me = client_address()
    client = await Client.connect(scaleout.proxy.ws_url, me)

    def holder() -> Serve | None:
        return next(
            (s for s in scaleout.serves if s.metric("recchain_api_subscriptions ") == 3), None
        )

    serving = await asyncio.to_thread(until, holder, "the subscriptions to register")
    block3 = await chain.add([chain.list_token(2)])  # 3: listing 2
    assert (await client.next("blocks"))["blocks"]["block"]["hash"] == block3["index_block_hash"]
    update = (await client.next("listings"))["listingUpdates"]
    assert (update["kind"], update["listingId"]) == ("created", 2)

    # The process serving the socket dies without a word; the blocks go on meanwhile.
    serving.proc.send_signal(signal.SIGKILL)
    serving.proc.wait(timeout=30)
    await asyncio.wait_for(client.closed.wait(), 30)
    await client.close()
    block4 = await chain.add([chain.buy(1)])  # 4: listing 1 sold, token 1 to the buyer
    block5 = await chain.add([])  # 5
    buyer = chain.market.owners[1]
    await asyncio.to_thread(until, lambda: len(listeners(db)) == 1, "the dead listener to go")

    # Reconnecting through the proxy lands on the survivor; the client says what it last saw.
    client = await Client.connect(
        scaleout.proxy.ws_url,
        me,
        {
            "blocks": {"a": block3["index_block_hash"]},
            "listings": {"h": 3},
            "cert": {"h": 3},
        },
    )
    survivor = next(s for s in scaleout.serves if s is not serving)
    for b in (block4, block5):
        got = (await client.next("blocks"))["blocks"]["block"]
        assert (got["height"], got["hash"]) == (b["block_height"], b["index_block_hash"])
    update = (await client.next("listings"))["listingUpdates"]
    assert (update["kind"], update["listingId"], update["listing"]["status"]) == (
        "sold",
        1,
        "sold",
    )
    event = (await client.next("cert"))["certificateEvents"]
    assert event["certificate"]["owner"] == buyer
    assert [t["recipient"] for t in event["transfers"]] == [buyer]
    assert await asyncio.to_thread(survivor.metric, "recchain_api_subscriptions ") == 3

    block6 = await chain.add([chain.transfer(1)])  # 6: live again
    assert (await client.next("blocks"))["blocks"]["block"]["hash"] == block6["index_block_hash"]
    live = (await client.next("cert"))["certificateEvents"]
    assert (live["kind"], live["blockHeight"]) == ("transfer", 6)
    await client.close()
