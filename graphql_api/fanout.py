"""Shared execution of identical subscriptions.

The hub shares the *computation* of a topic, but graphql-core would still resolve and serialize
the selection once per websocket, which dominates a push to thousands of sockets. Here every
subscription operation with the same document, operation name and variables is executed once:
one background stream per key, whose results are encoded to JSON once and handed to every
listener as a `Prebuilt` payload; the view splices it into each protocol's envelope
(`GraphQLApp.encode_json`), so a push costs each socket a queue hop and one frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from functools import lru_cache
from typing import Any

from graphql import FieldNode, GraphQLError, OperationDefinitionNode, OperationType, parse
from strawberry.types.execution import ExecutionResult, PreExecutionError

from graphql_api import metrics

log = logging.getLogger(__name__)
QUEUE_SIZE = 256
SEP = (",", ":")

# Root fields whose stream depends on the arguments alone. `relayStatus` starts with the current
# status for each new subscriber, so a late joiner cannot share an already running stream.
SHAREABLE_FIELDS = frozenset({"blocks", "listingUpdates", "certificateEvents"})

# Set inside a shared stream's task: the hub counts that stream's listeners as its subscribers.
CURRENT: contextvars.ContextVar[SharedStream | None] = contextvars.ContextVar(
    "recchain_shared_stream", default=None
)


class Prebuilt:
    """A `{data, errors}` payload already encoded as JSON, shared by every listener."""

    __slots__ = ("json",)

    def __init__(self, encoded: str) -> None:
        self.json = encoded


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

    Anything else, including a document that does not parse, takes the per-socket path, which
    also reports the error.
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
    return all(isinstance(s, FieldNode) and s.name.value in SHAREABLE_FIELDS for s in selections)


_END = object()


class SharedStream:
    """One execution of a subscription operation, broadcast to its listeners."""

    def __init__(
        self,
        key: str,
        registry: dict[str, SharedStream],
        open_source: Callable[[], Awaitable[AsyncIterator[Any]]],
    ) -> None:
        self.key = key
        self.registry = registry
        self.open_source = open_source
        self.listeners: set[asyncio.Queue[Any]] = set()
        self.task: asyncio.Task[None] | None = None

    def _detach(self) -> None:
        if self.registry.get(self.key) is self:
            del self.registry[self.key]

    def _broadcast(self, item: Any) -> None:
        for q in self.listeners:
            if q.full():  # a slow consumer loses its oldest update, never blocks others
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(item)

    async def _pump(self) -> None:
        CURRENT.set(self)
        source = await self.open_source()
        try:
            async for result in source:
                if isinstance(result, ExecutionResult) and not isinstance(
                    result, PreExecutionError
                ):
                    result = ExecutionResult(data=encode(result), errors=None)  # type: ignore[arg-type]
                self._broadcast(result)
                if isinstance(result, PreExecutionError):
                    break
        except Exception:
            log.exception("shared subscription %s failed", self.key)
        finally:
            # Synchronously: a subscriber arriving from now on starts a new stream.
            self._detach()
            self._broadcast(_END)
            with contextlib.suppress(Exception):
                await source.aclose()  # type: ignore[attr-defined]

    async def listen(self) -> AsyncGenerator[Any, None]:
        queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE_SIZE)
        self.listeners.add(queue)
        metrics.SUBSCRIPTIONS.inc()
        if self.task is None:
            self.task = asyncio.create_task(self._pump(), name=f"recchain-shared:{self.key[:60]}")
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                yield item
        finally:
            metrics.SUBSCRIPTIONS.dec()
            self.listeners.discard(queue)
            if not self.listeners:
                self._detach()
                task, self.task = self.task, None
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task


def stream_key(query: str, operation_name: str | None, variables: dict[str, Any] | None) -> str:
    return json.dumps([query, operation_name, variables or {}], sort_keys=True, default=str)
