"""Guards against expensive or abusive requests: depth, aliases, tokens, a cost estimate,
masked internal errors, per-field metrics (GraphQL extensions); body size and per-client rate
limits (ASGI middleware). Page size and statement timeout are enforced where they apply
(`query.check_first`, `db.Reader`)."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from functools import lru_cache
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxTokensLimiter,
    ParserCache,
    SchemaExtension,
    ValidationCache,
)
from strawberry.extensions.max_aliases import create_validator as alias_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_rule

from graphql_api import metrics
from graphql_api.errors import ApiError
from recchain.config import Settings
from recchain.ratelimit import Buckets

# Relation lists without `first` (a token's transfers, a listing's bids) are short in practice and
# capped at 1000 rows server-side; the estimate counts them at this typical size.
DEFAULT_LIST_COST = 10
LIMIT = {"code": "LIMIT_EXCEEDED"}


class CloseReader(SchemaExtension):
    """Ends the operation's read transaction once the result is built."""

    async def on_operation(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            ctx = self.execution_context.context
            if ctx is not None and hasattr(ctx, "close"):
                await ctx.close()


def estimate_cost(
    selection: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict[str, Any],
    multiplier: int = 1,
    seen: frozenset[str] = frozenset(),
) -> int:
    """Each field costs 1 per parent row; a field with `first` multiplies what it selects."""
    if selection is None:
        return 0
    total = 0
    for node in selection.selections:
        if isinstance(node, FieldNode):
            total += multiplier
            inner = multiplier
            if node.selection_set is not None:
                first = None
                for arg in node.arguments or ():
                    if arg.name.value == "first":
                        if isinstance(arg.value, IntValueNode):
                            first = int(arg.value.value)
                        elif isinstance(arg.value, VariableNode):
                            first = variables.get(arg.value.name.value)
                if first is not None:
                    inner = multiplier * max(1, int(first))
                elif node.name.value in _LIST_RELATIONS:
                    inner = multiplier * DEFAULT_LIST_COST
            total += estimate_cost(node.selection_set, fragments, variables, inner, seen)
        elif isinstance(node, InlineFragmentNode):
            total += estimate_cost(node.selection_set, fragments, variables, multiplier, seen)
        elif isinstance(node, FragmentSpreadNode):
            name = node.name.value
            if name in seen or name not in fragments:
                continue
            total += estimate_cost(
                fragments[name].selection_set, fragments, variables, multiplier, seen | {name}
            )
    return total


# Relation fields that return lists without a `first` argument.
_LIST_RELATIONS = frozenset(
    {"transfers", "listings", "bids", "reports", "certificates", "lines", "breakdown"}
)


def _operations(
    document: DocumentNode, operation_name: str | None
) -> list[OperationDefinitionNode]:
    return [
        d
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode)
        and (operation_name is None or d.name is None or d.name.value == operation_name)
    ]


def _cost_variables(selection: SelectionSetNode | None, out: set[str]) -> None:
    """Names of the variables that feed a `first` argument anywhere in `selection`."""
    if selection is None:
        return
    for node in selection.selections:
        if isinstance(node, FieldNode):
            for arg in node.arguments or ():
                if arg.name.value == "first" and isinstance(arg.value, VariableNode):
                    out.add(arg.value.name.value)
        if isinstance(node, FieldNode | InlineFragmentNode):
            _cost_variables(node.selection_set, out)


class Lru(OrderedDict[Any, Any]):
    """A small LRU map; the per-document analyses below are pure functions of the text.

    A hit moves the entry to the young end, so a stream of one-off documents evicts other
    one-offs, not the documents that clients keep sending."""

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            self.move_to_end(key)
        except KeyError:
            return default
        return self[key]

    def put(self, key: Any, value: Any) -> Any:
        self[key] = value
        if len(self) > self.maxsize:
            self.popitem(last=False)
        return value


# Keyed by the query text (and operation name): parsing is cached per text as well, so a
# document's analysis is done once however many requests send it.
_COST_PLANS = Lru(1024)
_ROOT_FIELDS = Lru(1024)


