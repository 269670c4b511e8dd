"""A scriptable webhook receiver on loopback: a small HTTP/1.1 server (keep-alive, one
asyncio task per connection) that records every delivery and answers per path as told: a
status, after a delay, failing the first N times, with `Retry-After`, holding answers until
released, checking signatures, or sending a huge body. Used by the webhook tests and by
`python -m ops.bench webhooks`; it is a real server, so the sender's HTTP client, timeouts and caps
are exercised for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from writers.webhooks import signing


@dataclass
class Behaviour:
    status: int = 200
    delay_s: float = 0.0
    fail_first: int = 0  # answer `fail_status` this many times first
    fail_status: int = 500
    retry_after: str | None = None  # sent with failures
    secrets: list[str] | None = None  # verify the signature with any of these; 400 if none
    hold: asyncio.Event | None = None  # answer only once set
    body_bytes: int = 0  # size of the answer's body
    location: str | None = None  # a redirect target (with status 3xx)


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    received: float  # time.monotonic()
    answered: float | None = None
    status: int | None = None
    verified: bool | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    on_delivery: Callable[[Delivery], None] | None = None
    in_flight: Counter[str] = field(default_factory=Counter)
    max_in_flight: Counter[str] = field(default_factory=Counter)
    port: int = 0
    _server: asyncio.Server | None = None
    _served: Counter[str] = field(default_factory=Counter)
    _conns: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, path: str) -> str:
        assert self.port, "start() first"
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self, port: int | None = None) -> Receiver:
        """Listen (on `port`, or the previous port after a stop, or a free one)."""
        self._server = await asyncio.start_server(
            self._connection, "127.0.0.1", port if port is not None else self.port
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and drop open connections (the endpoint is down)."""
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Receiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def of(self, path: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.path == path]

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                await self._answer(path, headers, body, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(task)
            writer.close()

    async def _answer(
        self, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> None:
        b = self.behaviours.get(path, Behaviour())
        d = Delivery(path, headers, body, time.monotonic())
        self.deliveries.append(d)
        self.in_flight[path] += 1
        self.max_in_flight[path] = max(self.max_in_flight[path], self.in_flight[path])
        try:
            if b.hold is not None:
                await b.hold.wait()
            if b.delay_s:
                await asyncio.sleep(b.delay_s)
            status = b.status
            extra = ""
            if b.secrets is not None:
                d.verified = any(
                    signing.verify(headers.get("recchain-signature", ""), body, s)
                    for s in b.secrets
                )
                if not d.verified:
                    status = 400
            self._served[path] += 1
            if self._served[path] <= b.fail_first:
                status = b.fail_status
                if b.retry_after is not None:
                    extra += f"Retry-After: {b.retry_after}\r\n"
            if b.location is not None:
                extra += f"Location: {b.location}\r\n"
            size = b.body_bytes if b.body_bytes else 2
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {size}\r\n{extra}\r\n".encode())
            d.status = status
            d.answered = time.monotonic()
            if self.on_delivery is not None:
                self.on_delivery(d)
            if b.body_bytes:
                chunk = b"x" * 65536
                left = size
                while left > 0:
                    writer.write(chunk[: min(left, len(chunk))])
                    left -= len(chunk)
                    await writer.drain()
            else:
                writer.write(b"ok")
                await writer.drain()
        finally:
            self.in_flight[path] -= 1
