"""The API reading a real hot standby: LISTEN on the primary, queries and pushes on the standby.

A session-scoped primary + standby pair (tests/pgcluster.py); blocks are indexed on the primary
through the real indexer pipeline; the API (real uvicorn, real websockets) reads the standby.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from db.session import to_libpq_url
from graphql_api.app import create_app
from infra.config import ApiSettings, Settings
from tests.graphql_api.conftest import start_server
from tests.graphql_api.livechain import LiveChain, caught_up
from tests.graphql_api.wsclient import Subscriber, wait_for
from tests.pgcluster import PgCluster, ReplicaDb

MARKET = "ST1PQHQKV0RJXZFY1DGX8MNSNYVE3VGZJSRTPGZGM.marketplace"
BLOCKS = "subscription { blocks { block { height hash } } }"
LISTINGS = """subscription { listingUpdates { kind listingId blockHeight
    listing { status price certificate { tokenId owner } } } }"""
CERT = """subscription($t: Int!) { certificateEvents(tokenId: $t) { kind tokenId blockHeight
    certificate { owner status } transfers { kind sender recipient } } }"""
RELAY = """subscription($txid: String!) { relayStatus(txid: $txid) { txid status blockHeight } }"""


class ReplicaApi:
    def __init__(self, app: Any, port: int, http: httpx.AsyncClient) -> None:
        self.app = app
        self.ws_url = f"ws://127.0.0.1:{port}/graphql"
        self.http = http

    @property
    def hub(self) -> Any:
        return self.app.state.hub

    async def data(self, query: str) -> dict[str, Any]:
        body = (await self.http.post("/graphql", json={"query": query})).json()
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data

    async def metric(self, name: str) -> float:
        text = (await self.http.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not exported")


@pytest.fixture
def max_lag_s() -> float:
    return 30.0


@pytest.fixture
def push_wait_s() -> float:
    # Longer than any test pauses replay: pushes wait for the standby (the fallback to the
    # primary has its own test).
    return 120.0


@pytest.fixture
async def replica_api(
    replica_db: ReplicaDb, max_lag_s: float, push_wait_s: float
) -> AsyncIterator[ReplicaApi]:
    settings = Settings(
        database_url=SecretStr(replica_db.primary),
        api=ApiSettings(
            read_database_url=SecretStr(replica_db.standby),
            read_replica_max_lag_s=max_lag_s,
            read_replica_push_wait_s=push_wait_s,
            rate_limit_per_minute=100_000,
            mask_errors=False,
        ),
    )
    app = create_app(settings)
    server, task, port = await start_server(app)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        yield ReplicaApi(app, port, http)
    server.should_exit = True
    await task


async def no_message(sub: Subscriber, seconds: float) -> None:
    """Nothing but keep-alives for `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            raw = await asyncio.wait_for(sub.ws.recv(), left)
        except TimeoutError:
            return
        msg = json.loads(raw)
        assert msg["type"] in ("ka", "ping", "pong"), f"unexpected while replay is paused: {msg}"


async def _minted_with_two_subscribers(
    replica_db: ReplicaDb, replica_api: ReplicaApi
) -> tuple[LiveChain, Subscriber, Subscriber]:
    """A minted certificate seen by the standby, and a `blocks` and a `listingUpdates`
    subscriber."""
    chain = LiveChain(replica_db.primary)
    await chain.add(chain.setup_and_mint(tokens=1))
    await caught_up(replica_api.hub, chain)
    blocks = await Subscriber.connect(replica_api.ws_url)
    await blocks.subscribe(BLOCKS)
    listings = await Subscriber.connect(replica_api.ws_url)
    await listings.subscribe(LISTINGS)
    await wait_for(lambda: replica_api.hub.subscriber_count == 2, "subscribed")
    return chain, blocks, listings


async def _listing_created(listings: Subscriber) -> None:
    update = (await listings.next())["data"]["listingUpdates"]
    assert (update["kind"], update["listingId"], update["listing"]["status"]) == (
        "created",
        1,
        "active",
    )


async def test_every_subscription_pushes_the_new_block_read_from_the_standby(
    replica_db: ReplicaDb, pg_cluster: PgCluster, replica_api: ReplicaApi
) -> None:
    chain = LiveChain(replica_db.primary)
    await chain.add(chain.setup_and_mint(tokens=1))
    await caught_up(replica_api.hub, chain)
    token = 1
    blocks = await Subscriber.connect(replica_api.ws_url)
    await blocks.subscribe(BLOCKS)
    listings = await Subscriber.connect(replica_api.ws_url)
    await listings.subscribe(LISTINGS)
    cert = await Subscriber.connect(replica_api.ws_url)
    await cert.subscribe(CERT, {"t": token})
    await wait_for(lambda: replica_api.hub.subscriber_count == 3, "subscribed")

    listed = await chain.add([chain.list_token(token)])
    price = chain.market.listings[1]["price"]
    assert (await blocks.next())["data"]["blocks"]["block"] == {
        "height": 2,
        "hash": listed["index_block_hash"],
    }
    update = (await listings.next())["data"]["listingUpdates"]
    assert update["kind"] == "created" and update["blockHeight"] == 2
    assert update["listing"] == {
        "status": "active",
        "price": str(price),
        "certificate": {"tokenId": token, "owner": MARKET},
    }
    event = (await cert.next())["data"]["certificateEvents"]
    assert event["blockHeight"] == 2 and event["certificate"]["owner"] == MARKET
    assert [t["recipient"] for t in event["transfers"]] == [MARKET]

    sold = await chain.add([chain.buy(1)])
    buyer = chain.market.owners[token]
    assert (await blocks.next())["data"]["blocks"]["block"]["hash"] == sold["index_block_hash"]
    update = (await listings.next())["data"]["listingUpdates"]
    assert (update["kind"], update["listing"]["status"]) == ("sold", "sold")
    assert update["listing"]["certificate"]["owner"] == buyer
    event = (await cert.next())["data"]["certificateEvents"]
    assert (event["blockHeight"], event["certificate"]["owner"]) == (3, buyer)
    # Queries are answered by the standby too.
    meta = (await replica_api.data("{ _meta { block { height } replicaLagSeconds } }"))["_meta"]
    assert meta["block"]["height"] == 3
    for s in (blocks, listings, cert):
        await s.close()


async def test_a_push_waits_for_the_standby_and_is_never_sent_stale(
    replica_db: ReplicaDb, pg_cluster: PgCluster, replica_api: ReplicaApi
) -> None:
    chain, blocks, listings = await _minted_with_two_subscribers(replica_db, replica_api)

    pg_cluster.pause_replay()
    listed = await chain.add([chain.list_token(1)])
    # The primary has the block and has notified; the standby stands still, and so do pushes.
    await no_message(blocks, 2.5)
    await no_message(listings, 0.5)
    assert (await replica_api.metric("recchain_api_notifications_pending")) >= 1
    meta = (await replica_api.data("{ _meta { block { height } replicaLagSeconds } }"))["_meta"]
    assert meta["block"]["height"] == 1 and meta["replicaLagSeconds"] > 0

    pg_cluster.resume_replay()
    assert (await blocks.next())["data"]["blocks"]["block"] == {
        "height": 2,
        "hash": listed["index_block_hash"],
    }
    await _listing_created(listings)
    assert (await replica_api.metric("recchain_api_notifications_pending")) == 0
    for s in (blocks, listings):
        await s.close()


@pytest.mark.parametrize("push_wait_s", [1.0])
async def test_a_push_the_standby_keeps_waiting_for_is_computed_on_the_primary(
    replica_db: ReplicaDb, pg_cluster: PgCluster, replica_api: ReplicaApi
) -> None:
    chain, blocks, listings = await _minted_with_two_subscribers(replica_db, replica_api)
    before = await replica_api.metric("recchain_api_pushes_from_primary_total")

    pg_cluster.pause_replay()
    try:
        listed = await chain.add([chain.list_token(1)])
        loop = asyncio.get_running_loop()
        added = loop.time()
        # The standby stands still; after the bound the push comes, with the new block's data
        # (the standby does not have it: the primary computed it).
        pushed = (await blocks.next())["data"]["blocks"]["block"]
        waited = loop.time() - added
        assert pushed == {"height": 2, "hash": listed["index_block_hash"]}
        assert 0.9 <= waited < 10, waited
        await _listing_created(listings)
        assert await replica_api.metric("recchain_api_pushes_from_primary_total") == before + 1
        # Queries still read the standby, which is behind.
        meta = (await replica_api.data("{ _meta { block { height } } }"))["_meta"]
        assert meta["block"]["height"] == 1
    finally:
        pg_cluster.resume_replay()
    # Caught up, the next push is computed on the standby again: nothing more from the primary.
    sold = await chain.add([chain.buy(1)])
    assert (await blocks.next())["data"]["blocks"]["block"]["hash"] == sold["index_block_hash"]
    update = (await listings.next())["data"]["listingUpdates"]
    assert (update["kind"], update["listing"]["status"]) == ("sold", "sold")
    assert await replica_api.metric("recchain_api_pushes_from_primary_total") == before + 1
    for s in (blocks, listings):
        await s.close()


@pytest.mark.parametrize("max_lag_s", [1.0])
async def test_lag_is_visible_and_readiness_fails_past_the_bound(
    replica_db: ReplicaDb, pg_cluster: PgCluster, replica_api: ReplicaApi
) -> None:
    chain = LiveChain(replica_db.primary)
    await chain.add(chain.setup_and_mint(tokens=1))
    await caught_up(replica_api.hub, chain)
    ready = await replica_api.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    blocks = await Subscriber.connect(replica_api.ws_url)
    await blocks.subscribe(BLOCKS)
    await wait_for(lambda: replica_api.hub.subscriber_count == 1, "subscribed")

    pg_cluster.pause_replay()
    block = await chain.add([chain.transfer(1)])

    async def not_ready() -> httpx.Response | None:
        r = await replica_api.http.get("/readyz")
        return r if r.status_code == 503 else None

    refused = await poll(not_ready, "readiness to fail")
    assert "behind the primary" in refused.json()["reason"]
    assert refused.json()["replica_lag_seconds"] > 1.0
    assert await replica_api.metric("recchain_api_replica_lag_seconds") > 1.0
    assert await replica_api.metric("recchain_api_replica_lag_bytes") > 0
    assert await replica_api.metric("recchain_api_notifications_pending") >= 1
    pg_cluster.resume_replay()
    assert (await blocks.next())["data"]["blocks"]["block"]["hash"] == block["index_block_hash"]

    async def ready_again() -> bool | None:
        r = await replica_api.http.get("/readyz")
        return True if r.status_code == 200 else None

    await poll(ready_again, "readiness to come back")
    meta = (await replica_api.data("{ _meta { replicaLagSeconds } }"))["_meta"]
    assert meta["replicaLagSeconds"] == 0
    await blocks.close()


async def test_relay_status_starts_from_a_standby_as_new_as_the_primary(
    replica_db: ReplicaDb, pg_cluster: PgCluster, replica_api: ReplicaApi
) -> None:
    chain = LiveChain(replica_db.primary)
    await chain.add(chain.setup_and_mint(tokens=1))
    await caught_up(replica_api.hub, chain)
    pending = chain.make([chain.transfer(1)])
    txid = pending["transactions"][0]["txid"]
    pg_cluster.pause_replay()
    # The relay accepted the transaction on the primary; the standby has not seen it yet.
    with psycopg.connect(to_libpq_url(replica_db.primary), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO relay_txs (txid, raw_tx, status, sender, nonce, fee, contract_id,"
            " function_name) VALUES (%s, '\\x00', 'broadcast', 'ST1', 0, 180, 'c', 'f')",
            (txid,),
        )
    sub = await Subscriber.connect(replica_api.ws_url)
    await sub.subscribe(RELAY, {"txid": txid})
    await no_message(sub, 1.5)
    pg_cluster.resume_replay()
    first = (await sub.next())["data"]["relayStatus"]
    assert (first["txid"], first["status"], first["blockHeight"]) == (txid, "broadcast", None)
    await chain.index(pending)
    mined = (await sub.next())["data"]["relayStatus"]
    assert (mined["status"], mined["blockHeight"]) == ("mined", 2)
    await sub.close()


async def poll(probe: Any, what: str, timeout_s: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await probe()
        if value is not None:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def test_an_insert_position_past_a_page_header_is_reached_at_the_page_boundary() -> None:
    from graphql_api.replica import format_lsn, parse_lsn, reached

    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    page, segment = 8192, 16 << 20
    assert reached(100, 100) and not reached(99, 100)
    # A record ending on a page boundary: the insert position is past the next page's header.
    assert reached(5 * page, 5 * page + 24, page, segment)
    assert not reached(5 * page - 8, 5 * page + 24, page, segment)
    # A segment starts with the long header.
    assert reached(segment, segment + 40, page, segment)
    assert not reached(segment, segment + 24, page, segment)
    # Anywhere else in a page the position must really be reached.
    assert not reached(5 * page, 5 * page + 32, page, segment)
