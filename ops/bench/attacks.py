"""Hostile requests against real processes: how long each attack is answered in, and how long
`/healthz` takes while it runs (the event loop's responsiveness).

    python -m ops.bench.attacks [--only log_api,nested,...] [--json]

Starts `recchain serve` and `recchain relay` as their own processes on loopback against a fresh
database holding the bundled demo chain (`recchain replay`), then runs each attack while a
probe GETs `/healthz` on a new connection every 50 ms from another loopback address. Attackers
bind their own 127.0.0.x addresses, so per-client limits see them as distinct clients and the
probe is never limited on their account. `--server-cwd DIR` runs the servers from another
checkout of the project (to compare a change with what came before it).

Each attack reports `answer_s` (time until the attack's own request was answered, refused or
dropped), `healthz_max_s` / `healthz_p50_s` (probe latencies during it; a probe that got no
answer counts as the time it waited) and what the server answered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import websockets

from infra.config import PROJECT_ROOT
from ops.bench.tls import tls

DEMO = PROJECT_ROOT / "tests" / "fixtures" / "demo" / "chain.tsv"
PROBE_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Probe:
    """GET /healthz on a fresh connection every `interval_s` until stopped. A probe fails when
    it gets no answer or a 5xx (the observer has no /healthz: its 404 is an answer too)."""

    port: int
    source: str = "127.0.0.1"
    interval_s: float = 0.05
    times: list[float] = field(default_factory=list)
    failures: int = 0
    statuses: dict[str, int] = field(default_factory=dict)

    async def once(self) -> float:
        started = time.perf_counter()
        writer = None
        status = "none"
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.port, local_addr=(self.source, 0)
                )
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                status = head[9:12].decode(errors="replace")
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            if writer is not None:
                writer.close()
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if not status.isdigit() or int(status) >= 500:
            self.failures += 1
        return time.perf_counter() - started

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.times.append(await self.once())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    def summary(self) -> dict[str, Any]:
        times = self.times or [0.0]
        return {
            "healthz_max_s": round(max(times), 3),
            "healthz_p50_s": round(statistics.median(times), 3),
            "healthz_probes": len(self.times),
            "healthz_failures": self.failures,
            "healthz_statuses": self.statuses,
        }


async def during(port: int, attack: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Run `attack` with a /healthz probe beside it; the attack's dict plus the probe's."""
    probe = Probe(port)
    stop = asyncio.Event()
    probing = asyncio.create_task(probe.run(stop))
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    try:
        result = await attack
    finally:
        result_s = time.perf_counter() - started
        stop.set()
        await probing
    result.setdefault("answer_s", round(result_s, 3))
    return {**result, **probe.summary()}


def source(n: int) -> str:
    return f"127.0.0.{n}"


def client(src: str, base: str, timeout: float = 300.0) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=src)
    return httpx.AsyncClient(base_url=base, transport=transport, timeout=timeout)


