"""The one way REC-Chain serves HTTP (the API, the relay, the event observer): uvicorn, with the
connection guards it lacks, configured from the `http` settings.

uvicorn bounds neither how long a request's headers or body may take nor how many connections
one client holds: 20,000 connections sending their headers a byte at a time used up the API's
descriptors and it stopped answering, and slow bodies held the relay's per-client slots for as
long as the client liked. Here the HTTP protocol (uvicorn's httptools implementation) is
extended, so every connection, whatever the application behind it, is held to:

- a header deadline (`header_timeout_s` from the connection, or from the first byte of a
  keep-alive request) and a header size (`max_header_bytes`): 408 / 431, then closed;
- a body deadline (`body_timeout_s` once the headers are in): 408 (when nothing was answered
  yet), the application sees the client disconnect, the connection is closed;
- a per-client cap (`max_connections_per_client`, HTTP and websocket alike, trusted proxies
  exempt) and a per-process cap (`max_connections`, by default the descriptor limit less a
  reserve): a connection over either is answered 503 and closed as soon as it is accepted, so
  a flood costs a descriptor for a moment, never all of them.

`raise_descriptor_limit` lifts the soft descriptor limit to the hard one. Proxy headers
(`X-Forwarded-For`, `X-Forwarded-Proto`) are honoured only from `trusted_proxies`; the client
address every limit sees is `scope["client"]` after that, and `client_key` is how limits name
a client (an IPv6 client by its /64, which one host can fill with addresses).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import time
import zlib
from typing import Any, ClassVar

import uvicorn
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.protocol import State
from websockets.server import ServerProtocol

from infra.config import HttpSettings

log = logging.getLogger("recchain.http")

# Descriptors kept for what is not a client connection: database pools, the LISTEN connection,
# Redis, log files, the resolver.
RESERVED_DESCRIPTORS = 256
# At most one warning about refused connections per this many seconds (a flood is not logged
# line by line).
WARN_EVERY_S = 10.0


def raise_descriptor_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # a container may forbid it: keep what we have
            pass
    elif hard == resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY:
        soft = max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        except (ValueError, OSError):
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return int(soft)


def default_max_connections(descriptors: int) -> int:
    return max(64, descriptors - max(RESERVED_DESCRIPTORS, descriptors // 10))


def client_key(host: str) -> str:
    """How limits name a client: its IPv4 address, its IPv6 /64, else the string itself."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class TrustedProxies:
    """Whether a peer address belongs to a configured reverse proxy."""

    def __init__(self, entries: list[str]) -> None:
        self.networks = [ipaddress.ip_network(e, strict=False) for e in entries]

    def __contains__(self, host: str) -> bool:
        if not self.networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self.networks)


def _response(status: int, reason: str, text: str) -> bytes:
    body = text.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


TOO_MANY_FROM_CLIENT = _response(503, "Service Unavailable", "too many connections from you")
TOO_MANY = _response(503, "Service Unavailable", "too many connections")
HEADER_TIMEOUT = _response(408, "Request Timeout", "request headers took too long")
BODY_TIMEOUT = _response(408, "Request Timeout", "request body took too long")
HEADERS_TOO_LARGE = _response(431, "Request Header Fields Too Large", "request headers too large")


