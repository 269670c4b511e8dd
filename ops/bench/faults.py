"""Fault recovery of the event-observer indexer, measured on real processes (`python -m
ops.bench faults`): for each fault, the time until the node's pushes are accepted again, and
whether the final tables equal an uninterrupted replay of the same requests.

Faults: the leader's data session ended by the server (`terminate`), ended by
`idle_session_timeout` on a quiet chain (`idle`), kill -9 of the leader with a standby
(`failover`, takeover = kill -> first push accepted by the standby), and the leader paused
(SIGSTOP) inside a write transaction while the standby takes over (`pause`: the takeover waits
for, then ends, the paused transaction), and the PostgreSQL server stopped while the node pushes
and started again on its port `RESTART_DOWN_S` later (`restart-fast`, `restart-immediate`:
pg_ctl's shutdown modes; a throw-away server of the benchmark's own, ops/pgcluster.py; recovery
= the server accepting again -> first push accepted, the leader lock taken again in the same
process).

The pieces are also what the fault and failover tests use: `index_process` (a real `recchain
index --source observer`), `NodeEmulator`, which behaves as stacks-node does toward its event
observers (stacks-core `testnet/stacks-node/src/event_dispatcher.rs`): each payload is POSTed
in order, and one that is not answered 200 (any status, or no answer at all) is sent again
after a delay until it is; the next payload waits for that. The delay here is short (the
node's grows to seconds) so what is measured is the indexer's recovery, not the node's
patience. With several urls, each retry goes to the next one, as the bundled nginx does on a
503 (`proxy_next_upstream`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from db.session import to_libpq_url
from indexer.tsv import read_requests
from infra.config import PROJECT_ROOT
from ops.bench.tls import tls
from ops.pgcluster import PgCluster, find_bindir, throwaway_server

DEMO_CHAIN = PROJECT_ROOT / "tests" / "fixtures" / "demo" / "chain.tsv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def demo_requests() -> list[tuple[str, str]]:
    return [(r.path, r.payload) for r in read_requests(DEMO_CHAIN)]


@dataclass
class IndexProcess:
    proc: asyncio.subprocess.Process
    port: int
    metrics_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def status(self, path: str) -> int | None:
        """The status of GET `path`, None when nothing answers."""
        try:
            async with httpx.AsyncClient(timeout=5, verify=tls()) as client:
                return (await client.get(self.url + path)).status_code
        except httpx.HTTPError:
            return None

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""


def _env(db_url: str, metrics_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECCHAIN_")}
    env.pop("DATABASE_URL", None)
    env.update(
        RECCHAIN_DATABASE_URL=db_url,
        RECCHAIN_INDEXER__METRICS_PORT=str(metrics_port),
        RECCHAIN_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return env


@asynccontextmanager
async def index_process(
    db_url: str, workdir: Path, *, ready: bool = True
) -> AsyncIterator[IndexProcess]:
    """One process on free ports, its log in `workdir`; SIGKILLed on exit if still running.
    Waits until it answers `/healthz` (and, with `ready`, until it leads: `/readyz` 200)."""
    port, metrics_port = free_port(), free_port()
    log = workdir / f"index-{port}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "recchain.cli", "index", "--source", "observer",
            "--listen", f"127.0.0.1:{port}",
            cwd=PROJECT_ROOT, env=_env(db_url, metrics_port),
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip
    process = IndexProcess(proc, port, metrics_port, log)
    try:
        await wait_status(process, "/readyz" if ready else "/healthz", 200)
        yield process
    finally:
        if proc.returncode is None:
            process.signal(signal.SIGCONT)
            proc.kill()
        await proc.wait()


async def wait_status(process: IndexProcess, path: str, status: int, limit: float = 90) -> float:
    """Seconds until GET `path` answers `status`."""
    start = time.monotonic()
    while await process.status(path) != status:
        assert process.proc.returncode is None, "index process exited:\n" + process.tail()
        assert time.monotonic() - start < limit, (
            f"{path} never answered {status}:\n" + process.tail()
        )
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def wait_logged(process: IndexProcess, needle: str, limit: float = 60) -> None:
    """Until the process's log has `needle`."""
    start = time.monotonic()
    while needle not in process.log.read_text(errors="replace"):
        assert process.proc.returncode is None, "index process exited:\n" + process.tail()
        assert time.monotonic() - start < limit, f"never logged {needle!r}:\n" + process.tail()
        await asyncio.sleep(0.05)


@dataclass
class Answer:
    index: int  # position of the request in the pushed sequence
    url: str
    status: int | None  # None: no answer (refused connection, reset, timeout)
    at: float  # time.monotonic() when answered
    sent: float  # time.monotonic() when sent: an answer read late may have been decided early