async def timed_post(c: httpx.AsyncClient, path: str, **kw: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        resp = await c.post(path, **kw)
    except httpx.HTTPError as exc:
        return {"answer_s": round(time.perf_counter() - started, 3), "error": repr(exc)}
    elapsed = time.perf_counter() - started
    out: dict[str, Any] = {
        "answer_s": round(elapsed, 3),
        "status": resp.status_code,
        "bytes": len(resp.content),
    }
    with contextlib.suppress(ValueError):
        body = resp.json()
        if isinstance(body, dict):
            errors = body.get("errors") or []
            if errors:
                out["code"] = (errors[0].get("extensions") or {}).get("code")
                out["message"] = str(errors[0].get("message"))[:160]
            if "error" in body:
                out["code"] = body["error"]
    return out


# -- attacks ---------------------------------------------------------------------------------


async def log_api(api: Server, n: int) -> dict[str, Any]:
    """Item 1: a long client string that ends up in a logged error."""
    before = api.log_size()
    async with client(source(10), api.url) as c:
        query = '{ _meta(block: {hash: "%s"}) { block { height } } }' % ("z" * n)
        result = await during(api.port, timed_post(c, "/graphql", json={"query": query}))
    return {**result, "log_bytes": api.log_size() - before}


async def log_relay(relay: Server, kb: int) -> dict[str, Any]:
    """Item 1: the relay audit-logs the submitted hex."""
    before = relay.log_size()
    body = json.dumps({"tx": "0x" + random.randbytes(kb * 512).hex()})
    async with client(source(11), relay.url) as c:
        result = await during(
            relay.port,
            timed_post(
                c,
                "/v1/transactions",
                content=body,
                headers={
                    "content-type": "application/json",
                    "authorization": "Bearer attack-key",
                },
            ),
        )
    return {**result, "log_bytes": relay.log_size() - before}


def nested_query(first: int, levels: int = 3) -> str:
    # Three levels of facility -> certificates: the deepest document the default max_depth (12)
    # lets through to the cost estimate, now that a relation is a connection (`nodes` is a level).
    inner = "tokenId"
    for _ in range(levels):
        inner = f"facility {{ certificates {{ nodes {{ {inner} }} }} }}"
    return f"{{ certificates(first: {first}) {{ nodes {{ {inner} }} }} }}"


def nested_plain_query(first: int, levels: int = 4) -> str:
    # The same attack against a schema whose relations are plain lists (before they became
    # connections): four levels reach depth 11, as in the report that found it.
    inner = "tokenId"
    for _ in range(levels):
        inner = f"facility {{ certificates {{ {inner} }} }}"
    return f"{{ certificates(first: {first}) {{ nodes {{ {inner} }} }} }}"


async def nested(api: Server, first: int) -> dict[str, Any]:
    """Item 2: nested relations, which the cost estimate once counted at 10 rows each (now
    connections, counted at their page)."""
    async with client(source(12), api.url) as c:
        probe = await c.post("/graphql", json={"query": nested_query(0)})
        plain = "Cannot query field 'nodes'" in probe.text
        query = nested_plain_query(first) if plain else nested_query(first)
        result = await during(api.port, timed_post(c, "/graphql", json={"query": query}))
    return {**result, "form": "plain lists" if plain else "connections"}


@dataclass
class SlowHeaders:
    """Connections that send a request head a byte a second (with a long padding header),
    and what the server did with each: its status line's code, `closed` (closed without an
    answer), `refused` (connect failed) or `open` (still open when the attack stopped)."""

    port: int
    sources: list[str]
    connections: int
    open_now: int = 0
    peak_open: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    answered_after_s: list[float] = field(default_factory=list)

    def _count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    async def _one(self, src: str, stop: asyncio.Event) -> None:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", self.port, local_addr=(src, 0)
            )
        except OSError:
            self._count("refused")
            return
        started = time.monotonic()
        self.open_now += 1
        self.peak_open = max(self.peak_open, self.open_now)
        head = b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Padding: " + b"a" * 100_000
        answer = asyncio.create_task(reader.read(64))  # done when the server answers or closes
        outcome = "open"
        try:
            for byte in head:
                if stop.is_set() or answer.done():
                    break
                writer.write(bytes([byte]))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(answer), 1.0)
        except OSError:
            pass
        finally:
            if answer.done() and not answer.cancelled():
                try:
                    data = answer.result()
                    outcome = data[9:12].decode(errors="replace") if data else "closed"
                except OSError:
                    outcome = "closed"
                self.answered_after_s.append(time.monotonic() - started)
            answer.cancel()
            writer.close()
            self.open_now -= 1
            self._count(outcome)

    async def run(self, seconds: float) -> dict[str, Any]:
        stop = asyncio.Event()
        tasks = []
        for i in range(self.connections):
            src = self.sources[i % len(self.sources)]
            tasks.append(asyncio.create_task(self._one(src, stop)))
            if i % 200 == 199:
                await asyncio.sleep(0.01)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        held = self.open_now
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        return {
            "connections": self.connections,
            "peak_open": self.peak_open,
            "held_at_end": held,
            "outcomes": self.outcomes,
            "answered_after_max_s": round(max(self.answered_after_s, default=0.0), 3),
            "answer_s": seconds,
        }