class ConnectionGuard:
    """Counts the open connections of one server, per client and in all."""

    def __init__(self, settings: HttpSettings, max_connections: int) -> None:
        self.settings = settings
        self.max_connections = max_connections
        self.per_client = settings.max_connections_per_client
        self.trusted = TrustedProxies(settings.trusted_proxies)
        self.open: dict[Any, str] = {}
        self.counts: dict[str, int] = {}
        self.refused = {"client": 0, "server": 0}
        self._warned_at = 0.0

    def admit(self, transport: asyncio.BaseTransport) -> bytes | None:
        """None when the connection may go on, else the answer that refuses it."""
        if transport in self.open:  # the websocket protocol taking over an upgraded connection
            return None
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if len(self.open) >= self.max_connections:
            return self._refuse("server", TOO_MANY)
        key = client_key(host)
        count = self.counts.get(key, 0)
        if count >= self.per_client and host not in self.trusted:
            return self._refuse("client", TOO_MANY_FROM_CLIENT)
        self.open[transport] = key
        self.counts[key] = count + 1
        return None

    def release(self, transport: asyncio.BaseTransport) -> None:
        key = self.open.pop(transport, None)
        if key is None:
            return
        left = self.counts.get(key, 1) - 1
        if left <= 0:
            self.counts.pop(key, None)
        else:
            self.counts[key] = left

    def _refuse(self, why: str, answer: bytes) -> bytes:
        self.refused[why] += 1
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "refusing connections",
                extra={
                    "refused_per_client_cap": self.refused["client"],
                    "refused_process_cap": self.refused["server"],
                    "open_connections": len(self.open),
                },
            )
        return answer


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with header and body deadlines, a header size limit and the
    connection caps. One subclass per server carries its guard (`protocols`)."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._admitted = False
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = True
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        refusal = self.guard.admit(transport)
        if refusal is not None:
            transport.write(refusal)
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm(self.guard.settings.header_timeout_s, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._disarm()
        self.guard.release(self.transport)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # Still in the head after this much: the headers alone are over the limit.
        if self._in_head and self._head_bytes > self.guard.settings.max_header_bytes:
            self._abort(HEADERS_TOO_LARGE)

    def handle_websocket_upgrade(self) -> None:
        # The websocket protocol owns the connection from here (and releases it in the guard).
        self._disarm()
        self._in_head = False
        super().handle_websocket_upgrade()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # a further request on a keep-alive connection
            self._in_head = True
            self._head_bytes = 0
        if self._timer is None:
            self._arm(self.guard.settings.header_timeout_s, self._header_timeout)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()
        if not self.parser.should_upgrade():
            self._arm(self.guard.settings.body_timeout_s, self._body_timeout)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _header_timeout(self) -> None:
        self._timer = None
        # A connection that never sent a byte is just closed; one mid-request is told why.
        self._abort(HEADER_TIMEOUT if self._head_bytes else None)

    def _body_timeout(self) -> None:
        self._timer = None
        self._abort(BODY_TIMEOUT)

    def _abort(self, answer: bytes | None) -> None:
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The application sees the client gone: `receive` answers http.disconnect and its
            # own answer, if it still sends one, goes nowhere (it cannot follow ours).
            started = cycle.response_started
            cycle.disconnected = True
            cycle.message_event.set()
            if started:
                answer = None
        if answer is not None:
            self.transport.write(answer)
        self.transport.close()


# The ASGI scope extension through which an application writes prebuilt text frames.
FRAMES_EXTENSION = "recchain.websocket.frames"


class Body:
    """The shared tail of text messages sent to many sockets, encoded once for all of them:
    as UTF-8, and compressed once per window size for sockets with permessage-deflate."""

    __slots__ = ("_deflated", "plain")

    def __init__(self, plain: bytes) -> None:
        self.plain = plain
        self._deflated: dict[int, bytes] = {}

    def deflated(self, wbits: int) -> bytes:
        data = self._deflated.get(wbits)
        if data is None:
            # A fresh compressor (the sockets negotiated no context takeover), ending on a byte
            # boundary (sync flush): valid after any other byte-aligned deflate blocks.
            encoder = zlib.compressobj(wbits=-wbits, memLevel=5)
            data = encoder.compress(self.plain) + encoder.flush(zlib.Z_SYNC_FLUSH)
            data = self._deflated[wbits] = data[:-4]  # the message ends without it (RFC 7692)
        return data


def _frame_head(first: int, n: int) -> bytes:
    """A server frame's header (FIN, opcode, RSV1 in `first`; never masked)."""
    if n < 126:
        return bytes((first, n))
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big")
    return bytes((first, 127)) + n.to_bytes(8, "big")


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websocket protocol, releasing the connection in the guard when it ends, with
    a direct path for pushes (`write_text`, offered to the application in the scope's
    extensions as `FRAMES_EXTENSION`).

    A push to thousands of sockets is one frame each; through ASGI `websocket.send` every frame
    costs a coroutine, Starlette's and uvicorn's state checks and websockets' framing, several
    times the `write` itself. With permessage-deflate, context takeover is declined both ways:
    a socket then keeps no compressor of its own between messages (about 40 KB each), and a
    shared payload is compressed once for every socket instead of once per socket.
    """

    guard: ClassVar[ConnectionGuard]

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._deflate_bits: int | None = None
        if config.ws_per_message_deflate:
            self.conn = ServerProtocol(
                extensions=[
                    ServerPerMessageDeflateFactory(
                        server_no_context_takeover=True,
                        client_no_context_takeover=True,
                        server_max_window_bits=12,
                        client_max_window_bits=12,
                        compress_settings={"memLevel": 5},
                    )
                ],
                max_size=config.ws_max_size,
                logger=logging.getLogger("uvicorn.error"),
            )

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:  # the application's task has not run yet
            extensions: dict[str, Any] = self.scope["extensions"]
            extensions[FRAMES_EXTENSION] = self
            for extension in self.conn.extensions:
                if isinstance(extension, PerMessageDeflate):
                    self._deflate_bits = extension.local_max_window_bits

    def write_text(self, head: bytes, body: Body) -> bool:
        """Write the text message `head` + `body` as one frame now, if the socket is open and
        its transport takes data; False (nothing written) otherwise, and the caller goes
        through `websocket.send`, which waits for the transport or reports the socket gone."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or not self.writable.is_set()
            or self.conn.state is not State.OPEN
            or self.transport.is_closing()
        ):
            return False
        bits = self._deflate_bits
        if bits is None:
            data = head + body.plain
            self.transport.write(_frame_head(0x81, len(data)) + data)
            return True
        n = len(head)
        if n > 0xFFFF:
            return False
        # The head as a stored (uncompressed) deflate block, then the shared compressed body.
        tail = body.deflated(bits)
        stored = b"\x00" + n.to_bytes(2, "little") + (n ^ 0xFFFF).to_bytes(2, "little")
        size = 5 + n + len(tail)
        self.transport.write(b"".join((_frame_head(0xC1, size), stored, head, tail)))
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self.guard.release(self.transport)


