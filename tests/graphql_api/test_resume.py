"""Resuming subscriptions: a client that reconnects (to this API process or another) says the
last thing it saw and first gets what it missed, then the live pushes. Blocks are indexed
through the real pipeline; real uvicorn, real websockets."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from db.session import to_libpq_url
from graphql_api.app import create_app
from tests.graphql_api.conftest import Api, api_settings, start_server
from tests.graphql_api.livechain import LiveChain, caught_up
from tests.graphql_api.wsclient import LEGACY_WS, TRANSPORT_WS, Subscriber, wait_for

BLOCKS = """subscription($after: String) { blocks(afterHash: $after) {
    block { height hash } rolledBack } }"""
LISTINGS = """subscription($h: Int, $w: ListingFilter) {
    listingUpdates(where: $w, afterHeight: $h) {
        kind listingId blockHeight listing { status } } }"""
CERT = """subscription($t: Int!, $h: Int) { certificateEvents(tokenId: $t, afterHeight: $h) {
    kind blockHeight certificate { owner } transfers { recipient } } }"""


def hub(api: Api) -> Any:
    return api.app.state.hub


def block(event: dict[str, Any]) -> tuple[int, str]:
    b = event["data"]["blocks"]["block"]
    return b["height"], b["hash"]


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_blocks_resume_after_the_last_hash_seen_then_go_live(
    api: Api, db_url: str, protocol: str
) -> None:
    chain = LiveChain(db_url)
    for _ in range(4):
        await chain.add([])
    await caught_up(hub(api), chain)
    seen = chain.blocks[1]
    sub = await Subscriber.connect(api.ws_url, protocol)
    await sub.subscribe(BLOCKS, {"after": seen["index_block_hash"]})
    for b in chain.blocks[2:]:
        assert block(await sub.next()) == (b["block_height"], b["index_block_hash"])
    await wait_for(lambda: hub(api).subscriber_count == 1, "subscribed")
    live = await chain.add([])
    got = await sub.next()
    assert block(got) == (5, live["index_block_hash"])
    assert got["data"]["blocks"]["rolledBack"] == []
    # A resume from the tip has nothing to catch up on: the next push is live.
    other = await Subscriber.connect(api.ws_url, protocol)
    await other.subscribe(BLOCKS, {"after": live["index_block_hash"]})
    await wait_for(lambda: hub(api).subscriber_count == 2, "second subscribed")
    newest = await chain.add([])
    assert block(await other.next()) == (6, newest["index_block_hash"])
    assert block(await sub.next()) == (6, newest["index_block_hash"])
    await sub.close()
    await other.close()


async def test_a_resume_from_an_orphaned_block_names_what_the_fork_removed(
    api: Api, db_url: str
) -> None:
    chain = LiveChain(db_url)
    for _ in range(3):
        await chain.add([])
    main = list(chain.blocks)
    # The client saw main's block 3; meanwhile a longer branch from block 1 won.
    chain.fork(main[0], "side")
    side = [chain.make([]) for _ in range(3)]
    await chain.index(*side)
    await caught_up(hub(api), chain)
    sub = await Subscriber.connect(api.ws_url)
    await sub.subscribe(BLOCKS, {"after": main[2]["index_block_hash"]})
    first = await sub.next()
    assert block(first) == (2, side[0]["index_block_hash"])
    assert first["data"]["blocks"]["rolledBack"] == [
        main[2]["index_block_hash"],
        main[1]["index_block_hash"],
    ]
    for b in side[1:]:
        got = await sub.next()
        assert block(got) == (b["block_height"], b["index_block_hash"])
        assert got["data"]["blocks"]["rolledBack"] == []
    await sub.close()


async def test_listing_and_certificate_subscriptions_resume_with_the_net_change(
    api: Api, db_url: str
) -> None:
    chain = LiveChain(db_url)
    await chain.add(chain.setup_and_mint(tokens=2))  # 1
    await chain.add([chain.list_token(1)])  # 2: listing 1
    await chain.add([chain.list_token(2)])  # 3: listing 2
    await chain.add([chain.buy(1)])  # 4: listing 1 sold
    await caught_up(hub(api), chain)
    buyer = chain.market.owners[1]

    since2 = await Subscriber.connect(api.ws_url)
    await since2.subscribe(LISTINGS, {"h": 2, "w": {"currency": "STX"}})
    got = [(await since2.next())["data"]["listingUpdates"] for _ in range(2)]
    assert [(u["listingId"], u["kind"], u["listing"]["status"]) for u in got] == [
        (1, "sold", "sold"),
        (2, "created", "active"),
    ]
    assert {u["blockHeight"] for u in got} == {4}
    since3 = await Subscriber.connect(api.ws_url)
    await since3.subscribe(LISTINGS, {"h": 3})
    only = (await since3.next())["data"]["listingUpdates"]
    assert (only["listingId"], only["kind"]) == (1, "sold")

    cert = await Subscriber.connect(api.ws_url)
    await cert.subscribe(CERT, {"t": 1, "h": 1})
    event = (await cert.next())["data"]["certificateEvents"]
    market = chain.market.cid("marketplace")
    assert [t["recipient"] for t in event["transfers"]] == [market, buyer]
    assert event["certificate"]["owner"] == buyer and event["blockHeight"] == 4
    # Nothing changed the certificate above 4: a resume from there starts with the live events.
    quiet = await Subscriber.connect(api.ws_url)
    await quiet.subscribe(CERT, {"t": 1, "h": 4})
    await wait_for(lambda: hub(api).subscriber_count == 4, "subscribed")
    await chain.add([chain.transfer(1)])  # 5
    live = (await quiet.next())["data"]["certificateEvents"]
    assert (live["kind"], live["blockHeight"]) == ("transfer", 5)
    assert (await cert.next())["data"]["certificateEvents"]["blockHeight"] == 5
    for s in (since2, since3, cert, quiet):
        await s.close()


async def test_bad_resume_points_are_refused_with_a_code(db_url: str, engine: Any) -> None:
    chain = LiveChain(db_url)
    for _ in range(4):
        await chain.add([])
    app = create_app(api_settings(db_url, max_page_size=2), engine=engine)
    server, task, port = await start_server(app)
    url = f"ws://127.0.0.1:{port}/graphql"
    try:
        cases = [
            (BLOCKS, {"after": "0x" + "ab" * 32}, "BLOCK_NOT_FOUND"),
            (BLOCKS, {"after": chain.blocks[0]["index_block_hash"]}, "LIMIT_EXCEEDED"),
            (LISTINGS, {"h": 99}, "BLOCK_NOT_FOUND"),
            (LISTINGS, {"h": -1}, "BAD_USER_INPUT"),
            (CERT, {"t": 1, "h": 99}, "BLOCK_NOT_FOUND"),
        ]
        for query, variables, code in cases:
            sub = await Subscriber.connect(url)
            await sub.subscribe(query, variables)
            msg = await sub.next()
            errors = msg.get("errors") or msg.get("payload")
            assert errors, msg
            assert errors[0]["extensions"]["code"] == code, (variables, msg)
            await sub.close()
        # Two blocks back is within the bound of 2.
        sub = await Subscriber.connect(url)
        await sub.subscribe(BLOCKS, {"after": chain.blocks[1]["index_block_hash"]})
        assert block(await sub.next())[0] == 3
        await sub.close()
    finally:
        server.should_exit = True
        await task


async def test_changes_notified_while_the_listen_connection_was_down_are_still_pushed(
    api: Api, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graphql_api import hub as hub_module

    # Long enough that the block below surely commits while nobody listens.
    monkeypatch.setattr(hub_module, "RECONNECT_S", 3.0)
    chain = LiveChain(db_url)
    await chain.add(chain.setup_and_mint(tokens=1))
    await caught_up(hub(api), chain)
    blocks = await Subscriber.connect(api.ws_url)
    await blocks.subscribe(BLOCKS)
    listings = await Subscriber.connect(api.ws_url)
    await listings.subscribe(LISTINGS)
    await wait_for(lambda: hub(api).subscriber_count == 2, "subscribed")
    with psycopg.connect(to_libpq_url(db_url), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            (hub_module.LISTEN_NAME,),
        )
    await wait_for(lambda: hub(api)._conn is None, "the LISTEN connection to drop")
    listed = await chain.add([chain.list_token(1)])
    assert hub(api)._conn is None, "reconnected before the block: nothing was lost"
    # Its notification went to no one; on reconnection every topic re-reads what changed.
    assert block(await blocks.next()) == (2, listed["index_block_hash"])
    update = (await listings.next())["data"]["listingUpdates"]
    assert (update["kind"], update["listingId"]) == ("created", 1)
    assert hub(api).resyncs == 1
    await blocks.close()
    await listings.close()
