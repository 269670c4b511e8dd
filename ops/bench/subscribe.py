"""`python -m ops.bench subscribe --clients N`: how many concurrent subscribers one API process
holds, and the latency of one change to all of them.

The API runs as its own process (`recchain serve`). The subscribers are lean websocket clients
in `--procs` separate processes (raw asyncio protocol: handshake, a minimal frame parser,
permessage-deflate like a browser, pongs; a timestamp per received chunk), so that the load
generator costs less than the server it measures. Each reports its own CPU time.

Two sources of changes:

- default: each round commits a new canonical block and its NOTIFY in one transaction (what
  the indexer does) and measures commit -> delivery per subscriber;
- `--tip`: a real `recchain index --source observer` process receives generated blocks
  (ops.bench.chaingen) over HTTP at `--interval`, and the figure is tip latency, block POSTed
  to the event observer -> pushed to each subscriber (parse, write, commit, NOTIFY, the API's
  query, fan-out).

`--replica` starts its own primary + hot standby pair (ops/pgcluster.py, fsync on) and runs
the same rounds twice: with the API reading the primary, then with it reading the standby (LISTEN
on the primary, each push after the standby replayed the block's commit); the report has both,
and how long notifications waited for the standby.

`--listings N` measures many distinct topics instead: N listings are seeded, every subscriber
socket carries `--per-socket` operations `listingUpdates(where: {listingId: i})` with distinct
ids (N topics in all), and each round commits a block changing `--changes` random listings;
the figure is commit -> push of each changed listing's update. Meanwhile a probe thread times
`/healthz` and a simple query (`{ _meta { block { height } } }`) every 50 ms: how responsive the
process stays while it recomputes topics.

Timestamps are CLOCK_MONOTONIC, which is system-wide on Linux, so they compare across processes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing as mp
import os
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
import zlib
from multiprocessing.connection import Connection
from typing import Any, cast

import httpx
import psycopg
from sqlalchemy import make_url

from db.channels import BLOCKS
from db.migrate import upgrade
from db.session import database_url, to_libpq_url
from infra.config import PROJECT_ROOT, get_settings
from ops.bench.e2e import free_port, scrape
from ops.bench.query import cpu_seconds, start_api

BLOCKS_QUERY = "subscription { blocks { block { height hash } } }"
LISTING_QUERY = (
    "subscription($id: Int!) { listingUpdates(where: {listingId: $id})"
    " { kind listingId blockHeight listing { price status } } }"
)
SIMPLE_QUERY = "{ _meta { block { height } } }"
PROTOCOLS = ("graphql-transport-ws", "graphql-ws")


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the lean client (runs in the client processes) ---------------------------------------------


def _frame(text: str, opcode: int = 0x1) -> bytes:
    """A client frame: masked (as the protocol requires) with a zero key, which leaves the
    payload as it is and costs nothing."""
    data = text.encode()
    n = len(data)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + data


class Tally:
    """Arrivals per height in one client process; tells the parent when a height is complete."""

    def __init__(self, clients: int, pipe: Connection, each: bool = False) -> None:
        self.clients = clients
        self.pipe = pipe
        # Listing topics: only the changed listings' subscribers get a push, so every arrival
        # is reported (the parent knows how many to expect) instead of a complete height.
        self.each = each
        self.arrivals: dict[int, list[float]] = {}
        self.closes: dict[int, int] = {}
        self.subscribed = 0
        self.failed = 0

    def arrived(self, height: int, at: float) -> None:
        got = self.arrivals.setdefault(height, [])
        got.append(at)
        if self.each:
            self.pipe.send(("push", height))
        elif len(got) == self.clients:
            self.pipe.send(("height", height))


class LeanClient(asyncio.Protocol):
    def __init__(
        self,
        host: str,
        port: int,
        protocol: str,
        tally: Tally,
        deflate: bool,
        listing_ids: range | None = None,
        blocks_ops: int = 1,
    ) -> None:
        self.host, self.port, self.protocol, self.tally = host, port, protocol, tally
        self.offer_deflate = deflate
        self.listing_ids = listing_ids
        self.blocks_ops = blocks_ops
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.handshake = True
        self.inflate: Any = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        key = base64.b64encode(os.urandom(16)).decode()
        ext = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if self.offer_deflate else ""
        self.transport.write(
            (
                f"GET /graphql HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {self.protocol}\r\n{ext}\r\n"
            ).encode()
        )

    def send(self, message: dict[str, Any], opcode: int = 0x1) -> None:
        assert self.transport is not None
        self.transport.write(_frame(json.dumps(message), opcode))

    def data_received(self, data: bytes) -> None:
        at = now()
        buf = self.buf + data
        if self.handshake:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            head, buf = buf[:end].decode("latin-1"), buf[end + 4 :]
            if " 101 " not in head.split("\r\n", 1)[0]:
                self._fail(head.split("\r\n", 1)[0])
                return
            if "permessage-deflate" in head.lower():
                self.inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            self.handshake = False
            self.send({"type": "connection_init", "payload": {}})
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n, pos = b1 & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, pos = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, pos = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < pos + n:
                break
            payload, buf = buf[pos : pos + n], buf[pos + n :]
            opcode = b0 & 0x0F
            if b0 & 0x40 and self.inflate is not None:
                payload = self.inflate.decompress(payload + b"\x00\x00\xff\xff")
            if opcode == 0x1:
                height = self._push_height(payload)
                if height is not None:
                    self.tally.arrived(height, at)
                else:
                    self._message(json.loads(payload), at)
            elif opcode == 0x9:  # ping -> pong with the same payload
                assert self.transport is not None
                self.transport.write(bytes((0x8A, 0x80 | len(payload))) + b"\0\0\0\0" + payload)
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.tally.closes[code] = self.tally.closes.get(code, 0) + 1
                assert self.transport is not None
                self.transport.close()
        self.buf = buf

    @staticmethod
    def _push_height(payload: bytes) -> int | None:
        """The height a `blocks` push carries, read without parsing the whole message (the
        client must cost less than the server it measures); None for anything else."""
        if b'"type":"next"' not in payload[:40] and b'"type":"data"' not in payload[:40]:
            return None
        at = payload.find(b'"blocks":{"block":{"height":')
        if at < 0:
            return None
        at += 28
        end = payload.find(b",", at)
        return int(payload[at:end]) if end > at else None

    def _message(self, msg: dict[str, Any], at: float) -> None:
        kind = msg.get("type")
        if kind in ("next", "data"):
            data = msg["payload"]["data"]
            if "listingUpdates" in data:
                self.tally.arrived(data["listingUpdates"]["blockHeight"], at)
            else:
                self.tally.arrived(data["blocks"]["block"]["height"], at)
        elif kind == "connection_ack":
            start = "subscribe" if self.protocol == PROTOCOLS[0] else "start"
            if self.listing_ids is None:
                for op in range(1, self.blocks_ops + 1):
                    self.send({"id": str(op), "type": start, "payload": {"query": BLOCKS_QUERY}})
            for lid in self.listing_ids or ():
                payload = {"query": LISTING_QUERY, "variables": {"id": lid}}
                self.send({"id": str(lid), "type": start, "payload": payload})
            if not self.done.done():
                self.done.set_result(None)
        elif kind == "ping":
            self.send({"type": "pong"})
        elif kind == "error":
            self._fail(json.dumps(msg))

    def _fail(self, why: str) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(why))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(f"connection lost: {exc}"))


async def _client_main(
    port: int,
    clients: int,
    offset: int,
    protocol: str,
    deflate: bool,
    pipe: Connection,
    per_socket: int = 0,
    blocks_ops: int = 1,
) -> None:
    loop = asyncio.get_running_loop()
    tally = Tally(clients * blocks_ops, pipe, each=per_socket > 0)
    conns: list[LeanClient] = []
    gate = asyncio.Semaphore(100)  # concurrent handshakes per process

    async def one(i: int) -> None:
        proto = protocol if protocol != "mixed" else PROTOCOLS[(offset + i) % 2]
        ids = None
        if per_socket:
            first = (offset + i) * per_socket + 1
            ids = range(first, first + per_socket)
        async with gate:
            _, client = await loop.create_connection(
                lambda: LeanClient("127.0.0.1", port, proto, tally, deflate, ids, blocks_ops),
                "127.0.0.1",
                port,
            )
            conns.append(client)
            await asyncio.wait_for(client.done, 120)

    results = await asyncio.gather(*(one(i) for i in range(clients)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    pipe.send(("ready", len(results) - len(errors), [repr(e) for e in errors[:3]]))
    stop = loop.create_future()
    cpu0 = 0.0

    def command() -> None:
        nonlocal cpu0
        msg = pipe.recv()
        if msg == "measure":
            cpu0 = time.process_time()
        elif msg == "stop" and not stop.done():
            stop.set_result(None)

    loop.add_reader(pipe.fileno(), command)
    await stop
    cpu = time.process_time() - cpu0
    # The event loop made the pipe non-blocking; the arrivals do not fit its buffer.
    loop.remove_reader(pipe.fileno())
    os.set_blocking(pipe.fileno(), True)
    pipe.send(("done", tally.arrivals, tally.closes, cpu))
    for c in conns:
        if c.transport is not None:
            c.transport.close()


def client_process(
    port: int,
    clients: int,
    offset: int,
    protocol: str,
    deflate: bool,
    pipe: Connection,
    per_socket: int = 0,
    blocks_ops: int = 1,
) -> None:
    raise_fd_limit()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency of the API
        pass
    asyncio.run(
        _client_main(port, clients, offset, protocol, deflate, pipe, per_socket, blocks_ops)
    )


# -- the driver ---------------------------------------------------------------------------------


def _prepare(name: str) -> str:
    server = database_url(get_settings())
    with psycopg.connect(to_libpq_url(server), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    return url


def _commit_block(conn: psycopg.Connection[Any], height: int) -> float:
    h = f"0x{height:064x}"
    with conn.transaction():
        conn.execute(
            "INSERT INTO blocks (index_block_hash, block_hash, block_height,"
            " parent_index_block_hash, block_time, canonical) VALUES (%s, %s, %s, %s, %s, true)",
            (h, h, height, f"0x{height - 1:064x}", int(time.time())),
        )
        conn.execute(
            "SELECT pg_notify(%s, %s)",
            (BLOCKS, json.dumps({"height": height, "hash": h, "rolled_back": [], "changes": {}})),
        )
    return now()


class Observer:
    """`recchain index --source observer` on a free port, fed generated blocks over HTTP."""

    def __init__(self, url: str) -> None:
        from ops.bench import chaingen

        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECCHAIN_")}
        env.pop("DATABASE_URL", None)
        env.update(
            RECCHAIN_DATABASE_URL=url,
            RECCHAIN_NETWORK="testnet",
            RECCHAIN_INDEXER__METRICS_PORT=str(free_port()),
            RECCHAIN_LOG_LEVEL="WARNING",
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recchain.cli", "index", "--source", "observer",
             "--listen", f"127.0.0.1:{self.port}"],
            env=env, cwd=PROJECT_ROOT,
        )  # fmt: skip
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)
        self.blocks = chaingen.stream(seed=7, txs_per_block=3)
        for _ in range(600):
            with contextlib.suppress(httpx.TransportError):
                self.http.get("/")
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.close()
        raise RuntimeError("the indexer's event observer did not start")

    def post_next(self) -> tuple[int, float]:
        """POSTs the next block; (its height, the time the POST started)."""
        block = next(self.blocks)
        body = json.dumps(block, separators=(",", ":"))
        started = now()
        resp = self.http.post(
            "/new_block", content=body, headers={"content-type": "application/json"}
        )
        if resp.status_code != 200:
            raise RuntimeError(f"observer answered {resp.status_code}: {resp.text[:200]}")
        return int(block["block_height"]), started

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _replica_waits(port: int) -> dict[str, float]:
    """How long the API's notifications waited for the standby (its histogram's sum/count)."""
    total = "recchain_api_replica_wait_seconds_sum"
    count = "recchain_api_replica_wait_seconds_count"
    found = scrape(port, total, count)
    mean = found[total] / found[count] if found[count] else 0.0
    return {"waits": found[count], "mean_ms": round(mean * 1000, 2)}


def _subscriber_gauge(port: int) -> float:
    return scrape(port, "recchain_api_subscriptions")["recchain_api_subscriptions"]


def bench(args: argparse.Namespace, url: str, read_url: str | None = None) -> dict[str, Any]:
    raise_fd_limit()
    port = free_port()
    extra = {"RECCHAIN_API__READ_DATABASE_URL": read_url} if read_url else {}
    ops = args.subs_per_socket
    subscribers = args.clients * ops
    extra["RECCHAIN_API__MAX_SUBSCRIPTIONS_PER_CLIENT"] = str(max(1000, subscribers))
    extra["RECCHAIN_API__MAX_SUBSCRIPTIONS_PER_CONNECTION"] = str(max(100, ops))
    if args.compression:
        extra["RECCHAIN_API__WS_COMPRESSION"] = "true"
    api = start_api(url, port, **extra)
    api_rss_start = _rss_mb(api.pid)
    observer = Observer(url) if args.tip else None
    ctx = mp.get_context("spawn")
    pipes: list[Connection] = []
    procs: list[Any] = []
    load0 = os.getloadavg()
    try:
        share, extra = divmod(args.clients, args.procs)
        started = time.perf_counter()
        offset = 0
        for i in range(args.procs):
            n = share + (1 if i < extra else 0)
            parent, child = ctx.Pipe()
            p = ctx.Process(
                target=client_process,
                args=(port, n, offset, args.protocol, not args.no_deflate, child, 0, ops),
                daemon=True,
            )
            p.start()
            pipes.append(parent)
            procs.append((p, n))
            offset += n
        held, errors = 0, []
        for pipe in pipes:
            _, ok, errs = pipe.recv()
            held += ok
            errors += errs
        connect_s = time.perf_counter() - started
        # Every subscription registered in the API (not merely sent).
        for _ in range(1200):
            if _subscriber_gauge(port) >= held * ops:
                break
            time.sleep(0.1)
        api_rss_idle = _rss_mb(api.pid)
        for pipe in pipes:
            pipe.send("measure")
        api_cpu0 = cpu_seconds(api.pid)
        idx_cpu0 = cpu_seconds(observer.proc.pid) if observer else 0.0
        sent: dict[int, float] = {}
        with psycopg.connect(to_libpq_url(url)) as conn:
            for r in range(1, args.rounds + 1):
                tick = now()
                if observer is not None:
                    height, at = observer.post_next()
                else:
                    height, at = r, _commit_block(conn, r)
                sent[height] = at
                waiting = {id(p): p for p in pipes}
                deadline = time.monotonic() + 30
                while waiting and time.monotonic() < deadline:
                    for key, pipe in list(waiting.items()):
                        if pipe.poll(0.005):
                            kind, h = pipe.recv()
                            if kind == "height" and h == height:
                                del waiting[key]
                if observer is not None:  # a steady block pace, not back-to-back
                    time.sleep(max(0.0, args.interval - (now() - tick)))
        api_cpu = cpu_seconds(api.pid) - api_cpu0
        idx_cpu = (cpu_seconds(observer.proc.pid) - idx_cpu0) if observer else None
        api_rss = _rss_mb(api.pid)
        waits = _replica_waits(port) if read_url else None
        time.sleep(0.5)  # stragglers of the last round
        latencies: list[float] = []
        client_cpu = 0.0
        closes: dict[int, int] = {}
        per_round_max: list[float] = []
        for pipe in pipes:
            pipe.send("stop")
        round_lat: dict[int, list[float]] = {h: [] for h in sent}
        for pipe in pipes:
            msg = pipe.recv()
            while msg[0] != "done":  # completions of the last rounds may still be queued
                msg = pipe.recv()
            _, arrivals, closed, cpu = msg
            client_cpu += cpu
            for code, n in closed.items():
                closes[code] = closes.get(code, 0) + n
            for h, times in arrivals.items():
                if h in sent:
                    round_lat[h].extend(t - sent[h] for t in times)
        for lat in round_lat.values():
            latencies.extend(lat)
            if lat:
                per_round_max.append(max(lat))
        latencies.sort()
        load1 = os.getloadavg()
        pushes = max(1, len(latencies))

        def pct(q: float) -> float:
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

        return {
            "mode": "tip (observer POST -> push)" if observer else "commit -> push",
            "reads": "hot standby" if read_url else "primary",
            "replica_wait": waits,
            "clients": args.clients,
            "held": held,
            "connect_errors": errors,
            "procs": args.procs,
            "protocol": args.protocol,
            "deflate_offered": not args.no_deflate,
            "rounds": len(sent),
            "connect_seconds": round(connect_s, 1),
            "delivered": len(latencies),
            "subscribers": held * ops,
            "subscriptions_per_socket": ops,
            "missing": held * ops * len(sent) - len(latencies),
            "closed_by_server": closes,
            "latency_ms": {
                "p50": pct(0.5),
                "p99": pct(0.99),
                "max": round(latencies[-1] * 1000, 1),
                "mean": round(statistics.mean(latencies) * 1000, 1),
                "round_max_p50": round(statistics.median(per_round_max) * 1000, 1),
            }
            if latencies
            else None,
            "api_rss_mb": {"before": api_rss_start, "idle": api_rss_idle, "end": api_rss},
            "api_kb_per_subscriber": None
            if api_rss_idle is None or api_rss_start is None or not held
            else round((api_rss_idle - api_rss_start) * 1024 / (held * ops), 1),
            "api_cpu_s": round(api_cpu, 3),
            "api_cpu_ms_per_push": round(api_cpu * 1000 / pushes, 4),
            "api_cpu_ms_per_round": round(api_cpu * 1000 / max(1, len(sent)), 1),
            "indexer_cpu_ms_per_block": None
            if idx_cpu is None
            else round(idx_cpu * 1000 / max(1, len(sent)), 1),
            "client_cpu_s": round(client_cpu, 3),
            "client_cpu_ms_per_push": round(client_cpu * 1000 / pushes, 4),
            "loadavg_start": [round(x, 2) for x in load0],
            "loadavg_end": [round(x, 2) for x in load1],
        }
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for p, _ in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
        if observer is not None:
            observer.close()
        api.terminate()
        api.wait(timeout=30)


def seed_listings(conn: psycopg.Connection[Any], n: int) -> None:
    """Block 1 with `n` active fixed-price listings (ids 1..n)."""
    h = f"0x{1:064x}"
    with conn.transaction():
        conn.execute(
            "INSERT INTO blocks (index_block_hash, block_hash, block_height,"
            " parent_index_block_hash, block_time, canonical) VALUES (%s, %s, 1, %s, %s, true)",
            (h, h, f"0x{0:064x}", int(time.time())),
        )
        conn.execute(
            "INSERT INTO listings (listing_id, kind, token_id, seller, currency, price,"
            " bid_count, start_height, status, block_from)"
            " SELECT i, 'fixed', i, 'ST1SELLER', 'STX', 1000000, 0, 1, 'active', 1"
            " FROM generate_series(1, %s) AS i",
            (n,),
        )


def commit_listing_changes(conn: psycopg.Connection[Any], height: int, ids: list[int]) -> float:
    """A block that reprices `ids` (a new version of each), and its NOTIFY, in one transaction."""
    h = f"0x{height:064x}"
    with conn.transaction():
        conn.execute(
            "INSERT INTO blocks (index_block_hash, block_hash, block_height,"
            " parent_index_block_hash, block_time, canonical) VALUES (%s, %s, %s, %s, %s, true)",
            (h, h, height, f"0x{height - 1:064x}", int(time.time())),
        )
        conn.execute(
            "WITH closed AS (UPDATE listings SET block_to = %(h)s WHERE listing_id = ANY(%(ids)s)"
            " AND block_to IS NULL RETURNING *)"
            " INSERT INTO listings (listing_id, kind, token_id, seller, currency, price,"
            " bid_count, start_height, status, block_from)"
            " SELECT listing_id, kind, token_id, seller, currency, price + 1, bid_count,"
            " start_height, status, %(h)s FROM closed",
            {"h": height, "ids": ids},
        )
        payload = {"height": height, "hash": h, "rolled_back": [], "changes": {"listings": ids}}
        conn.execute("SELECT pg_notify(%s, %s)", (BLOCKS, json.dumps(payload)))
    return now()


class Probe(threading.Thread):
    """Times `/healthz` and a simple query, one after the other, every 50 ms."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.base = f"http://127.0.0.1:{port}"
        self.stop = threading.Event()
        self.healthz: list[float] = []
        self.query: list[float] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=120) as http:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                http.get("/healthz")
                t1 = time.perf_counter()
                http.post("/graphql", json={"query": SIMPLE_QUERY})
                t2 = time.perf_counter()
                self.healthz.append(t1 - t0)
                self.query.append(t2 - t1)
                self.stop.wait(0.05)

    @staticmethod
    def summary(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        v = sorted(values)
        return {
            "n": len(v),
            "p50_ms": round(v[len(v) // 2] * 1000, 1),
            "p99_ms": round(v[min(len(v) - 1, int(0.99 * len(v)))] * 1000, 1),
            "max_ms": round(v[-1] * 1000, 1),
        }


def bench_listings(args: argparse.Namespace, url: str) -> dict[str, Any]:
    """Distinct `listingUpdates(where: {listingId: i})` topics; see the module docstring."""
    raise_fd_limit()
    rng = random.Random(11)
    sockets = max(1, args.listings // args.per_socket)
    topics = sockets * args.per_socket
    with psycopg.connect(to_libpq_url(url)) as conn:
        seed_listings(conn, topics)
    port = free_port()
    # Every socket comes from 127.0.0.1: one client as the subscription caps count, which
    # would refuse all but the first 1,000 topics (and each round would wait for their pushes).
    api = start_api(
        url,
        port,
        RECCHAIN_API__MAX_SUBSCRIPTIONS_PER_CLIENT=str(max(1000, topics)),
        RECCHAIN_API__MAX_SUBSCRIPTIONS_PER_CONNECTION=str(max(100, args.per_socket)),
    )
    ctx = mp.get_context("spawn")
    pipes: list[Connection] = []
    procs: list[Any] = []
    probe = Probe(port)
    load0 = os.getloadavg()
    try:
        share, extra = divmod(sockets, args.procs)
        started = time.perf_counter()
        offset = 0
        for i in range(args.procs):
            n = share + (1 if i < extra else 0)
            parent, child = ctx.Pipe()
            p = ctx.Process(
                target=client_process,
                args=(port, n, offset, args.protocol, not args.no_deflate, child, args.per_socket),
                daemon=True,
            )
            p.start()
            pipes.append(parent)
            procs.append((p, n))
            offset += n
        held, errors = 0, []
        for pipe in pipes:
            _, ok, errs = pipe.recv()
            held += ok
            errors += errs
        for _ in range(1200):
            if _subscriber_gauge(port) >= held * args.per_socket:
                break
            time.sleep(0.1)
        subscribed = _subscriber_gauge(port)
        connect_s = time.perf_counter() - started
        idle_probe = Probe(port)
        idle_probe.start()
        time.sleep(2)
        idle_probe.stop.set()
        idle_probe.join()
        for pipe in pipes:
            pipe.send("measure")
        api_cpu0 = cpu_seconds(api.pid)
        probe.start()
        sent: dict[int, float] = {}
        arrivals: dict[int, int] = {}
        with psycopg.connect(to_libpq_url(url)) as conn:
            for r in range(args.rounds):
                tick = now()
                height = r + 2
                ids = rng.sample(range(1, topics + 1), min(args.changes, topics))
                sent[height] = commit_listing_changes(conn, height, ids)
                deadline = time.monotonic() + 60
                while arrivals.get(height, 0) < len(ids) and time.monotonic() < deadline:
                    for pipe in pipes:
                        while pipe.poll(0.002):
                            kind, h = pipe.recv()
                            if kind == "push":
                                arrivals[h] = arrivals.get(h, 0) + 1
                time.sleep(max(0.0, args.interval - (now() - tick)))
        probe.stop.set()
        probe.join()
        api_cpu = cpu_seconds(api.pid) - api_cpu0
        latencies: list[float] = []
        for pipe in pipes:
            pipe.send("stop")
        for pipe in pipes:
            msg = pipe.recv()
            while msg[0] != "done":
                msg = pipe.recv()
            for h, times in msg[1].items():
                if h in sent:
                    latencies.extend(t - sent[h] for t in times)
        latencies.sort()
        expected = args.rounds * min(args.changes, topics)

        def pct(q: float) -> float:
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

        return {
            "mode": "distinct listing topics (commit -> push of each changed listing)",
            "topics": topics,
            "sockets": sockets,
            "held_sockets": held,
            "subscribed": subscribed,
            "connect_errors": errors,
            "connect_seconds": round(connect_s, 1),
            "rounds": args.rounds,
            "changes_per_round": min(args.changes, topics),
            "delivered": len(latencies),
            "missing": expected - len(latencies),
            "push_delay_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)}
            if latencies
            else None,
            "idle_healthz": Probe.summary(idle_probe.healthz),
            "idle_simple_query": Probe.summary(idle_probe.query),
            "healthz_during": Probe.summary(probe.healthz),
            "simple_query_during": Probe.summary(probe.query),
            "api_cpu_ms_per_round": round(api_cpu * 1000 / max(1, args.rounds), 1),
            "api_rss_mb": _rss_mb(api.pid),
            "loadavg_start": [round(x, 2) for x in load0],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        probe.stop.set()
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for p, _ in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
        api.terminate()
        api.wait(timeout=30)


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def with_replica(args: argparse.Namespace) -> dict[str, Any]:
    """The same run twice on one primary + hot standby pair (ops/pgcluster.py, durable
    settings): the API reading the primary, then the API reading the standby."""
    from ops.pgcluster import PgCluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("--replica needs PostgreSQL's server binaries and pg_basebackup")
    cluster = PgCluster(bindir, durable=True).start()
    primary = "postgresql+psycopg" + cluster.primary_dsn(args.database)[len("postgresql") :]
    standby = "postgresql+psycopg" + cluster.standby_dsn(args.database)[len("postgresql") :]
    try:
        reports = {}
        for name, read_url in (("without_replica", None), ("with_replica", standby)):
            cluster.drop_database(args.database)
            cluster.create_database(args.database)
            upgrade(primary)
            cluster.wait_replayed()
            reports[name] = bench(args, primary, read_url)
        return reports
    finally:
        cluster.stop()


def run(args: argparse.Namespace) -> int:
    if args.replica:
        print(json.dumps(with_replica(args), indent=2))
        return 0
    url = _prepare(args.database)
    if args.listings:
        listing_report = bench_listings(args, url)
        print(json.dumps(listing_report, indent=2))
        return 0
    report = bench(args, url)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    lat = report["latency_ms"] or {}
    print(
        f"{report['held']}/{report['clients']} sockets held, {report['subscribers']} subscribers"
        f" ({report['protocol']}, {report['procs']} client processes), connected in"
        f" {report['connect_seconds']} s; API RSS {report['api_rss_mb']} MB,"
        f" {report['api_kb_per_subscriber']} KB per subscriber"
    )
    print(
        f"{report['mode']} over {report['rounds']} rounds: p50 {lat.get('p50')} ms,"
        f" p99 {lat.get('p99')} ms, max {lat.get('max')} ms; missing {report['missing']};"
        f" closed by the server {report['closed_by_server']}"
    )
    print(
        f"CPU: API {report['api_cpu_ms_per_round']} ms per round"
        f" ({report['api_cpu_ms_per_push']} ms per push), clients"
        f" {report['client_cpu_ms_per_push']} ms per push; load {report['loadavg_start']} ->"
        f" {report['loadavg_end']}"
    )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("subscribe", help="concurrent subscribers and change-to-delivery latency")
    p.add_argument("--clients", type=int, default=1000, help="websocket clients (sockets)")
    p.add_argument(
        "--subs-per-socket",
        type=int,
        default=1,
        help="`blocks` subscriptions per socket (distinct operation ids; a frame each)",
    )
    p.add_argument(
        "--compression",
        action="store_true",
        help="serve with api.ws_compression (permessage-deflate, when the clients offer it)",
    )
    p.add_argument("--rounds", type=int, default=5, help="changes pushed and timed")
    p.add_argument("--procs", type=int, default=2, help="client processes")
    p.add_argument(
        "--protocol",
        choices=[*PROTOCOLS, "mixed"],
        default="graphql-transport-ws",
        help="websocket subprotocol of the clients (mixed: half each)",
    )
    p.add_argument(
        "--no-deflate", action="store_true", help="do not offer permessage-deflate (browsers do)"
    )
    p.add_argument(
        "--tip",
        action="store_true",
        help="blocks POSTed to a real indexer's event observer instead of direct commits",
    )
    p.add_argument(
        "--interval", type=float, default=0.5, help="--tip, --listings: seconds between blocks"
    )
    p.add_argument(
        "--listings",
        type=int,
        default=0,
        help="distinct listingUpdates(where: {listingId: i}) topics instead of `blocks`",
    )
    p.add_argument("--per-socket", type=int, default=100, help="--listings: operations a socket")
    p.add_argument("--changes", type=int, default=10, help="--listings: listings changed a round")
    p.add_argument(
        "--replica",
        action="store_true",
        help="start a primary + hot standby pair and run twice: API reading the primary, then"
        " the standby",
    )
    p.add_argument(
        "--database", default="recchain_bench_subscribe", help="database name to create and use"
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(handler=run)