async def slowloris(server: Server, connections: int, seconds: float) -> dict[str, Any]:
    """Item 3: connections from 200 addresses that send their headers a byte a second."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        attack = SlowHeaders(server.port, [source(20 + i) for i in range(200)], connections)
        return await during(server.port, attack.run(seconds))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def slow_body_relay(relay: Server, connections: int, seconds: float) -> dict[str, Any]:
    """Item 3: bodies sent a byte a second hold the client's concurrency slots."""
    src = source(13)
    stop = asyncio.Event()

    async def slow() -> None:
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", relay.port, local_addr=(src, 0)
            )
            writer.write(
                b"POST /v1/transactions HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer attack-key\r\nContent-Length: 100000\r\n\r\n"
            )
            closed = asyncio.create_task(reader.read())
            try:
                while not stop.is_set() and not closed.done():
                    writer.write(b" ")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(closed), 1.0)
            finally:
                closed.cancel()
                writer.close()

    async def attack() -> dict[str, Any]:
        tasks = [asyncio.create_task(slow()) for _ in range(connections)]
        await asyncio.sleep(2.0)
        answers: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        async with client(src, relay.url, timeout=30) as c:
            while time.monotonic() < deadline:
                answers.append(
                    await timed_post(
                        c,
                        "/v1/transactions",
                        json={"tx": "0x00"},
                        headers={"authorization": "Bearer attack-key"},
                    )
                )
                if answers[-1].get("code") != "too_many_concurrent":
                    break
                await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        last = answers[-1] if answers else {}
        return {
            "slow_bodies": connections,
            "too_many_concurrent": sum(a.get("code") == "too_many_concurrent" for a in answers),
            "last_code": last.get("code"),
            "answer_s": round(2.0 + sum(a["answer_s"] for a in answers) + len(answers) - 1, 1),
        }

    return await during(relay.port, attack())


async def validation_flood(api: Server, per_s: float, seconds: float) -> dict[str, Any]:
    """Item 5: unique documents of 1,400 x __typename at `per_s` requests a second."""
    pid = api.proc.pid

    async def attack() -> dict[str, Any]:
        cpu0 = proc_cpu_seconds(pid)
        t0 = time.perf_counter()
        codes: dict[str, int] = {}
        answers: list[float] = []
        async with client(source(14), api.url) as c:

            async def one(i: int) -> None:
                q = f"query Q{i}_{uuid.uuid4().hex} {{ " + "__typename " * 1400 + "}"
                r = await timed_post(c, "/graphql", json={"query": q})
                answers.append(r["answer_s"])
                key = str(r.get("code") or r.get("status"))
                codes[key] = codes.get(key, 0) + 1

            tasks = []
            for i in range(int(per_s * seconds)):
                tasks.append(asyncio.create_task(one(i)))
                await asyncio.sleep(1 / per_s)
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
        return {
            "requests": len(answers),
            "api_cpu_s_per_s": round((proc_cpu_seconds(pid) - cpu0) / elapsed, 3),
            "answer_p50_s": round(statistics.median(answers), 3),
            "answer_s": round(max(answers), 3),
            "codes": codes,
        }

    return await during(api.port, attack())


async def _ws(api: Server, src: str, **kw: Any) -> Any:
    return await websockets.connect(
        api.url.replace("http", "ws") + "/graphql",
        subprotocols=[websockets.Subprotocol("graphql-transport-ws")],
        local_addr=(src, 0),
        **kw,
    )


async def ws_big_frame(api: Server, mb: int) -> dict[str, Any]:
    """Item 6: one subscribe frame of `mb` MB."""
    before = api.log_size()

    async def attack() -> dict[str, Any]:
        ws = await _ws(api, source(15), max_size=None)
        try:
            await ws.send(json.dumps({"type": "connection_init"}))
            await ws.recv()
            query = "subscription { blocks { block { height } } } #" + "x" * (mb * 1024 * 1024)
            try:
                await ws.send(
                    json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}})
                )
                reply = await asyncio.wait_for(ws.recv(), 30)
                return {"reply": str(reply)[:200]}
            except websockets.ConnectionClosed as exc:
                return {"closed": exc.rcvd.code if exc.rcvd else None}
            except TimeoutError:
                return {"reply": "none in 30 s (accepted)"}
        finally:
            await ws.close()

    result = await during(api.port, attack())
    return {**result, "log_bytes": api.log_size() - before}