def operation_cost(
    document: DocumentNode, query: str, operation_name: str | None, variables: dict[str, Any]
) -> int:
    """The estimated cost of the operation with these variables.

    Only the variables that feed `first` change the estimate, so the cost is cached per
    (document, those values); a simple request finds its cost with one dictionary lookup.
    """
    key = (query, operation_name)
    plan = _COST_PLANS.get(key)
    if plan is None:
        names: set[str] = set()
        for d in document.definitions:
            if isinstance(d, OperationDefinitionNode | FragmentDefinitionNode):
                _cost_variables(d.selection_set, names)
        plan = _COST_PLANS.put(key, (tuple(sorted(names)), Lru(64)))
    names_used, costs = plan
    values = tuple(_hashable(variables.get(n)) for n in names_used)
    cost: int | None = costs.get(values)
    if cost is None:
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        cost = costs.put(
            values,
            sum(
                estimate_cost(d.selection_set, fragments, dict(variables))
                for d in _operations(document, operation_name)
            ),
        )
    return cost


def cost_error(cost: int, max_cost: int) -> GraphQLError:
    metrics.REJECTED.labels("cost").inc()
    return GraphQLError(
        f"query cost {cost} exceeds the maximum of {max_cost}:"
        " lower `first` or select fewer nested lists",
        extensions={**LIMIT, "cost": cost, "max": max_cost},
    )


class CostLimiter(SchemaExtension):
    """Refuses an operation whose estimated cost (with its variables) exceeds `max_cost`.

    Checked before execution rather than as a validation rule, because the estimate depends on
    the variables while validation results are cached per document.
    """

    def __init__(self, max_cost: int) -> None:
        self.max_cost = max_cost

    def on_execute(self) -> Iterator[None]:
        ec = self.execution_context
        document = ec.graphql_document
        if document is not None and ec.query is not None:
            cost = operation_cost(document, ec.query, ec.operation_name, ec.variables or {})
            if cost > self.max_cost:
                ec.result = ExecutionResult(data=None, errors=[cost_error(cost, self.max_cost)])
        yield


def _hashable(value: Any) -> Any:
    # A `first` variable is an Int; anything else (refused later by coercion) still needs a key.
    return value if isinstance(value, int | str | float | bool | None) else repr(value)


def _root_fields(document: DocumentNode, operation_name: str | None) -> dict[str, str] | None:
    """Response key -> root field name of the operation; None for subscriptions."""
    out: dict[str, str] = {}
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }

    def walk(selection: SelectionSetNode | None, seen: frozenset[str]) -> None:
        for node in selection.selections if selection is not None else ():
            if isinstance(node, FieldNode):
                out[(node.alias or node.name).value] = node.name.value
            elif isinstance(node, InlineFragmentNode):
                walk(node.selection_set, seen)
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                if name not in seen and name in fragments:
                    walk(fragments[name].selection_set, seen | {name})

    for op in _operations(document, operation_name):
        if op.operation.value == "subscription":
            return None
        walk(op.selection_set, frozenset())
    return out


def operation_root_fields(
    document: DocumentNode, query: str, operation_name: str | None
) -> dict[str, str] | None:
    """Response key -> root field name (cached per document); None for subscriptions."""
    key = (query, operation_name)
    fields = _ROOT_FIELDS.get(key, False)
    if fields is False:
        fields = _ROOT_FIELDS.put(key, _root_fields(document, operation_name))
    result: dict[str, str] | None = fields
    return result


def record_field_metrics(
    fields: dict[str, str], elapsed: float, errors: list[GraphQLError] | None
) -> None:
    """The operation's time under each of its root fields; errors a root resolver raised."""
    for name in set(fields.values()):
        metrics.LATENCY.labels(name).observe(elapsed)
    for error in errors or ():
        original: Exception | None = error.original_error
        # Only errors raised by a root resolver itself, as a resolver hook would see.
        if original is None or error.path is None or len(error.path) != 1:
            continue
        field = fields.get(str(error.path[0]))
        if field is not None:
            code = "INTERNAL"
            if isinstance(original, ApiError):
                code = original.extensions["code"]
            metrics.ERRORS.labels(field, code).inc()


class FieldMetrics(SchemaExtension):
    """Latency and errors per root field.

    The operation is timed once and the time recorded under each of its root fields: a
    per-field `resolve` hook would make graphql-core wrap every resolver of every field in
    the extension chain, which cost more than the rest of a simple request. Root fields run
    concurrently, so the operation's time is each root field's time to its answer.
    """

    def on_execute(self) -> Iterator[None]:
        ec = self.execution_context
        document = ec.graphql_document
        if document is None or ec.query is None or ec.result is not None:
            yield  # refused before execution (cost): no field ran
            return
        fields = operation_root_fields(document, ec.query, ec.operation_name)
        if not fields:
            yield
            return
        started = time.perf_counter()
        try:
            yield
        finally:
            result = ec.result
            record_field_metrics(
                fields,
                time.perf_counter() - started,
                list(result.errors or ()) if result is not None else None,
            )


