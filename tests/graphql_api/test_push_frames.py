"""Pushes written straight to the server's websocket protocol (infra/httpserver.py), as
`recchain serve` runs it: the frames on the wire, with and without permessage-deflate, read by
a raw socket (which checks the bytes) and by the `websockets` library (a strict client)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
import websockets

from graphql_api import ws
from graphql_api.app import create_app
from infra.httpserver import GuardedWebSocketProtocol, server_config
from tests.graphql_api.builder import Chain
from tests.graphql_api.conftest import api_settings
from tests.graphql_api.wsclient import TRANSPORT_WS, Subscriber, notify

BLOCKS = "subscription { blocks { block { height hash } } }"


@contextlib.asynccontextmanager
async def serve(db_url: str, engine: Any, compression: bool) -> AsyncIterator[tuple[int, Any]]:
    settings = api_settings(db_url, ws_compression=compression)
    app = create_app(settings, engine=engine)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = server_config(
        app,
        host="127.0.0.1",
        port=port,
        settings=settings.http,
        log_level="warning",
        log_config=None,
        ws_per_message_deflate=compression,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield port, app
    finally:
        server.should_exit = True
        await task


class RawClient:
    """A websocket client on a bare socket: the handshake offers permessage-deflate as a
    browser does; frames are parsed by hand so their header bits can be checked. One inflater
    for the whole connection, as a client that keeps its window would have."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        self.extensions = ""

    @classmethod
    async def connect(cls, port: int, rcvbuf: int | None = None) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connecting, so the window is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: {TRANSPORT_WS}\r\n"
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
            ).encode()
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        assert " 101 " in head.split("\r\n", 1)[0], head
        client = cls(reader, writer)
        for line in head.split("\r\n"):
            if line.lower().startswith("sec-websocket-extensions:"):
                client.extensions = line.split(":", 1)[1].strip()
        client.send({"type": "connection_init", "payload": {}})
        assert (await client.message())[1]["type"] == "connection_ack"
        return client

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode()
        assert len(data) < 126
        self.writer.write(bytes((0x81, 0x80 | len(data))) + b"\0\0\0\0" + data)

    async def message(self) -> tuple[int, dict[str, Any]]:
        """The next text message: (its first header byte, the JSON it carries)."""
        while True:
            b0, b1 = await self.reader.readexactly(2)
            assert not b1 & 0x80, "a server frame is never masked"
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await self.reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await self.reader.readexactly(8), "big")
            data = await self.reader.readexactly(n)
            if b0 & 0x0F != 0x1:
                continue  # pings
            if b0 & 0x40:
                data = self.inflate.decompress(data + b"\x00\x00\xff\xff")
            return b0, json.loads(data)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


@pytest.mark.parametrize("compression", [False, True])
async def test_pushes_reach_raw_and_library_clients_frame_for_frame(
    db_url: str, engine: Any, compression: bool
) -> None:
    chain = Chain()
    chain.block()
    await chain.write(engine)
    async with serve(db_url, engine, compression) as (port, app):
        raw = [await RawClient.connect(port) for _ in range(2)]
        if compression:
            # No context takeover either way: no compressor kept per socket, one compression
            # of each push for every socket.
            assert "permessage-deflate" in raw[0].extensions
            assert "server_no_context_takeover" in raw[0].extensions
            assert "client_no_context_takeover" in raw[0].extensions
        else:
            assert raw[0].extensions == ""
        # Operation ids differ per socket, so each frame's head is its own.
        for i, client in enumerate(raw):
            client.send({"id": f"op-{i}", "type": "subscribe", "payload": {"query": BLOCKS}})
        lib = await Subscriber.connect(f"ws://127.0.0.1:{port}/graphql")
        await lib.subscribe(BLOCKS)
        hub = app.state.hub
        for _ in range(200):
            if hub.subscriber_count == 3:
                break
            await asyncio.sleep(0.05)
        assert hub.subscriber_count == 3
        (stream,) = hub.streams.values()
        # Every member writes through the server protocol's direct path.
        assert all(
            isinstance(m.conn.outbox.direct, GuardedWebSocketProtocol) for m in stream.members
        )
        for _ in range(3):
            chain.block()
            await chain.write(engine)
            await notify(
                db_url,
                {"height": chain.height, "hash": chain.tip.hash, "rolled_back": [], "changes": {}},
            )
            expected = {"height": chain.height, "hash": chain.tip.hash}
            for i, client in enumerate(raw):
                b0, msg = await asyncio.wait_for(client.message(), 20)
                assert b0 & 0x80, "one frame per message"
                assert bool(b0 & 0x40) is compression
                assert msg == {
                    "id": f"op-{i}",
                    "type": "next",
                    "payload": {"data": {"blocks": {"block": expected}}},
                }
            assert (await lib.next())["data"]["blocks"]["block"] == expected
        for client in raw:
            await client.close()
        await lib.close()