async def ws_operations(api: Server, n: int) -> dict[str, Any]:
    """Item 7: queries over one websocket, beyond the per-minute rate limit."""

    async def attack() -> dict[str, Any]:
        ws = await _ws(api, source(16))
        answered = errors = 0
        closed = None
        try:
            await ws.send(json.dumps({"type": "connection_init"}))
            await ws.recv()
            # One at a time (a socket caps the operations it runs at once).
            for i in range(n):
                await ws.send(
                    json.dumps(
                        {
                            "id": str(i),
                            "type": "subscribe",
                            "payload": {"query": "{ _meta { block { height } } }"},
                        }
                    )
                )
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if msg["type"] == "next":
                        answered += 1
                    elif msg["type"] == "error":
                        errors += 1
                        break
                    elif msg["type"] == "complete":
                        break
        except websockets.ConnectionClosed as exc:
            closed = exc.rcvd.code if exc.rcvd else None
        except TimeoutError:
            pass
        finally:
            await ws.close()
        return {"operations": n, "answered": answered, "errors": errors, "closed": closed}

    return await during(api.port, attack())


async def ws_handshake_limited(api: Server, per_minute: int) -> dict[str, Any]:
    """Item 7: the handshake of a client over its rate limit."""
    src = source(17)
    async with client(src, api.url) as c:
        for _ in range(per_minute * 3):  # until the bucket is empty
            r = await c.post("/graphql", json={"query": "{ __typename }"})
            if r.status_code == 429:
                break
    started = time.perf_counter()
    try:
        ws = await _ws(api, src)
        try:
            await ws.send(json.dumps({"type": "connection_init"}))
            await ws.recv()
            return {"answer_s": round(time.perf_counter() - started, 3), "handshake": "accepted"}
        except websockets.ConnectionClosed as exc:
            return {
                "answer_s": round(time.perf_counter() - started, 3),
                "close_code": exc.rcvd.code if exc.rcvd else None,
            }
    except websockets.InvalidStatus as exc:
        return {
            "answer_s": round(time.perf_counter() - started, 3),
            "http_status": exc.response.status_code,
            "body": exc.response.body.decode(errors="replace")[:100],
        }


async def relay_spoofed_xff(relay: Server, n: int) -> dict[str, Any]:
    """Item 7: submissions each claiming another X-Forwarded-For."""

    async def attack() -> dict[str, Any]:
        codes: dict[str, int] = {}
        # From 127.0.0.1, which uvicorn trusts as a proxy by default.
        async with client("127.0.0.1", relay.url) as c:
            for i in range(n):
                r = await timed_post(
                    c,
                    "/v1/transactions",
                    json={"tx": "0x00"},
                    headers={
                        "x-forwarded-for": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                        "authorization": "Bearer attack-key",
                    },
                )
                key = str(r.get("code") or r.get("status"))
                codes[key] = codes.get(key, 0) + 1
        return {"submissions": n, "codes": codes}

    return await during(relay.port, attack())


