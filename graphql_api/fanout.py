"""Shared execution of identical subscriptions.

The hub shares the *computation* of a topic, but graphql-core would still resolve and serialize
the selection once per websocket, which dominates a push to thousands of sockets. Here every
subscription operation with the same document, operation name and variables is executed once:
one background stream per key, whose results are encoded to JSON once and handed to every
member as a `Prebuilt` payload.

A member is anything with `deliver`/`fail`/`end`. Websocket operations (ws.py) are members
directly, so a push costs each socket one string concatenation and one frame write, with no
task, queue or generator per subscription. Other consumers of `Schema.stream` (HTTP streaming
transports) get an async generator over a bounded queue (`SharedStream.listen`), whose
`Prebuilt` payloads `GraphQLApp.encode_json` splices into the protocol's envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

import strawberry
from graphql import FieldNode, GraphQLError, OperationDefinitionNode, OperationType, parse
from strawberry.types.execution import ExecutionResult, PreExecutionError

from graphql_api import metrics

if TYPE_CHECKING:
    from strawberry.types.graphql import OperationType as StrawberryOperationType

log = logging.getLogger(__name__)
QUEUE_SIZE = 256
SEP = (",", ":")
# Members served per event-loop turn: a push to 10,000 sockets must not hold the loop (and the
# LISTEN connection, HTTP requests, other streams) for the whole fan-out.
SLICE = 500

# Root fields whose stream depends on the arguments alone. `relayStatus` starts with the current
# status for each new subscriber, so a late joiner cannot share an already running stream; for
# the same reason neither can a resumed subscription (it starts with what its client missed).
SHAREABLE_FIELDS = frozenset({"blocks", "listingUpdates", "certificateEvents"})
RESUME_ARGUMENTS = frozenset({"afterHash", "afterHeight"})

# Set inside a shared stream's task: the hub counts that stream's members as its subscribers.
CURRENT: contextvars.ContextVar[SharedStream | None] = contextvars.ContextVar(
    "recchain_shared_stream", default=None
)


class Prebuilt:
    """A `{data, errors}` payload already encoded as JSON, shared by every member."""

    __slots__ = ("json", "memo")

    def __init__(self, encoded: str) -> None:
        self.json = encoded
        # What a transport derives from the payload (its bytes, compressed), once for all.
        self.memo: dict[str, Any] = {}


class Member(Protocol):
    """One subscription served by a shared stream. Called synchronously from the stream."""

    def deliver(self, payload: Prebuilt) -> None: ...

    def fail(self, errors: list[GraphQLError]) -> None:
        """The operation was refused before execution (validation, guards)."""

    def end(self) -> None:
        """The stream is over (its source ended or failed)."""


def splice(envelope: dict[str, Any]) -> str | None:
    """The frame for a protocol message whose payload is `Prebuilt`, else None."""
    payload = envelope.get("payload")
    if type(payload) is not dict or type(payload.get("data")) is not Prebuilt:
        return None
    head = json.dumps({k: v for k, v in envelope.items() if k != "payload"}, separators=SEP)
    return f'{head[:-1]},"payload":{payload["data"].json}}}'


def encode(result: ExecutionResult) -> Prebuilt:
    payload: dict[str, Any] = {"data": result.data}
    if result.errors:
        payload["errors"] = [e.formatted for e in result.errors]
    if result.extensions:
        payload["extensions"] = result.extensions
    return Prebuilt(json.dumps(payload, default=str, separators=SEP))


@lru_cache(maxsize=1024)
def shareable(query: str, operation_name: str | None, max_tokens: int) -> bool:
    """True for a subscription selecting only shareable root fields (no fragments at the root).

    Anything else, including a document that does not parse, takes the per-operation path,
    which also reports the error.
    """
    try:
        document = parse(query, no_location=True, max_tokens=max_tokens)
    except GraphQLError:
        return False
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    if len(operations) != 1 or operations[0].operation != OperationType.SUBSCRIPTION:
        return False
    selections = operations[0].selection_set.selections
    return all(
        isinstance(s, FieldNode)
        and s.name.value in SHAREABLE_FIELDS
        and not any(a.name.value in RESUME_ARGUMENTS for a in s.arguments or ())
        for s in selections
    )


class SharedStream:
    """One execution of a subscription operation, broadcast to its members."""

    def __init__(
        self,
        key: str,
        registry: dict[str, SharedStream],
        open_source: Callable[[], Awaitable[AsyncIterator[Any]]],
    ) -> None:
        self.key = key
        self.registry = registry
        self.open_source = open_source
        self.members: dict[Member, None] = {}  # insertion-ordered set
        self.task: asyncio.Task[None] | None = None

    def join(self, member: Member) -> None:
        self.members[member] = None
        metrics.SUBSCRIPTIONS.inc()
        if self.task is None:
            self.task = asyncio.create_task(self._pump(), name=f"recchain-shared:{self.key[:60]}")

    def leave(self, member: Member) -> None:
        """Synchronous, so a socket's teardown cannot be interrupted half-way."""
        if self.members.pop(member, False) is not False:
            metrics.SUBSCRIPTIONS.dec()
        if not self.members:
            self._detach()
            task, self.task = self.task, None
            if task is not None and not task.done():
                task.cancel()

    def _detach(self) -> None:
        if self.registry.get(self.key) is self:
            del self.registry[self.key]

    def _release(self) -> list[Member]:
        members = list(self.members)
        self.members.clear()
        metrics.SUBSCRIPTIONS.dec(len(members))
        return members

    async def _broadcast(self, payload: Prebuilt) -> None:
        members = list(self.members)
        for start in range(0, len(members), SLICE):
            if start:
                await asyncio.sleep(0)
            for member in members[start : start + SLICE]:
                # A member that left during an earlier slice gets nothing more.
                if start == 0 or member in self.members:
                    member.deliver(payload)

    async def _pump(self) -> None:
        CURRENT.set(self)
        source: AsyncIterator[Any] | None = None
        try:
            source = await self.open_source()
            async for result in source:
                if isinstance(result, PreExecutionError):
                    self._detach()
                    for member in self._release():
                        member.fail(list(result.errors or ()))
                    return
                if not isinstance(result, ExecutionResult):
                    self._detach()
                    error = GraphQLError("Incremental delivery is not supported in subscriptions")
                    for member in self._release():
                        member.fail([error])
                    return
                await self._broadcast(encode(result))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("shared subscription %s failed", self.key)
        finally:
            # Synchronously: a subscriber arriving from now on starts a new stream.
            self._detach()
            if source is not None:
                with contextlib.suppress(Exception):
                    await source.aclose()  # type: ignore[attr-defined]
        for member in self._release():
            member.end()

    def listen(self) -> AsyncGenerator[Any, None]:
        """The stream as an async generator of results, for a transport that needs one."""
        return _QueueMember(self).results()


