"""kill -9 of a real `recchain relay` process: nothing accepted is lost, nothing is sent twice,
and a transaction the node took before the kill ends `mined`, never `rejected`.

The first tests use the fake node of conftest (a request held open on demand); the last one the
devnet node, with a proxy in the test that lets the node answer and keeps the answer from the
relay, which is then killed; the relay is always the real CLI in a subprocess.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.writers.conftest import ACCEPTED, FakeNode, serve_app
from tests.writers.processes import (
    DEPLOYER,
    devnet_process,
    free_port,
    index_process,
    needs_node,
    relay_process,
    sign_call,
    uint_cv,
    wait_for,
)


async def statuses(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        return dict((await conn.execute(text("SELECT txid, status FROM relay_txs"))).all())


async def submit_all(base: str) -> list[str]:
    async with httpx.AsyncClient() as client:
        answers = [
            await client.post(f"{base}/v1/transactions", json={"tx": v["hex"]}) for v in ACCEPTED
        ]
    assert [a.status_code for a in answers] == [202] * len(ACCEPTED)
    return [a.json()["txid"] for a in answers]


async def test_kill_between_accept_and_broadcast(
    db_url: str, engine: AsyncEngine, fake_node: tuple[FakeNode, str]
) -> None:
    node, url = fake_node
    # First life: the node is down, so accepted rows cannot leave the outbox.
    async with relay_process(db_url, "http://127.0.0.1:9") as relay:
        txids = await submit_all(relay.url)
        os.kill(relay.pid, signal.SIGKILL)
    assert await statuses(engine) == dict.fromkeys(txids, "received")
    # Second life: the node is up; everything goes out, each exactly once.
    async with relay_process(db_url, url) as relay:

        async def all_broadcast() -> bool:
            return set((await statuses(engine)).values()) == {"broadcast"}

        await wait_for(all_broadcast, "every row to be broadcast")
        async with httpx.AsyncClient() as client:
            answer = (await client.get(f"{relay.url}/v1/transactions/{txids[0]}")).json()
    assert answer["status"] == "broadcast"
    assert {t.removeprefix("0x") for t in txids} == node.mempool
    assert all(node.posts[t.removeprefix("0x")] == 1 for t in txids)


async def test_kill_during_broadcast_loses_nothing_and_node_holds_each_once(
    db_url: str, engine: AsyncEngine, fake_node: tuple[FakeNode, str]
) -> None:
    node, url = fake_node
    # The node takes each transaction but its answer never reaches the relay (killed while
    # waiting): the worst case for double sending.
    release = node.hold = asyncio.Event()
    async with relay_process(db_url, url) as relay:
        txids = await submit_all(relay.url)

        async def all_in_flight() -> bool:
            return len(node.mempool) == len(txids)

        await wait_for(all_in_flight, "every POST to reach the node")
        os.kill(relay.pid, signal.SIGKILL)
    release.set()
    at_kill = await statuses(engine)
    assert set(at_kill) == set(txids)  # nothing accepted was lost
    in_doubt = {t for t, status in at_kill.items() if status == "received"}
    assert in_doubt  # the kill caught at least one POST whose answer never arrived
    async with engine.connect() as conn:
        unfinished = set(
            (
                await conn.execute(
                    text("SELECT txid FROM relay_attempts WHERE finished_at IS NULL")
                )
            ).scalars()
        )
    assert in_doubt <= unfinished  # each is known to be possibly at the node
    posts_before = dict(node.posts)
    async with relay_process(db_url, url):

        async def all_broadcast() -> bool:
            return set((await statuses(engine)).values()) == {"broadcast"}

        await wait_for(all_broadcast, "every row to be broadcast")
    # The in-doubt ones were looked up at the node, found in its mempool and not sent again;
    # the node kept every transaction once.
    assert {t.removeprefix("0x") for t in txids} == node.mempool
    for t in txids:
        bare = t.removeprefix("0x")
        assert node.posts[bare] - posts_before[bare] == 0, t
        assert node.lookups[bare] == (1 if t in in_doubt else 0), t


class AnswerThief:
    """A proxy in front of the devnet node that forwards every request and, once `steal` is set,
    lets the node answer a POST /v2/transactions but never hands the answer back: what a relay
    killed between the node's acceptance and its own record of it has seen."""

    def __init__(self, node_url: str) -> None:
        self.node_url = node_url
        self.steal = False
        self.stolen: list[tuple[int, bytes]] = []
        self.release = asyncio.Event()
        self.client = httpx.AsyncClient(timeout=60)

    async def forward(self, request: Request) -> Response:
        upstream = await self.client.request(
            request.method,
            self.node_url + request.url.path,
            content=await request.body(),
            headers={"content-type": request.headers.get("content-type", "")},
        )
        if self.steal and request.url.path == "/v2/transactions":
            self.stolen.append((upstream.status_code, upstream.content))
            await self.release.wait()
        return Response(upstream.content, upstream.status_code, upstream.headers)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        routes = [Route("/{path:path}", self.forward, methods=["GET", "POST"])]
        try:
            async with serve_app(Starlette(routes=routes)) as url:
                try:
                    yield url
                finally:
                    self.release.set()  # let the held handler finish so the server can stop
        finally:
            await self.client.aclose()


