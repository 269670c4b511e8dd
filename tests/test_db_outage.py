"""The database goes away under `recchain relay`, `recchain metadata work` and `recchain webhooks
send` (real processes, a throw-away PostgreSQL server stopped and started again): each logs one
line when it loses the database and one when it has it back, no traceback in between, answers
honestly meanwhile (liveness up, readiness down, `*_database_up 0`, a submission refused 503),
and resumes its work by itself."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from sqlalchemy import text

from db.session import create_engine, session_factory
from indexer.metadata import queue as q
from indexer.metadata.devgateway import RunningGateway
from infra.config import PROJECT_ROOT
from ops.bench.chaingen import Chain, to_requests
from ops.bench.receiver import Behaviour, Receiver
from ops.pgcluster import PgCluster
from tests.indexer.helpers import run_requests
from tests.metadata.conftest import Store
from tests.webhooks.helpers import events, register, statuses
from tests.webhooks.helpers import wait_for as wait_until
from tests.writers.conftest import ACCEPTED, FakeNode, serve_app
from tests.writers.processes import RELAY_READY, free_port, wait_for
from writers.webhooks.service import READY as SENDER_READY

DOWN_S = 20.0  # the period over which log lines are counted


class Role:
    """A `recchain` command whose stderr lines are kept."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while raw := await self.proc.stderr.readline():
            self.lines.append(raw.decode(errors="replace").rstrip())

    async def wait_line(self, needle: str, after: int = 0, limit: float = 120.0) -> str:
        deadline = time.monotonic() + limit
        while True:
            for line in self.lines[after:]:
                if needle in line:
                    return line
            assert self.proc.returncode is None, "\n".join(self.lines[-30:])
            assert time.monotonic() < deadline, f"no {needle!r}:\n" + "\n".join(self.lines[-30:])
            await asyncio.sleep(0.1)