async def test_a_library_client_keeping_its_window_reads_compressed_pushes(
    db_url: str, engine: Any
) -> None:
    """The `websockets` client validates every frame (RSV bits, deflate stream, UTF-8)."""
    chain = Chain()
    chain.block()
    await chain.write(engine)
    async with serve(db_url, engine, True) as (port, _):
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/graphql",
            subprotocols=[TRANSPORT_WS],  # type: ignore[list-item]
            compression="deflate",
        )
        lib = Subscriber(ws, TRANSPORT_WS)
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await lib.subscribe(BLOCKS)
        await asyncio.sleep(0.3)
        for _ in range(5):
            chain.block()
            await chain.write(engine)
            await notify(
                db_url,
                {"height": chain.height, "hash": chain.tip.hash, "rolled_back": [], "changes": {}},
            )
            got = (await lib.next())["data"]["blocks"]["block"]
            assert got == {"height": chain.height, "hash": chain.tip.hash}
        await ws.close()


async def test_a_client_whose_transport_pushes_back_is_queued_then_closed(
    db_url: str, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The direct path stops at the first frame the transport would buffer: the frames after it
    wait in the socket's outbox (in order), and a client that never reads is closed (4008)
    while the others get every push."""
    monkeypatch.setattr(ws, "SEND_QUEUE", 3)
    monkeypatch.setattr(ws, "CLOSE_WAIT", 0.5)
    chain = Chain()
    chain.block()
    await chain.write(engine)
    async with serve(db_url, engine, False) as (port, app):
        slow = await RawClient.connect(port, rcvbuf=2048)
        slow.send({"id": "slow", "type": "subscribe", "payload": {"query": BLOCKS}})
        slow.writer.transport.pause_reading()  # the client stops reading: its window closes
        fast = await RawClient.connect(port)
        fast.send({"id": "fast", "type": "subscribe", "payload": {"query": BLOCKS}})
        hub = app.state.hub
        for _ in range(200):
            if hub.subscriber_count == 2:
                break
            await asyncio.sleep(0.05)
        (stream,) = hub.streams.values()
        (stuck,) = [m for m in stream.members if m.id == "slow"]
        direct = stuck.conn.outbox.direct
        assert isinstance(direct, GuardedWebSocketProtocol)
        # Small buffers on the server's side too, so that a few pushes fill them.
        direct.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 2048
        )
        direct.transport.set_write_buffer_limits(high=256)
        queued = False
        for _ in range(400):
            chain.block()
            await chain.write(engine)
            await notify(
                db_url,
                {"height": chain.height, "hash": chain.tip.hash, "rolled_back": [], "changes": {}},
            )
            _, msg = await asyncio.wait_for(fast.message(), 20)
            assert msg["payload"]["data"]["blocks"]["block"]["height"] == chain.height
            queued = queued or stuck.conn.outbox._backlog is not None
            if hub.subscriber_count == 1:
                break
        assert queued, "the transport never pushed back"
        assert hub.subscriber_count == 1, "the client that does not read was never released"
        # What reached the slow client is every push from the first, in order, then the close.
        heights = []
        slow.writer.transport.resume_reading()
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                _, msg = await asyncio.wait_for(slow.message(), 20)
                heights.append(msg["payload"]["data"]["blocks"]["block"]["height"])
        assert heights and heights == list(range(2, 2 + len(heights)))
        await slow.close()
        await fast.close()
