"""Websocket subscriptions served by shared streams, for graphql-transport-ws and graphql-ws.

Strawberry's protocol handlers run every operation as a task with its own async generator,
and every push awaits a send per operation. With thousands of sockets subscribed to the same
few operations, that machinery (not the query) is the cost of a push. These handlers keep
Strawberry for the protocol (handshake, ping/pong, keep-alives, queries and mutations over the
socket, operations that cannot be shared) and take over shareable subscription operations
(fanout.shareable): each joins the process-wide `SharedStream` of its (document, variables,
operation name) as a plain member, so a push is one synchronous frame write per socket.

Writes never wait for one socket: a frame goes straight to the transport while the socket keeps
up; once the transport pushes back, further frames wait in the connection's bounded outbox,
and a client that lets it fill is disconnected with close code 4008 (it would otherwise buffer
without bound or silently miss updates).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

from graphql import GraphQLError, OperationDefinitionNode, parse
from starlette.websockets import WebSocket
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    CompleteMessage,
    SubscribeMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import StartMessage, StopMessage
from strawberry.types.graphql import OperationType

from graphql_api import metrics
from graphql_api.context import Context
from graphql_api.errors import LimitExceeded
from graphql_api.fanout import Prebuilt, SharedStream, shareable, shared_stream
from graphql_api.guards import document_shape, shape_error, tag, variables_error
from infra.httpserver import FRAMES_EXTENSION, Body, GuardedWebSocketProtocol, client_key
from infra.ratelimit import Buckets

log = logging.getLogger(__name__)


def _operation_type(
    query: str, operation_name: str | None, max_tokens: int
) -> OperationType | None:
    """The type of the operation a document would run; None when it cannot tell (the
    subscription path then reports the error as before)."""
    try:
        document = parse(query, max_tokens=max_tokens)
    except GraphQLError:
        return None
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        ops = [o for o in ops if o.name is not None and o.name.value == operation_name]
    if len(ops) != 1:
        return None
    return OperationType(ops[0].operation.value)


# Frames one connection may have waiting behind a transport that pushes back (on top of the
# transport's own buffer, 64 KiB by default); a client this far behind is disconnected.
SEND_QUEUE = 100
SLOW_CLOSE_CODE = 4008
SLOW_CLOSE_REASON = "Subscriber too slow: send queue full"
# How long the close frame of a slow client may wait for its buffer before the socket is dropped.
CLOSE_WAIT = 5.0

Send = Callable[[str], Coroutine[Any, Any, None]]


async def _resume(coro: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Run to completion a coroutine that was stepped by hand and is suspended on `waiting`.

    This is what a task does with the futures its coroutine yields; here the first step was
    taken synchronously (see `Outbox.put`) and only a send that blocks pays for a task.
    """
    try:
        while True:
            try:
                if waiting is None:  # a bare yield (sleep(0)): just give the loop a turn
                    await asyncio.sleep(0)
                else:
                    # The flag a task clears when it takes over a yielded future; left set,
                    # awaiting the future again would be refused.
                    waiting._asyncio_future_blocking = False
                    await waiting
            except BaseException as exc:  # cancelled: let the coroutine clean up, then re-raise
                waiting = coro.throw(exc)
            else:
                waiting = coro.send(None)
    except StopIteration:
        return