_END = object()


class _QueueMember:
    """A member read through a bounded queue; a slow reader loses its oldest update."""

    def __init__(self, stream: SharedStream) -> None:
        self.stream = stream
        self.queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE_SIZE)

    def _put(self, item: Any) -> None:
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(item)

    def deliver(self, payload: Prebuilt) -> None:
        self._put(ExecutionResult(data=payload, errors=None))  # type: ignore[arg-type]

    def fail(self, errors: list[GraphQLError]) -> None:
        self._put(PreExecutionError(data=None, errors=errors))
        self._put(_END)

    def end(self) -> None:
        self._put(_END)

    async def results(self) -> AsyncGenerator[Any, None]:
        self.stream.join(self)
        try:
            while True:
                item = await self.queue.get()
                if item is _END:
                    return
                yield item
        finally:
            self.stream.leave(self)


def stream_key(query: str, operation_name: str | None, variables: dict[str, Any] | None) -> str:
    return json.dumps([query, operation_name, variables or {}], sort_keys=True, default=str)


def shared_stream(
    schema: strawberry.Schema,
    context: Any,
    query: str,
    variables: dict[str, Any] | None,
    operation_name: str | None,
    allowed_operation_types: Iterable[StrawberryOperationType] | None = None,
) -> SharedStream:
    """The running stream of this operation, or a new one (not started until a member joins).

    `context` is a `graphql_api.context.Context` with a hub; the stream outlives the socket that
    started it, so it executes with a detached context of its own.
    """
    streams: dict[str, SharedStream] = context.hub.streams
    key = stream_key(query, operation_name, variables)
    shared = streams.get(key)
    if shared is None:
        detached = context.detached()

        async def open_source() -> Any:
            # The base class's stream: `schema` may route shareable operations back here.
            return await strawberry.Schema.stream(
                schema,
                query,
                variables,
                detached,
                None,
                operation_name,
                None,
                allowed_operation_types,
            )

        shared = streams[key] = SharedStream(key, streams, open_source)
    return shared