@dataclass
class NodeEmulator:
    """Pushes `requests` in order to `urls`, each until it is answered 200 (a retry goes to the
    next url)."""

    urls: Sequence[str]
    requests: Sequence[tuple[str, str]]
    retry_s: float = 0.05
    timeout_s: float = 30.0
    answers: list[Answer] = field(default_factory=list)
    delivered: int = 0  # requests answered 200 so far

    async def push(self, stop_at: int | None = None) -> None:
        """Deliver requests from `delivered` up to `stop_at` (all by default)."""
        end = len(self.requests) if stop_at is None else stop_at
        turn = 0
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            while self.delivered < end:
                path, body = self.requests[self.delivered]
                url = self.urls[turn % len(self.urls)]
                sent = time.monotonic()
                try:
                    response = await client.post(
                        url + path,
                        content=body.encode(),
                        headers={"content-type": "application/json"},
                    )
                    status: int | None = response.status_code
                except httpx.HTTPError:
                    status = None
                self.answers.append(Answer(self.delivered, url, status, time.monotonic(), sent))
                if status == 200:
                    self.delivered += 1
                else:
                    turn += 1
                    await asyncio.sleep(self.retry_s)

    def statuses(self) -> set[int | None]:
        return {a.status for a in self.answers}


def data_backends(db_url: str) -> list[int]:
    """Backends of the indexer processes' data connections on the test database (not their leader
    lock sessions, not this test's own connection)."""
    with psycopg.connect(to_libpq_url(db_url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
            "AND application_name NOT LIKE 'recchain-leader:%'"
        ).fetchall()
    return [int(r[0]) for r in rows]


def lock_backend(db_url: str, pid: int) -> int | None:
    """The backend of the leader lock session of process `pid`."""
    with psycopg.connect(to_libpq_url(db_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s",
            (f"recchain-leader:indexer:%:{pid}",),
        ).fetchone()
    return None if row is None else int(row[0])


def terminate(db_url: str, backends: Sequence[int]) -> None:
    with psycopg.connect(to_libpq_url(db_url), autocommit=True) as conn:
        for backend in backends:
            conn.execute("SELECT pg_terminate_backend(%s)", (backend,))
        # pg_terminate_backend only signals: wait until they are gone.
        for _ in range(200):
            left = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (list(backends),)
            ).fetchone()
            if left is None or left[0] == 0:
                return
            time.sleep(0.05)


# ---------------------------------------------------------------------- the benchmark
def _snapshot(db_url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every domain table and the block index, sorted, surrogate ids left out."""
    from db.models.base import FACT_TABLES, VERSIONED_TABLES
    from indexer.state import COLUMNS

    out: dict[str, list[tuple[object, ...]]] = {}
    with psycopg.connect(to_libpq_url(db_url)) as conn:
        for table in (*VERSIONED_TABLES, *FACT_TABLES):
            rows = conn.execute(f"SELECT {', '.join(COLUMNS[table])} FROM {table}").fetchall()
            out[table] = sorted(rows, key=repr)
        out["blocks"] = conn.execute(
            "SELECT index_block_hash, block_height, canonical FROM blocks ORDER BY 1"
        ).fetchall()
    return out


def _raw_requests(db_url: str) -> int:
    with psycopg.connect(to_libpq_url(db_url)) as conn:
        row = conn.execute("SELECT count(*) FROM raw_requests").fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def _database(server_url: str) -> Iterator[str]:
    from db.migrate import upgrade
    from db.session import to_sqlalchemy_url

    name = f"recchain_faults_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(to_libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = to_sqlalchemy_url(server_url).rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(to_libpq_url(server_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _reference(server_url: str, requests: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The tables after an uninterrupted run of `requests` through one process."""
    with _database(server_url) as url, tempfile.TemporaryDirectory() as tmp:
        async with index_process(url, Path(tmp)) as proc:
            await NodeEmulator([proc.url], requests).push()
        return _snapshot(url)


Recovery = tuple[float, list[int | None]]  # seconds, the refusals the node met meanwhile


def first_accepted_after(node: NodeEmulator, at: float) -> Recovery:
    """Seconds from `at` to the first push accepted, and the refusals the node met meanwhile."""
    first = next(a.at for a in node.answers if a.at > at and a.status == 200)
    return first - at, [a.status for a in node.answers if at < a.at < first]


async def _terminate(
    url: str, requests: Sequence[tuple[str, str]], work: Path
) -> tuple[float, list[int | None]]:
    """Data session ended between two pushes: the next push's latency."""
    async with index_process(url, work) as proc:
        node = NodeEmulator([proc.url], requests)
        await node.push(len(requests) // 2)
        terminate(url, data_backends(url))
        at = time.monotonic()
        await node.push()
        return first_accepted_after(node, at)


async def _idle(
    url: str, requests: Sequence[tuple[str, str]], work: Path
) -> tuple[float, list[int | None]]:
    """idle_session_timeout (1 s) ended the data session on a quiet chain: the next push."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(to_libpq_url(url), autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE \"{name}\" SET idle_session_timeout = '1s'")
    async with index_process(url, work) as proc:
        node = NodeEmulator([proc.url], requests)
        await node.push(len(requests) // 2)
        await asyncio.sleep(2.0)
        at = time.monotonic()
        await node.push()
        return first_accepted_after(node, at)


async def _failover(
    url: str, requests: Sequence[tuple[str, str]], work: Path
) -> tuple[float, list[int | None]]:
    """kill -9 of the leader mid-stream, the node's retries alternating between the two."""
    async with (
        index_process(url, work) as a,
        index_process(url, work, ready=False) as b,
    ):
        node = NodeEmulator([a.url, b.url], requests)
        await node.push(len(requests) // 2)
        pushing = asyncio.create_task(node.push())
        await asyncio.sleep(random.uniform(0.0, 0.05))  # with a push in flight, mostly
        a.signal(signal.SIGKILL)
        at = time.monotonic()
        await pushing
        return first_accepted_after(node, at)


async def _pause(
    url: str, requests: Sequence[tuple[str, str]], work: Path
) -> tuple[float, list[int | None]]:
    """The leader SIGSTOPped inside a write transaction, its lock session ended: kill of the lock
    session -> first push accepted by the standby (waits BUMP_WAIT_S for the paused transaction,
    then ends it); the old leader is resumed afterwards and stands by."""
    half = len(requests) // 2
    async with (
        index_process(url, work) as a,
        index_process(url, work, ready=False) as b,
    ):
        node = NodeEmulator([a.url], requests)
        await node.push(half)
        with psycopg.connect(to_libpq_url(url), autocommit=True) as watch:
            in_flight = asyncio.create_task(
                NodeEmulator([a.url], requests[half : half + 1], retry_s=3600).push()
            )
            while not in_flight.done() and not _in_transaction(watch):  # noqa: ASYNC110
                await asyncio.sleep(0)  # polled: the moment is a state of another process
            a.signal(signal.SIGSTOP)
        backend = lock_backend(url, a.pid)
        assert backend is not None
        terminate(url, [backend])
        at = time.monotonic()
        node.urls = [b.url]
        await node.push()
        a.signal(signal.SIGCONT)
        in_flight.cancel()
        await wait_logged(a, "stopped leading")
        return first_accepted_after(node, at)


RESTART_DOWN_S = 5.0  # longer than the leader lock's check interval: the lock session goes too


async def restart_under_push(
    cluster: PgCluster,
    mode: str,
    down_s: float,
    while_down: Callable[[float], Awaitable[None]] | None = None,
) -> tuple[float, float]:
    """Stop the server (pg_ctl -m `mode`), run `while_down(stopped)`, start it again `down_s`
    after it stopped; returns (when it stopped, when it accepted again), by time.monotonic()."""
    # In a thread: the node keeps pushing while the server shuts down.
    await asyncio.to_thread(cluster.stop_primary, mode)
    stopped = time.monotonic()
    try:
        if while_down is not None:
            await while_down(stopped)
        await asyncio.sleep(max(0.0, down_s - (time.monotonic() - stopped)))
    finally:
        # Not in a thread: the node sends nothing between the server accepting and `back`, so
        # the first push accepted after `back` measures the recovery.
        cluster.start_primary()
    return stopped, time.monotonic()


async def _restart(
    mode: str, cluster: PgCluster, url: str, requests: Sequence[tuple[str, str]], work: Path
) -> Recovery:
    async with index_process(url, work) as proc:
        node = NodeEmulator([proc.url], requests)
        half = len(requests) // 2
        await node.push(half)
        pushing = asyncio.create_task(node.push())
        while node.delivered < half + 5:  # noqa: ASYNC110  # polled: mid-stream, not at a pause
            await asyncio.sleep(0.01)
        _, back = await restart_under_push(cluster, mode, RESTART_DOWN_S)
        # Bounded: the node would retry for ever a process that never recovers.
        await asyncio.wait_for(pushing, 120)
        assert proc.proc.returncode is None, "the process did not ride out the restart"
        return first_accepted_after(node, back)


def _in_transaction(watch: psycopg.Connection[Any]) -> bool:
    row = watch.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL "
        "AND application_name NOT LIKE 'recchain-leader:%'"
    ).fetchone()
    return bool(row and row[0])


def _corrupted(payload: str) -> str | None:
    """The block with its first real transaction's raw_tx truncated (still valid hex), or None."""
    doc = json.loads(payload)
    for tx in doc.get("transactions", []):
        if tx.get("raw_tx") not in (None, "0x00"):
            tx["raw_tx"] = tx["raw_tx"][:-4]
            return json.dumps(doc)
    return None


async def _corrupt(url: str, requests: Sequence[tuple[str, str]], work: Path) -> Recovery:
    """A corrupt copy of a block a third of the way (issue: a truncated raw_tx) is refused, the
    node moves on and the descendants wait as orphans; then the genuine copy arrives (an
    archive replay, or another node): its answer's latency, descendants adopted in it. The
    corrupt copy stays in raw_requests with its reason (one row more than the replay)."""
    k, bad = next(
        (i, c)
        for i in range(len(requests) // 3, len(requests))
        if requests[i][0] == "/new_block" and (c := _corrupted(requests[i][1])) is not None
    )
    async with index_process(url, work) as proc:
        node = NodeEmulator([proc.url], [*requests[:k], (requests[k][0], bad), *requests[k + 1 :]])
        await node.push()
        at = time.monotonic()
        genuine = NodeEmulator([proc.url], requests[k : k + 1])
        await genuine.push()
        return first_accepted_after(genuine, at)


FAULTS = {
    "terminate": _terminate,
    "idle": _idle,
    "failover": _failover,
    "pause": _pause,
    "corrupt": _corrupt,
}
EXTRA_RAW_REQUESTS = {"corrupt": 1}  # stored refusals the uninterrupted replay does not have
# Faults on a throw-away server of their own, by pg_ctl's shutdown mode.
RESTARTS = {"restart-fast": "fast", "restart-immediate": "immediate"}


@contextlib.contextmanager
def _fresh(fault: str, server_url: str) -> Iterator[tuple[str, PgCluster | None]]:
    """A fresh migrated database for one run: on the shared server, or on a server of the run's
    own for a fault that stops its server."""
    if fault not in RESTARTS:
        with _database(server_url) as url:
            yield url, None
        return
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit(f"{fault}: no PostgreSQL server binaries found (RECCHAIN_PG_BINDIR)")
    with throwaway_server(bindir) as (cluster, url):
        yield url, cluster


async def run(faults: Sequence[str], runs: int, count: int) -> dict[str, Any]:
    from db.session import to_sqlalchemy_url

    server_url = to_sqlalchemy_url(os.environ["DATABASE_URL"])
    requests = demo_requests()[:count]
    reference = await _reference(server_url, requests)
    report: dict[str, Any] = {"requests": len(requests), "load_average": os.getloadavg()[0]}
    for fault in faults:
        times, equal, refused = [], 0, Counter[str]()
        for _ in range(runs):
            with _fresh(fault, server_url) as (url, cluster), tempfile.TemporaryDirectory() as tmp:
                if cluster is None:
                    took, statuses = await FAULTS[fault](url, requests, Path(tmp))
                else:
                    took, statuses = await _restart(
                        RESTARTS[fault], cluster, url, requests, Path(tmp)
                    )
                times.append(round(took, 3))
                refused.update(str(x or "no answer") for x in statuses)
                extra = EXTRA_RAW_REQUESTS.get(fault, 0)
                equal += _snapshot(url) == reference and _raw_requests(url) == len(requests) + extra
        report[fault] = {
            "recovery_s": times,
            "refusals_met_by_the_node": dict(refused),
            "median_s": round(statistics.median(times), 3),
            "max_s": max(times),
            "equal_to_replay": f"{equal}/{runs}",
        }
    report["load_average_after"] = os.getloadavg()[0]
    return report


def _cmd(args: argparse.Namespace) -> int:
    report = asyncio.run(run(args.faults or [*FAULTS, *RESTARTS], args.runs, args.requests))
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def register(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = bench_sub.add_parser(
        "faults", help="indexer recovery per fault (real processes), vs an uninterrupted replay"
    )
    p.add_argument(
        "--fault", dest="faults", action="append", choices=sorted([*FAULTS, *RESTARTS]),
        help="a fault to measure (repeat; default: all)",
    )  # fmt: skip
    p.add_argument("--runs", type=int, default=3, help="runs per fault, each on a fresh database")
    p.add_argument("--requests", type=int, default=120, help="demo-chain requests pushed per run")
    p.add_argument("--json", action="store_true", help="one JSON line")
    p.set_defaults(handler=_cmd)