class Outbox:
    """One connection's frames: written synchronously while the socket keeps up, queued (up to
    `SEND_QUEUE`) behind one task while the transport pushes back, else `overflow()`.

    A push goes straight to the server's websocket protocol (`direct`, httpserver.py) when it
    offers that and nothing is queued; otherwise through ASGI `websocket.send`."""

    __slots__ = ("_backlog", "_send", "_task", "closed", "direct", "overflow")

    def __init__(
        self,
        send: Send,
        overflow: Callable[[], None],
        direct: GuardedWebSocketProtocol | None = None,
    ) -> None:
        self._send = send
        self.overflow = overflow
        self.direct = direct
        self._backlog: deque[str] | None = None  # not None while a send is in flight
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    def push(self, head: str, head_bytes: bytes, payload: Prebuilt) -> None:
        """The message `head` + the payload + `}` (a `next`/`data` frame)."""
        direct = self.direct
        if direct is not None and self._backlog is None and not self.closed:
            body = payload.memo.get("ws")
            if body is None:
                body = payload.memo["ws"] = Body((payload.json + "}").encode())
            if direct.write_text(head_bytes, body):
                return
        self.put(head + payload.json + "}")

    def put(self, frame: str) -> None:
        if self.closed:
            return
        if self._backlog is not None:
            if len(self._backlog) >= SEND_QUEUE:
                self.close()
                self.overflow()
                return
            self._backlog.append(frame)
            return
        coro = self._send(frame)
        try:
            waiting = coro.send(None)
        except StopIteration:
            return  # the common case: written to the transport without suspending
        except Exception:
            self.closed = True  # the socket is gone; its handler's teardown releases it
            return
        self._backlog = deque()
        self._task = asyncio.create_task(self._drain(coro, waiting))

    async def _drain(self, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        try:
            await _resume(coro, waiting)
            while self._backlog:
                await self._send(self._backlog.popleft())
        except Exception:
            self.closed = True
        finally:
            self._backlog = None
            self._task = None

    def close(self) -> None:
        self.closed = True
        self._backlog = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()


def _sendable(ws: WebSocket) -> Send:
    async def send(frame: str) -> None:
        await ws.send({"type": "websocket.send", "text": frame})

    return send


class Subscriber:
    """One shareable subscription operation of one connection: a member of a shared stream."""

    __slots__ = ("conn", "head", "head_bytes", "id", "stream")

    def __init__(self, conn: Connection, op_id: str, stream: SharedStream) -> None:
        self.conn = conn
        self.id = op_id
        self.stream = stream
        kind = "data" if conn.legacy else "next"
        self.head = f'{{"id":{json.dumps(op_id)},"type":"{kind}","payload":'
        self.head_bytes = self.head.encode()

    def deliver(self, payload: Prebuilt) -> None:
        self.conn.outbox.push(self.head, self.head_bytes, payload)

    def fail(self, errors: list[GraphQLError]) -> None:
        self.conn.forget(self)
        formatted = [e.formatted for e in errors]
        # graphql-ws carries one error object, graphql-transport-ws a list.
        payload: Any = formatted[0] if self.conn.legacy else formatted
        self.conn.frame({"id": self.id, "type": "error", "payload": payload})

    def end(self) -> None:
        self.conn.forget(self)
        self.conn.frame({"id": self.id, "type": "complete"})


class Connection:
    """The shared operations of one websocket and its outbox."""

    def __init__(
        self, ws: WebSocket, context: Context, legacy: bool, buckets: Buckets | None = None
    ) -> None:
        self.ws = ws
        self.context = context
        self.legacy = legacy
        self.ops: dict[str, Subscriber] = {}
        direct = (ws.scope.get("extensions") or {}).get(FRAMES_EXTENSION)
        self.outbox = Outbox(_sendable(ws), self._overflowed, direct)
        self.main: asyncio.Task[Any] | None = None
        self.evicted = False
        self.client = _client(ws)
        self.buckets = buckets
        self.usage: _Usage | None = None  # while registered (`_register`)

    def can_share(self, payload: Any) -> bool:
        if not isinstance(payload, dict) or getattr(self.context, "hub", None) is None:
            return False
        query = payload.get("query")
        variables = payload.get("variables")
        name = payload.get("operationName")
        return (
            isinstance(query, str)
            and (variables is None or isinstance(variables, dict))
            and (name is None or isinstance(name, str))
            and not payload.get("extensions")
            and shareable(query, name, self.context.settings.api.max_tokens)
        )

    def join(self, schema: Any, op_id: str, payload: dict[str, Any]) -> None:
        query, name = payload["query"], payload.get("operationName")
        stream = shared_stream(schema, self.context, query, payload.get("variables"), name)
        subscriber = self.ops[op_id] = Subscriber(self, op_id, stream)
        if self.usage is not None:
            self.usage.shared += 1
        stream.join(subscriber)

    def forget(self, subscriber: Subscriber) -> None:
        if self.ops.get(subscriber.id) is subscriber:
            del self.ops[subscriber.id]
            if self.usage is not None:
                self.usage.shared -= 1

    def leave(self, op_id: str) -> bool:
        subscriber = self.ops.pop(op_id, None)
        if subscriber is None:
            return False
        if self.usage is not None:
            self.usage.shared -= 1
        subscriber.stream.leave(subscriber)
        return True

    def leave_all(self) -> None:
        for op_id in list(self.ops):
            self.leave(op_id)

    def frame(self, message: dict[str, Any]) -> None:
        self.outbox.put(json.dumps(message, default=str, separators=(",", ":")))

    def _overflowed(self) -> None:
        self.leave_all()
        if not self.evicted:
            self.evicted = True
            log.warning("closing a websocket whose client does not read its pushes")
            asyncio.get_running_loop().create_task(self._close_slow())

    async def _close_slow(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.ws.close(code=SLOW_CLOSE_CODE, reason=SLOW_CLOSE_REASON), CLOSE_WAIT
            )
        # A client that never reads never lets the close frame out: end the handler anyway.
        if self.main is not None and not self.main.done():
            self.main.cancel()

    async def run(self, handling: Awaitable[None]) -> None:
        """Run the protocol handler; whatever ends it, release the shared operations."""
        self.main = asyncio.current_task()
        try:
            await handling
        except asyncio.CancelledError:
            # Only our own cancellation of a slow client is absorbed; a shutdown is not.
            if not self.evicted or self.main is None or self.main.uncancel() > 0:
                raise
        finally:
            self.leave_all()
            self.outbox.close()


class _Usage:
    """One client address's operations over all its connections to this process: each costs a
    topic or a shared stream to keep and recompute, so one client may not hold without bound
    (api.max_subscriptions_per_client; per connection: ...per_connection). Kept as it changes:
    summing every connection of the client per new operation made 10,000 sockets from one
    address (a proxy, a NAT) cost seconds of CPU to subscribe."""

    __slots__ = ("handlers", "own", "shared")

    def __init__(self) -> None:
        self.handlers: dict[Any, None] = {}
        self.shared = 0  # shared-stream members (`Connection.join`/`leave`)
        # Handlers that handed an operation to Strawberry, which ends it on its own: counted
        # when asked, and dropped once they run none.
        self.own: dict[Any, None] = {}

    def held(self) -> int:
        held = self.shared
        for handler in list(self.own):
            n = _own(handler)
            if n:
                held += n
            else:
                del self.own[handler]
        return held


_CLIENTS: dict[str, _Usage] = {}


def _client(ws: WebSocket) -> str:
    return client_key(ws.client.host) if ws.client is not None else "unknown"


def _own(handler: Any) -> int:
    """Operations Strawberry runs for a handler."""
    own = getattr(handler, "operations", None)
    if own is None:
        own = getattr(handler, "tasks", {})
    return len(own)


def _held(handler: Any) -> int:
    """Operations a handler runs: shared members and Strawberry's own."""
    return len(handler.conn.ops) + _own(handler)


def _by_strawberry(handler: Any) -> None:
    """`handler` hands an operation to Strawberry's own handling."""
    if handler.conn.usage is not None:
        handler.conn.usage.own[handler] = None


def _limit_error(handler: Any) -> GraphQLError | None:
    """The error refusing one more operation of `handler`'s connection, or None."""
    api = handler.conn.context.settings.api
    if _held(handler) >= api.max_subscriptions_per_connection:
        limit, bound = "subscriptions_per_connection", api.max_subscriptions_per_connection
        scope = "this connection"
    elif (
        handler.conn.usage is not None
        and handler.conn.usage.held() >= api.max_subscriptions_per_client
    ):
        limit, bound = "subscriptions_per_client", api.max_subscriptions_per_client
        scope = "this client"
    else:
        return None
    metrics.REJECTED.labels(limit).inc()
    return GraphQLError(
        f"Subscription limit reached: at most {bound} operations at once on {scope}",
        extensions={"code": LimitExceeded.code, "limit": limit, "max": bound},
    )


def _register(handler: Any) -> None:
    usage = _CLIENTS.get(handler.conn.client)
    if usage is None:
        usage = _CLIENTS[handler.conn.client] = _Usage()
    usage.handlers[handler] = None
    usage.shared += len(handler.conn.ops)
    handler.conn.usage = usage


def _unregister(handler: Any) -> None:
    usage, handler.conn.usage = handler.conn.usage, None
    if usage is None:
        return
    usage.handlers.pop(handler, None)
    usage.own.pop(handler, None)
    usage.shared -= len(handler.conn.ops)
    if not usage.handlers and _CLIENTS.get(handler.conn.client) is usage:
        del _CLIENTS[handler.conn.client]


INVALID_CLOSE_CODE = 4400
RATE_LIMITED_CLOSE_CODE = 4429


def _well_formed(message: Any) -> bool:
    """A subscribe/start message with the types the protocols give its fields."""
    payload = message.get("payload")
    return (
        isinstance(message.get("id"), str)
        and isinstance(payload, dict)
        and isinstance(payload.get("query"), str)
        and (payload.get("variables") is None or isinstance(payload.get("variables"), dict))
        and (payload.get("operationName") is None or isinstance(payload.get("operationName"), str))
    )


def operation_error(payload: dict[str, Any], settings: Any) -> GraphQLError | None:
    """What refuses an operation before it runs or joins a stream: a document that does not
    parse, one whose validation would cost too much, variables nested too deep or holding
    text PostgreSQL cannot store. The same checks as over HTTP (guards.py)."""
    query: str = payload["query"]
    try:
        document = parse(query, max_tokens=settings.api.max_tokens)
    except GraphQLError as exc:
        return tag(exc)
    error = shape_error(document_shape(document, query), settings.api.max_selections)
    return error or variables_error(payload.get("variables"))


async def _admit(handler: Any, message: Any) -> bool:
    """Whether an operation message may go on; if not, it has been answered: a malformed one
    closes the socket (4400), one over the client's rate limit too (4429: every operation takes
    a token, as an HTTP request does), a refused document gets an error message."""
    conn: Connection = handler.conn
    if not _well_formed(message):
        await handler.websocket.close(
            code=INVALID_CLOSE_CODE, reason="Invalid message: id, payload.query, types"
        )
        return False
    if conn.buckets is not None and await conn.buckets.take(conn.client):
        metrics.REJECTED.labels("rate_limit").inc()
        await handler.websocket.close(
            code=RATE_LIMITED_CLOSE_CODE, reason="Rate limited: too many operations"
        )
        return False
    error = operation_error(message["payload"], conn.context.settings)
    if error is not None:
        payload: Any = error.formatted if conn.legacy else [error.formatted]
        conn.frame({"id": message["id"], "type": "error", "payload": payload})
        return False
    return True


def _adapter_socket(handler: Any) -> WebSocket:
    ws: WebSocket = handler.websocket.ws  # strawberry.asgi.ASGIWebSocketAdapter
    return ws


def _buckets(handler: Any) -> Buckets | None:
    """The API's rate-limit buckets (the view holds them; app.GraphQLApp)."""
    return getattr(handler.view, "buckets", None)


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with shareable subscriptions served by shared streams."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = Connection(
            _adapter_socket(self), self.context, legacy=False, buckets=_buckets(self)
        )

    async def handle(self) -> None:
        _register(self)
        try:
            await self.conn.run(super().handle())
        finally:
            _unregister(self)

    async def shutdown(self) -> None:
        self.conn.leave_all()
        await super().shutdown()

    async def handle_message(self, message: Any) -> None:
        # Strawberry indexes the frame as a mapping: `[]` or `1` raised out of the handler
        # and the socket dropped without a close frame.
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.handle_invalid_message("Invalid message: not a JSON object with a type")
            return
        await super().handle_message(cast(Any, message))

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if not self.connection_acknowledged:
            await super().handle_subscribe(message)  # refuses it
            return
        if not await _admit(self, message):
            return
        op_id = message["id"]
        payload = message["payload"]
        if op_id in self.conn.ops or op_id in self.operations:
            await self.websocket.close(code=4409, reason=f"Subscriber for {op_id} already exists")
            return
        error = _limit_error(self)
        if error is not None:
            self.conn.frame({"id": op_id, "type": "error", "payload": [error.formatted]})
            return
        if self.conn.can_share(payload):
            self.conn.join(self.schema, op_id, dict(payload))
        else:
            _by_strawberry(self)
            await super().handle_subscribe(message)

    async def handle_complete(self, message: CompleteMessage) -> None:
        if not self.conn.leave(message["id"]):
            await super().handle_complete(message)


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """graphql-ws (subscriptions-transport-ws): shareable subscriptions served by shared
    streams, queries answered over the socket, the rest by Strawberry's handler."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = Connection(
            _adapter_socket(self), self.context, legacy=True, buckets=_buckets(self)
        )

    async def handle(self) -> None:
        _register(self)
        try:
            await self.conn.run(super().handle())
        finally:
            _unregister(self)

    async def cleanup(self) -> None:
        self.conn.leave_all()
        await super().cleanup()

    async def handle_message(self, message: Any) -> None:
        # The legacy protocol names no close code for a malformed frame; 4400 as the current
        # one does (Strawberry's handler raised out of the socket on `[]` or `{"x": 1}`).
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.websocket.close(
                code=INVALID_CLOSE_CODE, reason="Invalid message: not a JSON object with a type"
            )
            return
        await super().handle_message(cast(Any, message))

    async def handle_start(self, message: StartMessage) -> None:
        if not self.connection_acknowledged:
            await super().handle_start(message)  # refuses it
            return
        if not await _admit(self, message):
            return
        op_id = message["id"]
        payload = message["payload"]
        # A start reusing a running id replaces that operation, which is completed first.
        if self.conn.leave(op_id):
            self.conn.frame({"id": op_id, "type": "complete"})
        if op_id in self.tasks:
            await self.cleanup_operation(op_id)
        error = _limit_error(self)
        if error is not None:
            self.conn.frame({"id": op_id, "type": "error", "payload": error.formatted})
            return
        if self.conn.can_share(payload):
            self.conn.join(self.schema, op_id, dict(payload))
        else:
            _by_strawberry(self)
            await super().handle_start(message)

    async def handle_async_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        # subscriptions-transport-ws runs queries over the socket too (`start` -> one `data`
        # -> `complete`); Strawberry's handler only subscribes, which refuses them.
        max_tokens = self.conn.context.settings.api.max_tokens
        if _operation_type(query, operation_name, max_tokens) is not OperationType.QUERY:
            await super().handle_async_results(operation_id, query, operation_name, variables)
            return
        try:
            result = await self.schema.execute(
                query,
                variable_values=variables,
                context_value=self.context,
                root_value=self.root_value,
                operation_name=operation_name,
                allowed_operation_types=(OperationType.QUERY,),
            )
            await self.send_data_message(result, operation_id)
            await self.send_message({"type": "complete", "id": operation_id})
        except asyncio.CancelledError:
            await self.send_message({"type": "complete", "id": operation_id})
        finally:
            self.tasks.pop(operation_id, None)

    async def handle_stop(self, message: StopMessage) -> None:
        if self.conn.leave(message["id"]):
            self.conn.frame({"id": message["id"], "type": "complete"})
        else:
            await super().handle_stop(message)