BAD_INPUTS: list[tuple[str, dict[str, Any]]] = [
    (
        "first: non-Int variable",
        {
            "json": {
                "query": "query($n: Int!) { certificates(first: $n) { nodes { tokenId } } }",
                "variables": {"n": "many"},
            }
        },
    ),
    (
        "first: list variable",
        {
            "json": {
                "query": "query($n: Int!) { certificates(first: $n) { nodes { tokenId } } }",
                "variables": {"n": [1]},
            }
        },
    ),
    (
        "where nested 2,000 deep (variables)",
        {
            "content": b'{"query": "query($w: CertificateFilter) { certificates(where: $w)'
            b' { totalCount } }", "variables": {"w": '
            + b'{"and": [' * 2000
            + b"{}"
            + b"]}" * 2000
            + b"}}",
            "headers": {"content-type": "application/json"},
        },
    ),
    (
        "list literal nested 900 deep",
        {
            "json": {
                "query": "{ certificates(where: {tokenId_in: "
                + "[" * 900
                + "1"
                + "]" * 900
                + "}) { totalCount } }"
            }
        },
    ),
    (
        "invalid UTF-8 body",
        {
            "content": b'{"query": "{ __typename \xff }"}',
            "headers": {"content-type": "application/json"},
        },
    ),
    (
        "NUL in a text argument",
        {
            "json": {
                "query": "query($o: String!) { holdings(owner: $o) { totalWh } }",
                "variables": {"o": "ST1\u0000X"},
            }
        },
    ),
    (
        "NUL in a filter",
        {"json": {"query": '{ facilities(where: {name_contains: "a\\u0000"}) { totalCount } }'}},
    ),
    (
        "lone surrogate",
        {
            "content": b'{"query": "query($b: String!) { retirementStatement(beneficiary: $b)'
            b' { totalWh } }", "variables": {"b": "\\ud800"}}',
            "headers": {"content-type": "application/json"},
        },
    ),
]


async def bad_inputs(api: Server) -> list[dict[str, Any]]:
    """Item 8: client mistakes that must get a client error with a code."""
    out = []
    for name, kw in BAD_INPUTS:
        async with client(source(19), api.url) as c:  # a 500 may close the connection
            out.append({"input": name, **(await timed_post(c, "/graphql", **kw))})
    async with client(source(19), api.url) as c:
        started = time.perf_counter()
        r = await c.get(
            "/graphql",
            params={"query": "subscription { blocks { block { height } } }"},
            headers={"accept": "application/json"},
        )
        answer: dict[str, Any] = {
            "input": "GET with a subscription",
            "status": r.status_code,
            "answer_s": round(time.perf_counter() - started, 3),
            "body": r.text[:120],
        }
        with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
            answer["code"] = r.json()["errors"][0]["extensions"]["code"]
        out.append(answer)
    for frame in ("[]", "1", '"x"', "null", '{"type": 5}'):
        ws = await _ws(api, source(19))
        await ws.send(json.dumps({"type": "connection_init"}))
        await ws.recv()
        await ws.send(frame)
        try:
            reply = await asyncio.wait_for(ws.recv(), 10)
            out.append({"input": f"ws frame {frame}", "reply": str(reply)[:100]})
        except websockets.ConnectionClosed as exc:
            out.append(
                {"input": f"ws frame {frame}", "close_code": exc.rcvd.code if exc.rcvd else None}
            )
        except TimeoutError:
            out.append({"input": f"ws frame {frame}", "reply": "none in 10 s"})
        await ws.close()
    return out


# -- the stack --------------------------------------------------------------------------------


def _env(db_url: str, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECCHAIN_")}
    env.pop("DATABASE_URL", None)
    env.update(RECCHAIN_DATABASE_URL=db_url, PYTHONUNBUFFERED="1", **extra)
    return env


def start(
    name: str,
    args: list[str],
    db_url: str,
    cwd: Path,
    logs: Path,
    extra: dict[str, str],
    nofile: tuple[int, int] | None = None,
    listen: Callable[[int], list[str]] = lambda port: ["--port", str(port)],
    ready_path: str | None = "/healthz",
) -> Server:
    """`recchain ARGS` on a free port (`listen` turns it into arguments), ready when
    `ready_path` answers 200 (None: when the port accepts connections)."""
    port = free_port()
    log_path = logs / f"{name}.log"
    out = log_path.open("wb")

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    proc = subprocess.Popen(
        [sys.executable, "-m", "recchain.cli", *args, *listen(port)],
        cwd=cwd,
        env=_env(db_url, extra),
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        preexec_fn=limit,
    )
    server = Server(name, proc, port, log_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log_path.read_text()[-2000:]}")
        if ready_path is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return server
        else:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.url + ready_path, timeout=2, verify=tls()).status_code == 200:
                    return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{name} did not start: {log_path.read_text()[-2000:]}")