@asynccontextmanager
async def role(db_url: str, *args: str, **env: str) -> AsyncIterator[Role]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RECCHAIN_")}
    environ.pop("DATABASE_URL", None)
    environ.update(RECCHAIN_DATABASE_URL=db_url, RECCHAIN_LOG_LEVEL="INFO", PYTHONUNBUFFERED="1")
    environ.update(env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recchain.cli", *args, cwd=PROJECT_ROOT, env=environ,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    r = Role(proc)
    try:
        yield r
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await r.reader


def _outage_lines(lines: list[str]) -> list[str]:
    # Per-submission audit lines are the relay's record of requests, not of the outage.
    return [line for line in lines if "relay_submission" not in line]


async def test_database_outage_logs_state_changes_and_work_resumes(
    own_server: tuple[PgCluster, str], tmp_path: Path
) -> None:
    cluster, db_url = own_server
    store = Store(tmp_path)
    node = FakeNode()
    metrics_port = free_port()
    with RunningGateway(tmp_path) as gateway:
        async with (
            serve_app(node.app()) as node_url,
            role(db_url, "relay", "--port", "0", "--node-url", node_url) as relay,
            role(
                db_url, "metadata", "work", "--workers", "4",
                RECCHAIN_METADATA__GATEWAYS=json.dumps([gateway.url]),
                RECCHAIN_METADATA__POLL_INTERVAL_S="0.5",
                RECCHAIN_METADATA__METRICS_PORT=str(metrics_port),
            ) as worker,
            httpx.AsyncClient(timeout=10) as http,
        ):  # fmt: skip
            ready = await relay.wait_line(RELAY_READY)
            base = ready[ready.index(RELAY_READY) + len(RELAY_READY) :].strip()
            await worker.wait_line("metadata worker(s) running")
            await asyncio.sleep(2.0)  # both idle against a healthy database
            marks = len(relay.lines), len(worker.lines)

            cluster.stop_primary("fast")
            await asyncio.sleep(DOWN_S)
            during = _outage_lines(relay.lines[marks[0] :]), worker.lines[marks[1] :]
            tracebacks = [sum("Traceback" in line for line in lines) for lines in during]
            print(
                f"\nwith the database down for {DOWN_S:.0f} s: relay {len(during[0])} lines"
                f" ({tracebacks[0]} tracebacks), metadata work {len(during[1])} lines"
                f" ({tracebacks[1]} tracebacks)"
            )
            for name, lines in zip(("relay", "metadata work"), during, strict=True):
                print(f"{name}: " + " | ".join(lines))
                assert not any("Traceback" in line for line in lines), (name, lines)
                assert len(lines) <= 2, (name, lines)
                assert sum("database unreachable" in line for line in lines) == 1, (name, lines)

            # Honest answers while down: alive, not ready, a submission refused with a reason,
            # metrics that say the database is away (their sampled depths are stale).
            status = f"http://127.0.0.1:{metrics_port}"
            for url in (base, status):
                assert (await http.get(f"{url}/healthz")).status_code == 200
                readyz = await http.get(f"{url}/readyz")
                assert readyz.status_code == 503, readyz.text
                assert readyz.json()["ready"] is False and readyz.json()["reason"]
            assert "recchain_relay_database_up 0.0" in (await http.get(f"{base}/metrics")).text
            assert "recchain_metadata_database_up 0.0" in (await http.get(f"{status}/metrics")).text
            refused = await http.post(f"{base}/v1/transactions", json={"tx": ACCEPTED[0]["hex"]})
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "database_unavailable"
            assert "retry-after" in refused.headers

            marks = len(relay.lines), len(worker.lines)
            cluster.start_primary()
            restarted = time.monotonic()
            await relay.wait_line("database reachable again", marks[0])
            await worker.wait_line("database reachable again", marks[1])
            print(f"both back {time.monotonic() - restarted:.1f} s after the server accepted again")

            # Work resumes by itself: a submission is stored and broadcast, a job resolved.
            accepted = await http.post(f"{base}/v1/transactions", json={"tx": ACCEPTED[0]["hex"]})
            assert accepted.status_code == 202, accepted.text
            txid = accepted.json()["txid"]

            async def broadcast() -> bool:
                answer = (await http.get(f"{base}/v1/transactions/{txid}")).json()
                return bool(answer["status"] == "broadcast")

            await wait_for(broadcast, "the relay to broadcast after the outage")
            assert node.posts[txid.removeprefix("0x")] == 1
            for url in (base, status):
                assert (await http.get(f"{url}/readyz")).status_code == 200
            assert "recchain_relay_database_up 1.0" in (await http.get(f"{base}/metrics")).text
            assert "recchain_metadata_database_up 1.0" in (await http.get(f"{status}/metrics")).text

            engine = create_engine(db_url)
            try:
                cid = store.doc(name="after the outage")
                async with session_factory(engine)() as s, s.begin():
                    await q.enqueue(s, f"ipfs://{cid}", "certificate", 1)

                async def resolved() -> bool:
                    async with engine.connect() as conn:
                        status = await conn.execute(text("SELECT status FROM metadata_jobs"))
                        return bool(status.scalar_one() == "done")

                await wait_for(resolved, "the metadata worker to resolve after the outage")
            finally:
                await engine.dispose()
            after = _outage_lines(relay.lines[marks[0] :]), worker.lines[marks[1] :]
            for name, lines in zip(("relay", "metadata work"), after, strict=True):
                print(f"{name} after: " + " | ".join(lines))
                assert not any("Traceback" in line for line in lines), (name, lines)


async def test_webhook_sender_rides_out_a_database_outage(
    own_server: tuple[PgCluster, str],
) -> None:
    cluster, db_url = own_server
    metrics_port = free_port()
    chain = Chain(seed=44)
    async with (
        Receiver() as rx,
        role(
            db_url, "webhooks", "send", "--metrics-port", str(metrics_port),
            RECCHAIN_WEBHOOKS__ALLOW_INTERNAL_HOSTS='["127.0.0.1"]',
            RECCHAIN_WEBHOOKS__POLL_INTERVAL_S="0.5",
        ) as sender,
        httpx.AsyncClient(timeout=10) as http,
    ):  # fmt: skip
        ep = await register(db_url, ["block"], url=rx.url("/o"))
        await sender.wait_line(SENDER_READY)
        first = chain.grow(None, 3, "main")
        await run_requests(db_url, [[r] for r in to_requests(first)])
        await wait_until(lambda: set(statuses(db_url, ep["id"])) == {"delivered"}, "first sent")
        # A delivery in flight when the server goes: its outcome cannot be recorded, so it is
        # sent again afterwards (the at-least-once case, with the same event id).
        hold = asyncio.Event()
        rx.behaviours["/o"] = Behaviour(hold=hold)
        second = chain.grow(first[-1]["index_block_hash"], 3, "main")
        await run_requests(db_url, [[r] for r in to_requests(second)])
        await wait_until(lambda: rx.in_flight["/o"] == 1, "a delivery in flight")
        mark = len(sender.lines)

        cluster.stop_primary("fast")
        hold.set()
        await asyncio.sleep(DOWN_S)
        during = sender.lines[mark:]
        tracebacks = sum("Traceback" in line for line in during)
        print(
            f"\nwith the database down for {DOWN_S:.0f} s: webhooks send {len(during)} lines"
            f" ({tracebacks} tracebacks)\nwebhooks send: " + " | ".join(during)
        )
        assert not tracebacks, during
        assert len(during) <= 2, during
        assert sum("database unreachable" in line for line in during) == 1, during

        status = f"http://127.0.0.1:{metrics_port}"
        assert (await http.get(f"{status}/healthz")).status_code == 200
        readyz = await http.get(f"{status}/readyz")
        assert readyz.status_code == 503, readyz.text
        assert readyz.json()["ready"] is False and readyz.json()["reason"]
        assert "recchain_webhooks_database_up 0.0" in (await http.get(f"{status}/metrics")).text

        mark = len(sender.lines)
        cluster.start_primary()
        restarted = time.monotonic()
        back = await sender.wait_line("database reachable again", mark)
        print(f"back {time.monotonic() - restarted:.1f} s after the server accepted again: {back}")

        # Deliveries resume by themselves: what was queued before the outage, and what the
        # indexer queues after it.
        third = chain.grow(second[-1]["index_block_hash"], 3, "main")
        await run_requests(db_url, [[r] for r in to_requests(third)])
        await wait_until(
            lambda: statuses(db_url, ep["id"]) == ["delivered"] * 9, "all sent after the outage"
        )
        assert (await http.get(f"{status}/readyz")).status_code == 200
        assert "recchain_webhooks_database_up 1.0" in (await http.get(f"{status}/metrics")).text
        after = sender.lines[mark:]
        print("webhooks send after: " + " | ".join(after))
        assert not any("Traceback" in line for line in after), after

    # Nothing lost, first arrivals in order, a copy only of the one in flight, with its id.
    ids = {e["seq"]: e["event_id"] for e in events(db_url, ep["id"])}
    arrivals = [(d.json["sequence"], d.headers["recchain-event-id"]) for d in rx.of("/o")]
    firsts = list(dict.fromkeys(seq for seq, _ in arrivals))
    assert firsts == sorted(ids)
    assert all(ids[seq] == event_id for seq, event_id in arrivals)
    print(f"{len(arrivals)} arrivals of {len(ids)} events")
    assert len(arrivals) - len(firsts) <= 1, arrivals
