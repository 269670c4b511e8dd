"""Faults of the indexer's data connection and of its leadership, met by real `recchain index
--source observer` processes while a node emulator (retries until 200, as stacks-node does) pushes
the demo chain: the database ends the data session (`pg_terminate_backend`, `idle_session_timeout`
on a quiet chain), the server itself is stopped and started again (a throw-away server of the
test's own, fast and immediate shutdown), the leader is paused (SIGSTOP) while a standby takes
over. Each ends with the tables equal to an uninterrupted replay of the same requests."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from sqlalchemy import make_url

from db.leader import Fenced, leadership
from db.session import create_engine, to_libpq_url
from indexer.pipeline import Indexer
from indexer.requests import Request, payload_hash
from indexer.service import IndexerService
from infra.config import Settings
from ops.bench.faults import (
    RESTART_DOWN_S,
    IndexProcess,
    NodeEmulator,
    data_backends,
    demo_requests,
    first_accepted_after,
    index_process,
    lock_backend,
    restart_under_push,
    terminate,
    wait_logged,
    wait_status,
)
from ops.pgcluster import PgCluster
from tests.indexer.conftest_db import fresh_db
from tests.indexer.helpers import query, run_requests, snapshot


async def _assert_equals_replay(
    db_url: str, server_url: str, requests: list[tuple[str, str]]
) -> None:
    with fresh_db(server_url) as clean:
        await run_requests(clean, [requests])
        assert snapshot(db_url) == snapshot(clean)
        same = "SELECT index_block_hash, block_height, canonical FROM blocks ORDER BY 1"
        assert query(db_url, same) == query(clean, same)
    assert query(db_url, "SELECT count(*) FROM raw_requests") == [(len(requests),)]


async def test_terminated_data_backend_reconnects_and_never_answers_500(
    db_url: str, server_url: str, tmp_path: Path
) -> None:
    requests = demo_requests()[:150]
    async with index_process(db_url, tmp_path) as proc:
        node = NodeEmulator([proc.url], requests)
        for stop in (30, 60, 90, 120):
            await node.push(stop)
            backends = data_backends(db_url)
            assert backends, "the leader has a data connection"
            terminate(db_url, backends)
        # Readiness notices a dead connection by itself (and reconnects).
        assert await proc.status("/readyz") == 200
        terminate(db_url, data_backends(db_url))
        await node.push()
        assert await proc.status("/readyz") == 200
        assert await proc.status("/healthz") == 200
        assert proc.proc.returncode is None
    assert 500 not in node.statuses(), node.answers
    await _assert_equals_replay(db_url, server_url, requests)


async def test_idle_session_timeout_on_a_quiet_chain_costs_the_node_nothing(
    db_url: str, server_url: str, tmp_path: Path
) -> None:
    requests = demo_requests()[:60]
    name = make_url(db_url).database
    with psycopg.connect(to_libpq_url(server_url), autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE \"{name}\" SET idle_session_timeout = '1s'")
    async with index_process(db_url, tmp_path) as proc:
        node = NodeEmulator([proc.url], requests)
        for stop in (20, 40):
            await node.push(stop)
            await asyncio.sleep(2.5)  # the quiet chain: the data session is ended meanwhile
        await node.push()
        # The leadership outlived the timeouts: its lock session is exempt.
        assert lock_backend(db_url, proc.pid) is not None
        assert proc.proc.returncode is None
    # Each first request after a quiet spell met a dead session and was done again at once.
    assert node.statuses() == {200}, node.answers
    assert "reachable again" in proc.tail()
    await _assert_equals_replay(db_url, server_url, requests)


async def test_database_down_answers_503_then_recovers(
    db_url: str, server_url: str, tmp_path: Path
) -> None:
    """While the data connection cannot be made (the database refuses new connections),
    requests and /readyz answer 503 and nothing is lost once it can again."""
    requests = demo_requests()[:20]
    name = make_url(db_url).database
    async with index_process(db_url, tmp_path) as proc:
        node = NodeEmulator([proc.url], requests)
        await node.push(10)
        backends = data_backends(db_url)
        with psycopg.connect(to_libpq_url(server_url), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            terminate(server_url, backends)
            async with httpx.AsyncClient(timeout=10) as client:
                path, body = requests[10]
                answer = await client.post(proc.url + path, content=body.encode())
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"]
            assert await proc.status("/readyz") == 503
            assert await proc.status("/healthz") == 200
        finally:
            with psycopg.connect(to_libpq_url(server_url), autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await node.push()
        assert await proc.status("/readyz") == 200
    assert query(db_url, "SELECT count(*) FROM raw_requests") == [(len(requests),)]


async def _metrics(proc: IndexProcess) -> str:
    async with httpx.AsyncClient(timeout=5) as client:
        return (await client.get(f"http://127.0.0.1:{proc.metrics_port}/metrics")).text


async def _until(what: str, check: Callable[[], bool], limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_server_restart_under_a_pushing_node_recovers_in_process(
    own_server: tuple[PgCluster, str],
    server_url: str,
    template_db: str,
    tmp_path: Path,
    mode: str,
) -> None:
    """The PostgreSQL server is stopped (`pg_ctl -m fast|immediate`) while the node pushes and
    started again on its port RESTART_DOWN_S later (the leader lock session is lost with it):
    meanwhile the observer answers every push 503 with a Retry-After (never 500, never no
    answer), `/readyz` fails, `/healthz` answers and `recchain_indexer_database_up` is 0;
    afterwards the same process (no restart) leads again, accepts the following pushes, and the
    tables equal an uninterrupted replay."""
    cluster, db_url = own_server
    requests = demo_requests()[:120]
    async with index_process(db_url, tmp_path) as proc:
        node = NodeEmulator([proc.url], requests)
        await node.push(30)
        pushing = asyncio.create_task(node.push())
        await _until("40 requests delivered", lambda: node.delivered >= 40)

        async def while_down(stopped: float) -> None:
            await _until("a push refused", lambda: any(a.sent > stopped for a in node.answers))
            assert not pushing.done()
            async with httpx.AsyncClient(timeout=10) as client:
                path, body = requests[node.delivered]
                answer = await client.post(proc.url + path, content=body.encode())
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["retry-after"]) >= 1
            assert answer.json()["error"].startswith("database unavailable"), answer.text
            assert await proc.status("/readyz") == 503
            assert await proc.status("/healthz") == 200
            assert _metric(await _metrics(proc), "recchain_indexer_database_up") == 0
            # Still listening and saying why once the leader lock session is gone too.
            await asyncio.sleep(max(0.0, RESTART_DOWN_S - 1 - (time.monotonic() - stopped)))
            assert proc.proc.returncode is None, proc.tail()
            assert await proc.status("/readyz") == 503
            assert await proc.status("/healthz") == 200
            assert _metric(await _metrics(proc), "recchain_indexer_database_up") == 0

        stopped, back = await restart_under_push(cluster, mode, RESTART_DOWN_S, while_down)
        during = [a.status for a in node.answers if stopped < a.sent and a.at < back]
        await asyncio.wait_for(pushing, 120)
        took, refused = first_accepted_after(node, back)
        print(
            f"\n{mode} shutdown, {back - stopped:.1f} s down: first push accepted {took:.2f} s"
            f" after the server was back ({len(refused)} refusals meanwhile)"
        )
        assert during and set(during) <= {503}, during
        assert set(refused) <= {503}, refused
        assert took < 60, took
        assert proc.proc.returncode is None, proc.tail()
        assert await proc.status("/readyz") == 200
        assert _metric(await _metrics(proc), "recchain_indexer_database_up") == 1
        assert _metric(await _metrics(proc), "recchain_indexer_leader") == 1
        # It stood by while the lock session was gone, then led again: a new term, no trace.
        log = proc.log.read_text()
        assert "stopped leading" in log and "epoch=2" in log, log
        assert "Traceback" not in log, log
    assert node.statuses() <= {200, 503}, node.answers
    await _assert_equals_replay(db_url, server_url, requests)


async def test_a_fenced_leader_cannot_commit_after_the_takeover(db_url: str) -> None:
    """Deterministic: leader A has not noticed that its lock session ended (its check interval
    is long); B takes the lock and its epoch; A's next batch is refused inside its transaction
    and nothing of it commits."""
    requests = demo_requests()[:4]
    settings = Settings(database_url=SecretStr(db_url))
    engine = create_engine(db_url, pool_size=1)
    try:
        async with (
            leadership(db_url, "indexer", check_interval=3600) as a,
            engine.connect() as conn,
        ):
            indexer = Indexer(conn, settings)
            await indexer.start()
            indexer.fence = a
            await indexer.process([Request(*requests[0])])
            terminate(db_url, [a.backend_pid])
            async with leadership(db_url, "indexer", poll_interval=0.05) as b:
                assert b.epoch == a.epoch + 1
                before = snapshot(db_url), query(db_url, "SELECT count(*) FROM raw_requests")
                with pytest.raises(Fenced):
                    await indexer.process([Request(*requests[1])])
                after = snapshot(db_url), query(db_url, "SELECT count(*) FROM raw_requests")
                assert after == before
    finally:
        await engine.dispose()


async def test_stepping_down_leaves_the_connection_to_the_request_in_work(db_url: str) -> None:
    """The term ends (the lock session lost, as a server restart does) while a request waits
    inside its transaction: the service closes the data connection only once that request is
    done, so it ends on its own terms (here it commits: no successor bumped the epoch, which is
    what the fence is about) instead of failing on a closed connection, which was a 500."""
    settings = Settings(database_url=SecretStr(db_url))
    engine = create_engine(db_url, pool_size=2)
    service = IndexerService(engine, settings)
    try:
        async with leadership(db_url, "indexer", check_interval=3600) as held:
            leading = asyncio.create_task(service.lead(held))
            await _until("connected", lambda: service.indexer is not None)
            # The request's first statement (its fence's FOR SHARE) waits for this row lock.
            with psycopg.connect(to_libpq_url(db_url)) as blocker:
                blocker.execute("SELECT 1 FROM leader_epochs FOR UPDATE")
                work = asyncio.create_task(service.process([Request(*demo_requests()[0])]))
                with psycopg.connect(to_libpq_url(db_url), autocommit=True) as watch:
                    # Polled, not awaited: the moment is a state of the server.
                    while not _waiting_on_a_lock(watch):  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                held.lost.set()  # what the lock watcher does, then run_as_leader cancels
                leading.cancel()
                await asyncio.sleep(0.3)
                assert not work.done()
                blocker.rollback()
            (outcome,) = await asyncio.wait_for(work, 30)
            assert outcome.ok, outcome
            with pytest.raises(asyncio.CancelledError):
                await leading
        assert service.indexer is None
        assert REGISTRY.get_sample_value("recchain_indexer_database_up") == 0
    finally:
        await engine.dispose()
    assert query(db_url, "SELECT count(*) FROM raw_requests") == [(1,)]


def _waiting_on_a_lock(watch: psycopg.Connection) -> bool:
    row = watch.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'"
    ).fetchone()
    return bool(row and row[0])


def _in_transaction(watch: psycopg.Connection) -> bool:
    row = watch.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL "
        "AND application_name NOT LIKE 'recchain-leader:%'"
    ).fetchone()
    return bool(row and row[0])


def _stored(db_url: str, payload: str) -> bool:
    rows = query(
        db_url, "SELECT 1 FROM raw_requests WHERE payload_hash = %s", payload_hash(payload)
    )
    return bool(rows)


async def _post(url: str, path: str, body: str) -> int | None:
    async with httpx.AsyncClient(timeout=120) as client:
        try:
            return (await client.post(url + path, content=body.encode())).status_code
        except httpx.HTTPError:
            return None


async def test_leader_paused_inside_a_transaction_commits_nothing_after_the_takeover(
    db_url: str, server_url: str, tmp_path: Path
) -> None:
    """The leader is SIGSTOPped while its data session is inside a request's transaction, its
    lock session is ended (what the server does to a host that went away), the standby takes
    over and indexes the following blocks, then the old leader is resumed: the request it was in
    the middle of is not answered 200 unless it had committed before it was paused, nothing it
    does commits any more, and it stands by. The tables equal an uninterrupted replay."""
    requests = demo_requests()[:120]
    async with (
        index_process(db_url, tmp_path) as a,
        index_process(db_url, tmp_path, ready=False) as b,
    ):
        assert await b.status("/readyz") == 503  # standby: listening, refusing
        node = NodeEmulator([a.url], requests)
        await node.push(20)
        # Send the next requests to A one by one until one is caught inside its transaction.
        caught = None
        with psycopg.connect(to_libpq_url(db_url), autocommit=True) as watch:
            for k in range(20, 60):
                answer = asyncio.create_task(_post(a.url, *requests[k]))
                # Polled, not awaited: the moment to catch is a state of another process.
                while not answer.done() and not _in_transaction(watch):  # noqa: ASYNC110
                    await asyncio.sleep(0)
                if not answer.done():
                    a.signal(signal.SIGSTOP)
                    caught = k
                    break
                assert answer.result() == 200
                node.delivered = k + 1
        assert caught is not None, "never caught the leader inside a transaction"
        committed_before = _stored(db_url, requests[caught][1])
        backend = lock_backend(db_url, a.pid)
        assert backend is not None
        terminate(db_url, [backend])
        took = await wait_status(b, "/readyz", 200)
        node.urls = [b.url]
        await node.push(caught + 20)
        before = snapshot(db_url), query(db_url, "SELECT count(*) FROM raw_requests")
        a.signal(signal.SIGCONT)
        status = await answer
        # Its session was ended by the takeover (it held the epoch's share lock): 503 or no
        # answer, never 500, and 200 only for a commit made before it was paused.
        assert status in (503, None) or (status == 200 and committed_before), status
        # It stands by in the same process: alive, refusing, committing nothing.
        await wait_logged(a, "stopped leading")
        assert a.proc.returncode is None
        assert await a.status("/readyz") == 503
        assert await _post(a.url, *requests[caught + 20]) == 503
        assert (snapshot(db_url), query(db_url, "SELECT count(*) FROM raw_requests")) == before
        await node.push()
    assert took < 20, took
    assert 500 not in node.statuses(), node.answers
    await _assert_equals_replay(db_url, server_url, requests)


def _metric(text: str, name: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    return float(line.split()[1])


async def test_lag_blocks_counts_the_blocks_sent_but_not_applied(
    db_url: str, tmp_path: Path
) -> None:
    requests = demo_requests()[:40]
    blocks = [i for i, (path, _) in enumerate(requests) if path == "/new_block"]
    missing = blocks[10]  # its descendants wait as orphans until it comes
    rest = [r for i, r in enumerate(requests) if i != missing]
    async with index_process(db_url, tmp_path) as proc, httpx.AsyncClient() as client:
        metrics_url = f"http://127.0.0.1:{proc.metrics_port}/metrics"
        await NodeEmulator([proc.url], rest).push()
        text = (await client.get(metrics_url)).text

        def height(i: int) -> int:
            return int(json.loads(requests[i][1])["block_height"])

        # The highest block sent, less the tip (the parent of the missing one).
        lag = max(height(i) for i in blocks if i != missing) - (height(missing) - 1)
        assert lag > 0
        assert _metric(text, "recchain_indexer_lag_blocks") == lag
        assert _metric(text, "recchain_indexer_database_up") == 1
        # Seconds since the tip block keep growing while nothing commits (a stalled chain).
        stalled = _metric(text, "recchain_indexer_lag_seconds")
        await asyncio.sleep(1.1)
        later = _metric((await client.get(metrics_url)).text, "recchain_indexer_lag_seconds")
        assert stalled > 0 and later >= stalled + 1
        assert _metric(text, "recchain_indexer_leader") == 1
        await NodeEmulator([proc.url], [requests[missing]]).push()
        text = (await client.get(metrics_url)).text
        assert _metric(text, "recchain_indexer_lag_blocks") == 0


async def test_takeover_waits_for_an_open_write_transaction_then_ends_it(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old leader's write transaction holds the epoch's share lock (it is paused there): the
    new leader's bump waits `BUMP_WAIT_S`, then ends that session, so the transaction can never
    commit and the takeover is not held up for good."""
    import db.leader

    monkeypatch.setattr(db.leader, "BUMP_WAIT_S", 0.5)
    async with leadership(db_url, "indexer", check_interval=3600) as a:
        conn = await psycopg.AsyncConnection.connect(to_libpq_url(db_url))
        try:
            await a.check(conn)  # inside a write transaction, which stays open
            await conn.execute("UPDATE checkpoints SET updated_at = now()")
            terminate(db_url, [a.backend_pid])
            started = asyncio.get_running_loop().time()
            async with leadership(db_url, "indexer", poll_interval=0.05) as b:
                waited = asyncio.get_running_loop().time() - started
                assert b.epoch == a.epoch + 1
            assert waited >= 0.5, waited
            with pytest.raises(psycopg.OperationalError):
                await conn.execute("SELECT 1")
        finally:
            await conn.close()