def prepare_database(server_url: str, cwd: Path) -> tuple[str, str]:
    name = f"recchain_attacks_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = server_url.rpartition("/")
    url = f"{base}/{name}"
    env = _env(url, {})
    for args in (["migrate"], ["replay", "--quiet", str(DEMO)]):
        subprocess.run(
            [sys.executable, "-m", "recchain.cli", *args],
            cwd=cwd,
            env=env,
            check=True,
            capture_output=True,
            timeout=600,
        )
    return name, url


ATTACKS = (
    "log_api",
    "log_relay",
    "nested",
    "slowloris_api",
    "slow_body_relay",
    "validation_flood",
    "ws_big_frame",
    "ws_operations",
    "ws_handshake_limited",
    "relay_spoofed_xff",
    "bad_inputs",
)


async def run(args: argparse.Namespace, cwd: Path) -> dict[str, Any]:
    server_url = os.environ.get("DATABASE_URL") or os.environ.get("RECCHAIN_DATABASE_URL")
    if not server_url:
        raise SystemExit("set DATABASE_URL to a PostgreSQL server this benchmark may use")
    only = set(args.only.split(",")) if args.only else set(ATTACKS)
    name, db_url = prepare_database(server_url, cwd)
    logs = Path(tempfile.mkdtemp(prefix="recchain-attacks-"))
    rate = 600
    extra = {
        "RECCHAIN_API__RATE_LIMIT_PER_MINUTE": str(rate),
        "RECCHAIN_RELAY__NODE_URL": f"http://127.0.0.1:{free_port()}",
        # Shorter than the defaults (10 s, 60 s) so that a run shows them expire.
        "RECCHAIN_HTTP__HEADER_TIMEOUT_S": "5",
        "RECCHAIN_HTTP__BODY_TIMEOUT_S": "10",
    }
    nofile = None
    if args.server_nofile:
        soft, _, hard = args.server_nofile.partition(":")
        nofile = (int(soft), int(hard or resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    api = start("api", ["serve", "--host", "127.0.0.1"], db_url, cwd, logs, extra, nofile)
    relay = start("relay", ["relay", "--host", "127.0.0.1"], db_url, cwd, logs, extra, nofile)
    results: dict[str, Any] = {"load_avg_1m": os.getloadavg()[0]}
    steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("log_api", lambda: log_api(api, 24_000)),
        ("log_api", lambda: log_api(api, 48_000)),
        ("log_api", lambda: log_api(api, 100_000)),
        ("log_relay", lambda: log_relay(relay, 48)),
        ("nested", lambda: nested(api, 1)),
        ("nested", lambda: nested(api, 2)),
        ("slowloris_api", lambda: slowloris(api, args.slowloris, 20.0)),
        ("slow_body_relay", lambda: slow_body_relay(relay, 40, 40.0)),
        ("validation_flood", lambda: validation_flood(api, rate / 120, 10.0)),
        ("ws_big_frame", lambda: ws_big_frame(api, 10)),
        ("ws_operations", lambda: ws_operations(api, 3_000)),
        ("ws_handshake_limited", lambda: ws_handshake_limited(api, rate)),
        ("relay_spoofed_xff", lambda: relay_spoofed_xff(relay, 300)),
        ("bad_inputs", lambda: bad_inputs(api)),
    ]
    try:
        for key, step in steps:
            if key not in only:
                continue
            try:
                outcome = await step()
            except Exception as exc:  # one attack's failure must not hide the others' figures
                outcome = {"failed": repr(exc)[:300]}
            results.setdefault(key, []).append(outcome)
            if not args.json:
                print(key, json.dumps(outcome), flush=True)
            for s in (api, relay):
                if s.proc.poll() is not None:
                    raise RuntimeError(f"{s.name} died: {s.log_path.read_text()[-2000:]}")
    finally:
        api.stop()
        relay.stop()
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(ATTACKS)}")
    p.add_argument("--slowloris", type=int, default=6_000, help="slow-header connections")
    p.add_argument("--server-cwd", default=None, help="run the servers from this checkout")
    p.add_argument(
        "--server-nofile",
        default="",
        help="SOFT[:HARD] descriptor limit the servers start with (default: inherited)",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    cwd = Path(args.server_cwd).resolve() if args.server_cwd else PROJECT_ROOT
    results = asyncio.run(run(args, cwd))
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
