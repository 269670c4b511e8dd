"""Subscriptions end to end: real uvicorn, real websockets, real NOTIFY."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest
import websockets

from graphql_api import ws
from tests.graphql_api.builder import Chain
from tests.graphql_api.conftest import Api
from tests.graphql_api.wsclient import LEGACY_WS, TRANSPORT_WS, Subscriber, notify, wait_for

LISTINGS = """subscription($w: ListingFilter) { listingUpdates(where: $w) {
    kind listingId blockHeight listing { status price bidCount highestBid currency
    certificate { tokenId owner } } } }"""


def base() -> tuple[Chain, int, int]:
    chain = Chain()
    chain.block()
    fid = chain.facility()
    stx = chain.list_fixed(chain.mint(fid, "ST1SELLER", 1_000_000), 100)
    sbtc = chain.auction(chain.mint(fid, "ST1SELLER", 2_000_000), 50, currency="SBTC")
    return chain, stx, sbtc


async def commit(api: Api, db_url: str, chain: Chain, listings: list[int], **extra: Any) -> None:
    await chain.write(api.engine)
    await notify(
        db_url,
        {
            "height": chain.height,
            "hash": chain.tip.hash,
            "rolled_back": extra.get("rolled_back", []),
            "changes": {"listings": listings, **extra.get("changes", {})},
        },
    )


def hub(api: Api) -> Any:
    return api.app.state.hub


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_listing_lifecycle_and_fork_rollback(api: Api, db_url: str, protocol: str) -> None:
    chain, stx, sbtc = base()
    await chain.write(api.engine)
    sub = await Subscriber.connect(api.ws_url, protocol)
    await sub.subscribe(LISTINGS, {"w": {"currency": "STX"}})
    await wait_for(lambda: hub(api).subscriber_count == 1, "subscribed")

    chain.block()
    chain.reprice(stx, 90)
    await commit(api, db_url, chain, [stx])
    msg = (await sub.next())["data"]["listingUpdates"]
    assert msg["kind"] == "priceChanged" and msg["listing"]["price"] == "90"
    assert msg["listing"]["certificate"]["owner"] == "ST1SELLER"

    # An SBTC-only change is filtered out; the next push is the STX sale.
    chain.block()
    chain.bid(sbtc, "ST1BIDDER", 60)
    await commit(api, db_url, chain, [sbtc])
    before_sale = copy.deepcopy(chain)
    chain.block()
    chain.buy(stx, "ST1BUYER")
    await commit(api, db_url, chain, [stx])
    msg = (await sub.next())["data"]["listingUpdates"]
    assert msg["kind"] == "sold" and msg["listing"]["status"] == "sold"
    assert msg["listing"]["certificate"]["owner"] == "ST1BUYER"

    # A fork removes the sale block: the rollback is pushed with the restored state.
    sold_block = chain.tip.hash
    await commit(api, db_url, before_sale, [stx], rolled_back=[sold_block])
    msg = (await sub.next())["data"]["listingUpdates"]
    assert msg["kind"] == "rolledBack" and msg["listing"]["status"] == "active"
    assert msg["listing"]["certificate"]["owner"] == "ST1SELLER"
    await sub.close()
    await wait_for(lambda: hub(api).subscriber_count == 0, "unsubscribed")


async def test_identical_subscriptions_share_one_topic_and_push_only_on_change(
    api: Api, db_url: str
) -> None:
    chain, _, sbtc = base()
    await chain.write(api.engine)
    subs = [await Subscriber.connect(api.ws_url) for _ in range(3)]
    for s in subs:
        await s.subscribe(LISTINGS, {"w": {"currency": "SBTC"}})
    await wait_for(lambda: hub(api).subscriber_count == 3, "subscribed")
    assert len(hub(api).topics) == 1

    chain.block()
    chain.bid(sbtc, "ST1A", 60)
    await commit(api, db_url, chain, [sbtc])
    # The same notification again (e.g. a re-delivery) changes nothing, so pushes nothing.
    await commit(api, db_url, chain, [sbtc])
    chain.block()
    chain.bid(sbtc, "ST1B", 70)
    await commit(api, db_url, chain, [sbtc])
    for s in subs:
        first = (await s.next())["data"]["listingUpdates"]
        second = (await s.next())["data"]["listingUpdates"]
        assert (first["kind"], first["listing"]["highestBid"]) == ("bid", "60")
        assert (second["kind"], second["listing"]["highestBid"]) == ("bid", "70")
        await s.close()


async def test_certificate_events_and_blocks(api: Api, db_url: str) -> None:
    chain = Chain()
    chain.block()
    fid = chain.facility()
    token = chain.mint(fid, "ST1A", 5)
    await chain.write(api.engine)
    sub = await Subscriber.connect(api.ws_url, LEGACY_WS)
    await sub.subscribe(
        "subscription($t: Int!) { certificateEvents(tokenId: $t) { kind tokenId"
        " certificate { owner status } transfers { kind sender recipient } } }",
        {"t": token},
    )
    blocks = await Subscriber.connect(api.ws_url)
    await blocks.subscribe("subscription { blocks { block { height hash } rolledBack } }")
    await wait_for(lambda: hub(api).subscriber_count == 2, "subscribed")
    chain.block()
    chain.transfer(token, "ST1B")
    await commit(api, db_url, chain, [], changes={"certificates": [token]})
    ev = (await sub.next())["data"]["certificateEvents"]
    assert ev["kind"] == "transfer" and ev["certificate"]["owner"] == "ST1B"
    assert ev["transfers"] == [{"kind": "transfer", "sender": "ST1A", "recipient": "ST1B"}]
    blk = (await blocks.next())["data"]["blocks"]
    assert blk == {"block": {"height": 2, "hash": chain.tip.hash}, "rolledBack": []}
    await sub.close()
    await blocks.close()


@pytest.fixture
def api_overrides() -> dict[str, Any]:
    return {"ws_allowed_origins": ["http://wallet.example"]}


async def test_websocket_origin_is_checked(api: Api) -> None:
    ok = await Subscriber.connect(api.ws_url, origin="http://wallet.example")
    await ok.close()
    with pytest.raises(websockets.exceptions.InvalidStatus):
        await Subscriber.connect(api.ws_url, origin="http://evil.example")


async def test_identical_operations_execute_once_for_every_socket_and_protocol(
    api: Api, db_url: str
) -> None:
    chain = Chain()
    chain.block()
    await chain.write(api.engine)
    blocks = "subscription { blocks { block { height hash } rolledBack } }"
    same = [
        await Subscriber.connect(api.ws_url, p) for p in (TRANSPORT_WS, TRANSPORT_WS, LEGACY_WS)
    ]
    for s in same:
        await s.subscribe(blocks)
    other = await Subscriber.connect(api.ws_url)
    await other.subscribe("subscription { blocks { block { height } } }")
    await wait_for(lambda: hub(api).subscriber_count == 4, "subscribed")
    # Two documents, two shared executions, each one sink on the one `blocks` topic.
    assert len(hub(api).streams) == 2
    assert len(hub(api).topics["blocks"].sinks) == 2

    chain.block()
    await commit(api, db_url, chain, [])
    want = {"block": {"height": 2, "hash": chain.tip.hash}, "rolledBack": []}
    for s in same:
        assert (await s.next()) == {"data": {"blocks": want}}
    assert (await other.next()) == {"data": {"blocks": {"block": {"height": 2}}}}

    # A late subscriber joins the running execution and gets the next change only.
    late = await Subscriber.connect(api.ws_url, LEGACY_WS)
    await late.subscribe(blocks)
    await wait_for(lambda: hub(api).subscriber_count == 5, "late subscriber")
    assert len(hub(api).streams) == 2
    chain.block()
    await commit(api, db_url, chain, [])
    assert (await late.next())["data"]["blocks"]["block"]["height"] == 3
    assert (await same[0].next())["data"]["blocks"]["block"]["height"] == 3

    for s in [*same, other, late]:
        await s.close()
    await wait_for(lambda: hub(api).subscriber_count == 0, "unsubscribed")
    await wait_for(lambda: not hub(api).streams and not hub(api).topics, "streams released")


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_an_invalid_shared_operation_is_refused_to_each_subscriber(
    api: Api, protocol: str
) -> None:
    subs = [await Subscriber.connect(api.ws_url, protocol) for _ in range(2)]
    for s in subs:
        await s.subscribe("subscription { blocks { noSuchField } }")
        got = await s.next()
        assert got["type"] == "error"
        assert "noSuchField" in json.dumps(got["payload"])
        await s.close()
    await wait_for(lambda: not hub(api).streams, "no stream left behind")


def shared_tasks() -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith("recchain-shared") and not t.done()
    ]


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_blocks_push_a_fork_rollback_and_queries_still_run_beside_the_stream(
    api: Api, db_url: str, protocol: str
) -> None:
    chain = Chain()
    chain.block()
    await chain.write(api.engine)
    sub = await Subscriber.connect(api.ws_url, protocol)
    await sub.subscribe("subscription { blocks { block { height hash } rolledBack } }")
    await wait_for(lambda: hub(api).subscriber_count == 1, "subscribed")
    # A query sent over the socket (either protocol) is answered once, beside the stream.
    assert await sub.subscribe("{ _meta { block { height } } }") == "2"
    assert await sub.next() == {"data": {"_meta": {"block": {"height": 1}}}}
    assert await sub.next() == {"type": "complete", "payload": None}
    # A bad one gets its errors and ends; the stream goes on.
    assert await sub.subscribe("{ _meta { nope } }") == "3"
    bad = await sub.next()
    assert "nope" in json.dumps(bad)
    if "data" in bad or "errors" in bad:
        assert await sub.next() == {"type": "complete", "payload": None}
    assert len(hub(api).streams) == 1

    before = copy.deepcopy(chain)
    chain.block()
    await commit(api, db_url, chain, [])
    assert (await sub.next())["data"]["blocks"]["block"]["height"] == 2
    orphan = chain.tip.hash
    await commit(api, db_url, before, [], rolled_back=[orphan])
    got = (await sub.next())["data"]["blocks"]
    assert got == {"block": {"height": 1, "hash": before.tip.hash}, "rolledBack": [orphan]}
    await sub.close()
    await wait_for(lambda: not hub(api).streams and not shared_tasks(), "stream released")


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_completing_one_operation_keeps_the_others_and_the_socket(
    api: Api, db_url: str, protocol: str
) -> None:
    chain = Chain()
    chain.block()
    await chain.write(api.engine)
    sub = await Subscriber.connect(api.ws_url, protocol)
    first = await sub.subscribe("subscription { blocks { block { height } } }")
    second = await sub.subscribe("subscription { blocks { block { hash } } }")
    await wait_for(lambda: hub(api).subscriber_count == 2, "subscribed")
    stop = "complete" if protocol == TRANSPORT_WS else "stop"
    await sub.ws.send(json.dumps({"id": first, "type": stop}))
    await wait_for(lambda: hub(api).subscriber_count == 1, "one operation completed")
    chain.block()
    await commit(api, db_url, chain, [])
    while True:  # graphql-ws answers the stop with a `complete`
        msg = json.loads(await sub.ws.recv())
        if msg["type"] in ("next", "data"):
            break
        if msg["type"] != "ka":  # graphql-ws keep-alive
            assert (msg["type"], msg["id"]) == ("complete", first)
    assert msg["id"] == second
    assert msg["payload"] == {"data": {"blocks": {"block": {"hash": chain.tip.hash}}}}
    # The same id again is refused while it runs (graphql-transport-ws closes with 4409).
    if protocol == TRANSPORT_WS:
        await sub.subscribe("subscription { blocks { block { height } } }")  # id 3: fine
        await sub.ws.send(
            json.dumps({"id": second, "type": "subscribe", "payload": {"query": "{ __typename }"}})
        )
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            while True:
                await sub.ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4409
    else:
        await sub.close()
    await wait_for(lambda: hub(api).subscriber_count == 0, "released")
    await wait_for(lambda: not hub(api).streams and not shared_tasks(), "no task left")


async def test_abrupt_disconnects_leave_no_streams_or_tasks(api: Api) -> None:
    subs = [await Subscriber.connect(api.ws_url, p) for p in (TRANSPORT_WS, LEGACY_WS) * 10]
    for i, s in enumerate(subs):
        await s.subscribe("subscription { blocks { block { height } } }")
        await s.subscribe(LISTINGS, {"w": {"listingId": i % 3}})
    await wait_for(lambda: hub(api).subscriber_count == 40, "subscribed")
    assert len(hub(api).streams) == 4 and len(shared_tasks()) == 4
    for s in subs:
        s.ws.transport.abort()
    await wait_for(lambda: hub(api).subscriber_count == 0, "all subscribers released")
    await wait_for(lambda: not shared_tasks(), "every shared stream's task ended")
    assert hub(api).streams == {} and hub(api).topics == {}


async def test_a_client_that_stops_reading_is_closed_and_the_others_still_get_pushes(
    api: Api, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ws, "SEND_QUEUE", 3)
    chain = Chain()
    chain.block()
    await chain.write(api.engine)
    query = "subscription { blocks { block { height } } }"
    slow = await Subscriber.connect(api.ws_url)
    await slow.ws.send(json.dumps({"id": "slow", "type": "subscribe", "payload": {"query": query}}))
    fast = await Subscriber.connect(api.ws_url)
    await fast.subscribe(query)
    await wait_for(lambda: hub(api).subscriber_count == 2, "subscribed")
    (stream,) = hub(api).streams.values()
    (stuck,) = [m for m in stream.members if m.id == "slow"]
    # Stand-in for a client whose TCP window stays shut: its transport takes no more frames,
    # so they wait in its outbox until the bound is reached.
    never = asyncio.Event()

    async def blocked(frame: str) -> None:
        await never.wait()

    stuck.conn.outbox._send = blocked
    for _ in range(ws.SEND_QUEUE + 2):
        chain.block()
        await commit(api, db_url, chain, [])
        # The other client gets every push meanwhile, in order.
        assert (await fast.next())["data"]["blocks"]["block"]["height"] == chain.height
    with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(slow.ws.recv(), 20)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        ws.SLOW_CLOSE_CODE,
        ws.SLOW_CLOSE_REASON,
    )
    await wait_for(lambda: hub(api).subscriber_count == 1, "the slow client released")
    chain.block()
    await commit(api, db_url, chain, [])
    assert (await fast.next())["data"]["blocks"]["block"]["height"] == chain.height
    await fast.close()
    await wait_for(lambda: not hub(api).streams and not shared_tasks(), "no task left")


async def test_outbox_writes_in_order_while_the_transport_keeps_up_and_queues_behind_it() -> None:
    sent: list[str] = []
    gate = asyncio.Event()
    gate.set()
    overflowed: list[bool] = []

    async def send(frame: str) -> None:
        await gate.wait()
        sent.append(frame)

    box = ws.Outbox(send, lambda: overflowed.append(True))
    box.put("a")
    assert sent == ["a"]  # written synchronously: no task, no loop turn
    gate.clear()
    for frame in "bcd":
        box.put(frame)
    assert sent == ["a"] and not overflowed
    gate.set()
    await wait_for(lambda: sent == ["a", "b", "c", "d"], "the backlog drained in order")
    box.put("e")
    assert sent[-1] == "e"
    gate.clear()
    for i in range(ws.SEND_QUEUE + 2):
        box.put(str(i))
    assert overflowed == [True] and box.closed
    box.put("late")
    gate.set()
    await asyncio.sleep(0.05)
    assert "late" not in sent


async def test_an_operation_with_extensions_is_served_by_strawberry_from_the_same_stream(
    api: Api, db_url: str
) -> None:
    chain = Chain()
    chain.block()
    await chain.write(api.engine)
    query = "subscription { blocks { block { height } } }"
    member = await Subscriber.connect(api.ws_url)
    await member.subscribe(query)
    # Request extensions keep the operation on Strawberry's per-operation path, which reads the
    # same shared stream through a queue.
    other = await Subscriber.connect(api.ws_url)
    payload = {"query": query, "variables": {}, "extensions": {"trace": True}}
    await other.ws.send(json.dumps({"id": "x", "type": "subscribe", "payload": payload}))
    await wait_for(lambda: hub(api).subscriber_count == 2, "subscribed")
    (stream,) = hub(api).streams.values()
    assert sorted(type(m).__name__ for m in stream.members) == ["Subscriber", "_QueueMember"]
    chain.block()
    await commit(api, db_url, chain, [])
    want = {"data": {"blocks": {"block": {"height": 2}}}}
    assert await member.next() == want
    assert await other.next() == want
    await other.close()
    await member.close()
    await wait_for(lambda: not hub(api).streams and not shared_tasks(), "no task left")
