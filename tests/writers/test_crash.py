"""kill -9 of a real `recchain relay` process: nothing accepted is lost, nothing is sent twice.

The node here is the fake of conftest (a scripted answer and a request held open on demand are
what the devnet node cannot give); the relay is the real CLI in a subprocess.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from recchain.config import PROJECT_ROOT
from tests.writers.conftest import ACCEPTED, FakeNode

READY = "relay listening on "


@asynccontextmanager
async def relay_process(db_url: str, node_url: str) -> AsyncIterator[tuple[str, int]]:
    """`recchain relay` on a free port; yields (base URL, pid). Killed with SIGKILL on exit."""
    env = dict(os.environ, DATABASE_URL=db_url, RECCHAIN_LOG_LEVEL="WARNING")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recchain.cli", "relay", "--port", "0", "--node-url", node_url,
        cwd=PROJECT_ROOT, env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    while True:
        raw = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert raw, "relay exited before listening:\n" + "".join(lines)
        line = raw.decode()
        lines.append(line)
        if line.startswith(READY):
            break

    async def drain() -> None:  # an unread pipe would block the relay's logging
        assert proc.stderr is not None
        while await proc.stderr.read(65536):
            pass

    drainer = asyncio.create_task(drain())
    try:
        yield line[len(READY) :].strip(), proc.pid
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
        await drainer


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], what: str, limit: float = 60.0
) -> None:
    """Poll a condition; the limit only stops a broken run from hanging forever."""
    deadline = asyncio.get_running_loop().time() + limit
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


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
    async with relay_process(db_url, "http://127.0.0.1:9") as (base, pid):
        txids = await submit_all(base)
        os.kill(pid, signal.SIGKILL)
    assert await statuses(engine) == dict.fromkeys(txids, "received")
    # Second life: the node is up; everything goes out, each exactly once.
    async with relay_process(db_url, url) as (base, _):

        async def all_broadcast() -> bool:
            return set((await statuses(engine)).values()) == {"broadcast"}

        await wait_for(all_broadcast, "every row to be broadcast")
        async with httpx.AsyncClient() as client:
            answer = (await client.get(f"{base}/v1/transactions/{txids[0]}")).json()
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
    async with relay_process(db_url, url) as (base, pid):
        txids = await submit_all(base)

        async def all_in_flight() -> bool:
            return len(node.mempool) == len(txids)

        await wait_for(all_in_flight, "every POST to reach the node")
        os.kill(pid, signal.SIGKILL)
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
    # Only the in-doubt ones were sent again, once each; the node kept every transaction once.
    assert {t.removeprefix("0x") for t in txids} == node.mempool
    for t in txids:
        resent = node.posts[t.removeprefix("0x")] - posts_before[t.removeprefix("0x")]
        assert resent == (1 if t in in_doubt else 0), t