def is_internal(error: GraphQLError) -> bool:
    """Raised by our own code, not the client's mistake. Client errors (typed ApiErrors, or
    parse and validation errors without an original exception) are shown as they are."""
    original = error.original_error
    return original is not None and not isinstance(original, ApiError | GraphQLError)


MASKED_MESSAGE = "Internal server error."


def masked(errors: list[GraphQLError]) -> list[GraphQLError]:
    """Internal errors replaced by a generic one, as MaskErrors does (its rules, one place)."""
    return [
        GraphQLError(
            MASKED_MESSAGE,
            nodes=e.nodes,
            source=e.source,
            positions=e.positions,
            path=e.path,
            original_error=None,
        )
        if is_internal(e)
        else e
        for e in errors
    ]


@lru_cache(maxsize=16)
def validation_rules(max_depth: int, max_aliases: int) -> tuple[type[ASTValidationRule], ...]:
    """The depth and alias rules, built once per limit.

    Validation results are cached keyed by the rule classes too, and QueryDepthLimiter /
    MaxAliasesLimiter make new classes per instance: per-operation instances of those made
    every request miss the validation cache and validate afresh.
    """
    return (depth_rule(max_depth, None), alias_rule(max_aliases))


def build_extensions(settings: Settings) -> list[Any]:
    """Extension factories: every operation gets fresh instances. An instance shared by
    concurrent operations would see another operation's execution context after its first await
    (a shared MaskErrors could mask the wrong result). The parse and validation LRU caches live
    at module level in Strawberry, so per-operation instances still share them."""
    api = settings.api
    rules = list(validation_rules(api.max_depth, api.max_aliases))
    extensions: list[Any] = [
        CloseReader,
        lambda: MaxTokensLimiter(max_token_count=api.max_tokens),
        # Parsing and validating dominate small requests; both depend on the document only.
        lambda: ParserCache(maxsize=1024),
        lambda: AddValidationRules(rules),
        lambda: ValidationCache(maxsize=1024),
        lambda: CostLimiter(api.max_cost),
        FieldMetrics,
    ]
    if api.mask_errors:
        extensions.append(
            lambda: MaskErrors(should_mask_error=is_internal, error_message=MASKED_MESSAGE)
        )
    return extensions


# -- ASGI middleware --------------------------------------------------------------------------


async def _refuse(send: Send, status: int, message: str, **extra: Any) -> None:
    body = json.dumps({"errors": [{"message": message, "extensions": extra}]}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if "retryAfter" in extra:
        headers.append((b"retry-after", str(extra["retryAfter"]).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuses request bodies over `max_bytes` (413) before they reach the GraphQL parser."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            metrics.REJECTED.labels("body_size").inc()
            await _refuse(
                send, 413, f"request body exceeds {self.max_bytes} bytes", code="PAYLOAD_TOO_LARGE"
            )
            return
        # Chunked bodies declare no length: buffer up to the limit, then decide.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                metrics.REJECTED.labels("body_size").inc()
                await _refuse(
                    send,
                    413,
                    f"request body exceeds {self.max_bytes} bytes",
                    code="PAYLOAD_TOO_LARGE",
                )
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        await self.app(scope, replay(b"".join(chunks), receive), send)


def replay(body: bytes, receive: Receive) -> Receive:
    """`receive` that yields an already read body first (then the connection's messages)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


class RateLimit:
    """Token bucket per client address for `/graphql` requests and websocket connections;
    the buckets (`recchain.ratelimit`) are shared by every replica when `redis_url` is set."""

    def __init__(self, app: ASGIApp, buckets: Buckets, paths: tuple[str, ...]) -> None:
        self.app = app
        self.buckets = buckets
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = await self.buckets.take(client)
        if wait == 0:
            await self.app(scope, receive, send)
            return
        metrics.REJECTED.labels("rate_limit").inc()
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4429, "reason": "rate limited"})
            return
        await _refuse(
            send,
            429,
            "rate limit exceeded",
            code="RATE_LIMITED",
            retryAfter=max(1, int(wait + 0.999)),
        )