async def relay_row(engine: AsyncEngine, txid: str) -> Any:
    async with engine.connect() as conn:
        return (
            await conn.execute(
                text(
                    "SELECT status, reason, block_height, tx_status FROM relay_txs WHERE txid = :t"
                ),
                {"t": txid},
            )
        ).one()


@pytest.mark.parametrize("txindex", [True, False], ids=["node-txindex", "node-no-txindex"])
async def test_kill_after_the_node_took_the_transaction_ends_mined(
    db_url: str, engine: AsyncEngine, txindex: bool
) -> None:
    """Issue 16.4: the node admits and mines the transaction, the relay is killed before it
    records the answer, and a restarted relay must not leave it `rejected` for good.

    With a txindex the restarted relay asks the node by txid, finds it mined and marks it
    broadcast without sending it again. Without one the node cannot tell: the resend is
    refused BadNonce and recorded, and the indexer's `mined` record overrides it once the
    node's block reaches the indexer."""
    needs_node()
    observer_port = free_port()
    allowed = '["marketplace.set-fee-bps"]'  # the deployer's own call, which succeeds
    async with devnet_process(
        observer=f"http://127.0.0.1:{observer_port}", txindex=txindex
    ) as node:
        async with httpx.AsyncClient() as http:
            nonce = (await http.get(f"{node.url}/v2/accounts/{DEPLOYER}")).json()["nonce"]
        raw, txid = await sign_call(
            "marketplace.set-fee-bps", [uint_cv(150)], sender="deployer", nonce=nonce
        )
        bare = txid.removeprefix("0x")
        thief = AnswerThief(node.url)
        async with thief.running() as proxy:
            thief.steal = True
            async with (
                relay_process(db_url, proxy, RECCHAIN_RELAY__ALLOWED_FUNCTIONS=allowed) as relay,
                httpx.AsyncClient() as http,
            ):
                submitted = await http.post(f"{relay.url}/v1/transactions", json={"tx": raw})
                assert submitted.status_code == 202, submitted.text

                async def node_answered() -> bool:
                    return bool(thief.stolen)

                await wait_for(node_answered, "the node to answer the relay's POST")
                os.kill(relay.pid, signal.SIGKILL)
        assert thief.stolen == [(200, f'"{bare}"'.encode())]
        assert node.mined.get(bare) and node.mined[bare][0][1] == "success"
        assert (await relay_row(engine, txid)).status == "received"  # the answer was lost
        async with engine.connect() as conn:
            unfinished = (
                await conn.execute(
                    text("SELECT count(*) FROM relay_attempts WHERE txid = :t AND outcome IS NULL"),
                    {"t": txid},
                )
            ).scalar_one()
        assert unfinished == 1

        # Second life, straight to the node; the indexer is not running yet.
        async with relay_process(db_url, node.url, RECCHAIN_RELAY__ALLOWED_FUNCTIONS=allowed):

            async def relay_decided() -> bool:
                return (await relay_row(engine, txid)).status != "received"

            await wait_for(relay_decided, "the restarted relay to settle the row")
            settled = await relay_row(engine, txid)
            if txindex:
                assert (settled.status, settled.reason) == ("broadcast", None)
                assert node.posts[bare] == 1  # asked by txid, not sent again
            else:
                assert (settled.status, settled.reason) == ("rejected", "BadNonce")
                assert node.answers[bare] == ["200", "400 BadNonce"]
            assert len(node.mined[bare]) == 1  # admitted and mined once

            # The indexer starts and receives the node's blocks (held back until it answers).
            async with index_process(db_url, observer_port):

                async def mined() -> bool:
                    return (await relay_row(engine, txid)).status == "mined"

                await wait_for(mined, "the indexer to record the transaction mined", 180)
        final = await relay_row(engine, txid)
        assert (final.status, final.reason, final.tx_status) == ("mined", None, "success")
        assert final.block_height == node.mined[bare][0][0]