class DisconnectsAreNotErrors:
    """ASGI wrapper: a client that went away mid-body (or was cut off at a deadline) makes
    Starlette raise ClientDisconnect out of the application; that is the client's doing, not a
    failure to log with a traceback per connection."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            log.debug("client disconnected before its request was read")


def protocols(guard: ConnectionGuard) -> tuple[type[GuardedHttpProtocol], type[Any]]:
    """HTTP and websocket protocol classes bound to `guard` (uvicorn instantiates them)."""
    http = type("HttpProtocol", (GuardedHttpProtocol,), {"guard": guard})
    ws = type("WebSocketProtocol", (GuardedWebSocketProtocol,), {"guard": guard})
    return http, ws


def server_config(
    app: Any, *, host: str, port: int, settings: HttpSettings, **uvicorn_options: Any
) -> uvicorn.Config:
    """A uvicorn configuration with the guards; `uvicorn_options` are the server's own (log
    level, websocket size and pings, ...)."""
    descriptors = raise_descriptor_limit()
    limit = settings.max_connections or default_max_connections(descriptors)
    guard = ConnectionGuard(settings, limit)
    http, ws = protocols(guard)
    trusted = list(settings.trusted_proxies)
    config = uvicorn.Config(
        DisconnectsAreNotErrors(app),
        host=host,
        port=port,
        http=http,
        ws=ws,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted,
        **uvicorn_options,
    )
    config.connection_guard = guard  # type: ignore[attr-defined]
    return config
