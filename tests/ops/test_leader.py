"""Leader election against a real PostgreSQL: in-process semantics and kill -9 failover."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from typing import Any

import psycopg
import pytest

from db.leader import LeadershipLost, current_holder, leadership, lock_key, run_as_leader
from db.session import to_libpq_url
from infra.config import PROJECT_ROOT

# Upper bounds so a broken build fails instead of hanging; nothing asserts how fast things are.
BOUND_S = 30.0


def test_lock_key_is_stable_signed_64_bit_and_name_specific() -> None:
    assert lock_key("indexer") == lock_key("indexer")
    assert lock_key("indexer") != lock_key("indexer-testnet")
    assert -(2**63) <= lock_key("indexer") < 2**63


class _Waiter(logging.Handler):
    """Lets a test wait for a log message instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []
        self.event = asyncio.Event()
        self.wanted = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())
        if self.wanted and self.wanted in record.getMessage():
            self.event.set()


async def test_standby_waits_then_takes_over_on_release(db_url: str) -> None:
    waiter = _Waiter()
    waiter.wanted = "standing by"
    logger = logging.getLogger("recchain.leader")
    logger.addHandler(waiter)
    logger.setLevel(logging.INFO)
    try:
        async with leadership(db_url, "t-release", poll_interval=0.05) as first:
            second_entered = asyncio.Event()

            async def standby() -> int:
                async with leadership(db_url, "t-release", poll_interval=0.05) as second:
                    second_entered.set()
                    return second.backend_pid

            task = asyncio.create_task(standby())
            await asyncio.wait_for(waiter.event.wait(), BOUND_S)
            assert not second_entered.is_set()
            holder = await current_holder(db_url, "t-release")
            assert holder is not None and holder.endswith(f":{os.getpid()}")
            first_pid = first.backend_pid
        second_pid = await asyncio.wait_for(task, BOUND_S)
        assert second_pid != first_pid
        # Released on exit of the second block too.
        assert await current_holder(db_url, "t-release") is None
    finally:
        logger.removeHandler(waiter)


async def test_lost_connection_cancels_the_work(db_url: str) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()
    backend: list[int] = []

    async def work(held: Any) -> None:
        backend.append(held.backend_pid)
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    runner = asyncio.create_task(
        run_as_leader(db_url, "t-lost", work, poll_interval=0.05, check_interval=0.05)
    )
    await asyncio.wait_for(started.wait(), BOUND_S)
    # What a database failover or a network cut looks like from the holder's side.
    async with await psycopg.AsyncConnection.connect(to_libpq_url(db_url), autocommit=True) as c:
        await c.execute("SELECT pg_terminate_backend(%s)", (backend[0],))
    with pytest.raises(LeadershipLost):
        await asyncio.wait_for(runner, BOUND_S)
    assert cancelled.is_set()
    assert await current_holder(db_url, "t-lost") is None


async def test_run_as_leader_returns_the_work_result_and_releases(db_url: str) -> None:
    async def work(held: Any) -> str:
        held.ensure()
        return "done"

    assert await run_as_leader(db_url, "t-result", work) == "done"
    assert await current_holder(db_url, "t-result") is None


class Driver:
    """A `tests.ops.leader_driver` process and the JSON log lines it prints."""

    def __init__(self, db_url: str, name: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "tests.ops.leader_driver", db_url, name],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.history: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                self.lines.put(json.loads(raw))
            except json.JSONDecodeError:
                self.lines.put({"msg": raw.rstrip(), "unparsed": True})

    def wait_for(self, msg: str) -> dict[str, Any]:
        for line in self.history:
            if msg in str(line.get("msg", "")):
                return line
        while True:
            line = self.lines.get(timeout=BOUND_S)
            self.history.append(line)
            assert not line.get("unparsed"), line
            if msg in str(line.get("msg", "")):
                return line

    def said(self, msg: str) -> bool:
        while not self.lines.empty():
            self.history.append(self.lines.get_nowait())
        return any(msg in str(line.get("msg", "")) for line in self.history)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(BOUND_S)


def _terms(db_url: str) -> list[tuple[int, Any, Any, int]]:
    with psycopg.connect(to_libpq_url(db_url)) as conn:
        rows = conn.execute(
            "SELECT pid, min(at), max(at), count(*) FROM leader_terms GROUP BY pid ORDER BY 2"
        ).fetchall()
    return [(int(r[0]), r[1], r[2], int(r[3])) for r in rows]


def _wait_rows(db_url: str, pid: int, n: int) -> None:
    with psycopg.connect(to_libpq_url(db_url), autocommit=True) as conn:
        for _ in range(int(BOUND_S / 0.1)):
            row = conn.execute(
                "SELECT count(*) FROM leader_terms WHERE pid = %s", (pid,)
            ).fetchone()
            if row and row[0] >= n:
                return
            conn.execute("SELECT pg_sleep(0.1)")
    raise AssertionError(f"process {pid} never wrote {n} rows as leader")


def test_kill_9_of_the_leader_hands_over_to_exactly_one_standby(db_url: str) -> None:
    with psycopg.connect(to_libpq_url(db_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE leader_terms (pid int NOT NULL, at timestamptz NOT NULL)")
    name = "t-failover"
    drivers: list[Driver] = []
    try:
        a = Driver(db_url, name)
        drivers.append(a)
        acquired = a.wait_for("acquired leadership")
        assert acquired["logger"] == "recchain.leader" and acquired["leader"] == name
        b, c = Driver(db_url, name), Driver(db_url, name)
        drivers += [b, c]
        b.wait_for("standing by")
        c.wait_for("standing by")
        assert (asyncio.run(current_holder(db_url, name)) or "").endswith(f":{a.proc.pid}")
        _wait_rows(db_url, a.proc.pid, 3)

        a.kill()
        winner: Driver | None = None
        while winner is None:
            for d in (b, c):
                if d.said("acquired leadership"):
                    winner = d
                    break
            else:
                with psycopg.connect(to_libpq_url(db_url)) as conn:
                    conn.execute("SELECT pg_sleep(0.1)")
        loser = c if winner is b else b
        _wait_rows(db_url, winner.proc.pid, 3)
        assert not loser.said("acquired leadership")
        assert (asyncio.run(current_holder(db_url, name)) or "").endswith(f":{winner.proc.pid}")

        winner.kill()
        loser.wait_for("acquired leadership")
        _wait_rows(db_url, loser.proc.pid, 3)

        terms = _terms(db_url)
        assert [t[0] for t in terms] == [a.proc.pid, winner.proc.pid, loser.proc.pid]
        # Every term ends before the next begins: never two leaders writing at once.
        for (_, _, end, _), (_, start, _, _) in itertools.pairwise(terms):
            assert end < start
    finally:
        for d in drivers:
            d.kill()
