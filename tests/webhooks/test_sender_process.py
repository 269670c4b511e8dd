"""Real `recchain webhooks send` processes killed with SIGKILL, and two of them at once: nothing
committed is lost, a duplicate carries the same idempotency key, and no endpoint ever sees its
events out of order or two deliveries at a time."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from db.session import to_libpq_url
from infra.config import PROJECT_ROOT
from ops.bench.chaingen import Chain, to_requests
from ops.bench.receiver import Behaviour, Receiver
from tests.indexer.helpers import query, run_requests
from tests.webhooks.helpers import events, register, statuses, wait_for
from writers.webhooks.sender import LOCK_SPACE
from writers.webhooks.service import READY


@asynccontextmanager
async def sender_process(db_url: str, concurrency: int = 32) -> AsyncIterator[int]:
    """`recchain webhooks send` in a subprocess; yields its pid; SIGKILLed on exit."""
    env = dict(
        os.environ,
        DATABASE_URL=to_libpq_url(db_url),
        RECCHAIN_LOG_LEVEL="WARNING",
        RECCHAIN_WEBHOOKS__ALLOW_INTERNAL_HOSTS='["127.0.0.1"]',
        RECCHAIN_WEBHOOKS__BACKOFF_INITIAL_S="0.05",
        RECCHAIN_WEBHOOKS__BACKOFF_MAX_S="0.4",
        RECCHAIN_WEBHOOKS__POLL_INTERVAL_S="0.2",
        RECCHAIN_WEBHOOKS__CONCURRENCY=str(concurrency),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recchain.cli", "webhooks", "send", "--metrics-port", "0",
        cwd=PROJECT_ROOT, env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        while True:
            raw = await asyncio.wait_for(proc.stderr.readline(), 60)
            assert raw, "the sender exited before running:\n" + "".join(lines)
            lines.append(raw.decode())
            if raw.decode().startswith(READY):
                break

        async def drain() -> None:  # an unread pipe would block the sender's logging
            assert proc.stderr is not None
            while await proc.stderr.read(65536):
                pass

        drainer = asyncio.create_task(drain())
        try:
            yield proc.pid
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
            await proc.wait()
            await drainer
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()


def _check_order_and_duplicates(rx: Receiver, path: str, ids: dict[int, str]) -> int:
    """First arrivals in sequence order, every event there, copies only with the same id;
    returns how many duplicates arrived."""
    first: list[int] = []
    copies: dict[int, set[str]] = defaultdict(set)
    for d in rx.of(path):
        seq = d.json["sequence"]
        copies[seq].add(d.headers["recchain-event-id"])
        if seq not in first:
            first.append(seq)
    assert first == sorted(ids), "first arrivals out of order or missing"
    assert {s: c for s, c in copies.items()} == {s: {i} for s, i in ids.items()}
    return len(rx.of(path)) - len(first)


async def test_kill_9_mid_delivery_and_between_commit_and_send(db_url: str) -> None:
    async with Receiver() as rx:
        hold = asyncio.Event()
        rx.behaviours["/k"] = Behaviour(hold=hold)
        ep = await register(db_url, ["block"], url=rx.url("/k"))
        chain = Chain(seed=41)
        first = chain.grow(None, 3, "main")
        await run_requests(db_url, [[r] for r in to_requests(first)])
        async with sender_process(db_url) as pid:
            await wait_for(lambda: rx.in_flight["/k"] == 1, "a delivery in flight")
            os.kill(pid, signal.SIGKILL)
        # Committed while no sender runs.
        more = chain.grow(first[-1]["index_block_hash"], 3, "main")
        await run_requests(db_url, [[r] for r in to_requests(more)])
        rx.behaviours["/k"] = Behaviour()
        hold.set()
        async with sender_process(db_url):
            await wait_for(lambda: set(statuses(db_url, ep["id"])) == {"delivered"}, "all sent")
    ids = {e["seq"]: e["event_id"] for e in events(db_url, ep["id"])}
    assert len(ids) == 6
    assert _check_order_and_duplicates(rx, "/k", ids) == 1  # the one in flight, same id


async def test_kill_9_at_an_arbitrary_moment_loses_nothing(db_url: str) -> None:
    async with Receiver() as rx:
        rx.behaviours["/r"] = Behaviour(delay_s=0.05)
        ep = await register(db_url, ["block", "certificate"], url=rx.url("/r"))
        await run_requests(
            db_url, [[r] for r in to_requests(Chain(seed=42, txs_per_block=2).grow(None, 10, "m"))]
        )
        total = len(events(db_url, ep["id"]))
        async with sender_process(db_url) as pid:
            await wait_for(lambda: len(rx.of("/r")) >= total // 3, "some deliveries")
            os.kill(pid, signal.SIGKILL)
        async with sender_process(db_url):
            await wait_for(lambda: set(statuses(db_url, ep["id"])) == {"delivered"}, "all sent")
    ids = {e["seq"]: e["event_id"] for e in events(db_url, ep["id"])}
    assert len(ids) == total
    assert _check_order_and_duplicates(rx, "/r", ids) <= 1


async def test_two_senders_never_reorder_or_overlap_an_endpoint(db_url: str) -> None:
    async with Receiver() as rx:
        paths = [f"/e{i}" for i in range(6)]
        endpoints = {}
        for p in paths:
            rx.behaviours[p] = Behaviour(delay_s=0.01)
            endpoints[p] = (await register(db_url, ["block", "listing"], url=rx.url(p)))["id"]
        chain = Chain(seed=43, txs_per_block=3)
        blocks = chain.grow(None, 24, "main")
        reqs = to_requests(blocks)
        lock_holders: set[int] = set()

        def sample_locks() -> None:
            rows = query(
                db_url,
                "SELECT DISTINCT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid::bigint = %s AND objid > 0 AND database ="
                " (SELECT oid FROM pg_database WHERE datname = current_database())",
                LOCK_SPACE,
            )
            lock_holders.update(r[0] for r in rows)

        async with sender_process(db_url, concurrency=2), sender_process(db_url, concurrency=2):
            for i in range(0, len(reqs), 3):  # blocks keep arriving while both send
                await run_requests(db_url, [[r] for r in reqs[i : i + 3]])
                sample_locks()

            def done() -> bool:
                sample_locks()
                return all(set(statuses(db_url, ep)) == {"delivered"} for ep in endpoints.values())

            await wait_for(done, "every endpoint delivered", limit=120)
    assert len(lock_holders) == 2, "both senders worked endpoints at the same time"
    for p, ep in endpoints.items():
        ids = {e["seq"]: e["event_id"] for e in events(db_url, ep)}
        assert _check_order_and_duplicates(rx, p, ids) == 0, p
        assert rx.max_in_flight[p] == 1, p
