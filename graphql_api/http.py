"""The common GraphQL request on a short path: `POST /graphql` with a JSON body holding a query
operation that parses and validates.

Strawberry's HTTP view and `Schema.execute` run about a dozen extension hooks, context managers
and adapter objects per request; for a one-row lookup they cost more CPU than graphql-core's
execution, the SQL and the HTTP server together. Here the request is read once, the document's
parse, validation (with the depth and alias rules), operation and root fields are looked up in
one cache per (query, operationName), and graphql-core executes it with Strawberry's own
execution context class, so resolvers see exactly what they see under Strawberry.

Every guard still applies, from the same code in `guards.py`: tokens (the parser's limit),
depth and aliases (validation rules), cost (per request, with the variables), masked internal
errors, per-root-field metrics, and the body size, rate limit and CORS middleware in front.
Anything else - GET, GraphiQL, other content types, batches, `extensions`, mutations and
subscriptions, documents that fail to parse or validate, operations over the cost limit - goes
to Strawberry unchanged, so errors keep their exact shape and there is one place that words
them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from inspect import isawaitable
from types import GeneratorType
from typing import Any, TypeGuard

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLField,
    GraphQLLeafType,
    OperationType,
    Undefined,
    execute,
    get_operation_ast,
    is_leaf_type,
    is_non_null_type,
    parse,
    specified_rules,
)
from graphql.pyutils import is_awaitable as default_is_awaitable
from starlette.types import Receive, Scope, Send
from strawberry import Schema
from strawberry.schema.base import BaseSchema
from strawberry.schema.schema import validate_document

from graphql_api import metrics
from graphql_api.answercache import TIP_SQL, AnswerCache, Key, chain_only, tip_of, variables_key
from graphql_api.context import Context
from graphql_api.guards import (
    Lru,
    document_shape,
    masked,
    operation_cost,
    operation_root_fields,
    record_field_metrics,
    response_too_large,
    shape_error,
    tag,
    validation_rules,
    variables_error,
)
from infra.config import Settings

JSON_HEADERS = ((b"content-type", b"application/json"),)
_MISSING = object()
log = logging.getLogger(__name__)


# A plain attribute of a leaf type: (its Python name, the type, nullable?).
Leaf = tuple[str, GraphQLLeafType, bool]
_UNKNOWN = object()


def _leaf(field: GraphQLField) -> Leaf | None:
    """How to read `field` without a resolve info: Strawberry's own resolver for a field
    without one (`_is_default`, reading the attribute) and a scalar or enum type."""
    definition = (field.extensions or {}).get("strawberry-definition")
    if (
        not getattr(field.resolve, "_is_default", False)
        or definition is None
        or definition.default_resolver is not getattr
        or field.args
    ):
        return None
    kind, nullable = field.type, True
    if is_non_null_type(kind):
        kind, nullable = kind.of_type, False
    if not is_leaf_type(kind):
        return None
    return definition.python_name, kind, nullable


def leaf_shortcut(base: type[Any]) -> type[Any]:
    """`base` (Strawberry's execution context) reading plain leaf attributes directly.

    For every field graphql-core builds a resolve info (a dozen attributes), goes through
    Strawberry's resolver wrapper and dispatches on the type to complete the value: for a page
    of 50 certificates that was most of a request's CPU. A field that only reads an attribute
    of a scalar or enum type is read and coerced here; anything else, and anything unusual
    (null where it may not be, a value that does not coerce, an error), takes graphql-core's
    own path, which reports it as before."""
    leaves: dict[int, Leaf | None] = {}

    def execute_field(
        self: Any,
        parent_type: Any,
        source: Any,
        field_details_list: Any,
        path: Any,
        position_context: Any,
    ) -> Any:
        node = field_details_list[0].node
        field = self.schema.get_field(parent_type, node.name.value)
        if field is not None and not node.arguments:
            known = leaves.get(id(field), _UNKNOWN)
            plan: Leaf | None
            if known is _UNKNOWN:
                plan = leaves[id(field)] = _leaf(field)
            else:
                plan = known  # type: ignore[assignment]
            if plan is not None:
                name, kind, nullable = plan
                try:
                    value = getattr(source, name)
                    if value is None:
                        if nullable:
                            return None
                    elif not isinstance(value, Exception):
                        coerced = kind.coerce_output_value(value)
                        if coerced is not Undefined and coerced is not None:
                            return coerced
                except Exception:  # graphql-core's path words the error
                    pass
        return base.execute_field(
            self, parent_type, source, field_details_list, path, position_context
        )

    return type(f"LeafShortcut{base.__name__}", (base,), {"execute_field": execute_field})


_AWAITABLE_TYPES: dict[type, bool] = {}


def is_awaitable(value: Any) -> TypeGuard[Awaitable[Any]]:
    """graphql-core's `is_awaitable`, answered once per type.

    It is asked of every value execution completes (each list item, each field), and for a
    value that is not awaitable its `hasattr(value, "__await__")` is a failed attribute lookup
    through the instance and its classes: a twentieth of a page's CPU. `await` looks
    `__await__` up on the type, so the type decides, except for generator-based coroutines,
    which only the generator's flags tell apart."""
    kind = type(value)
    known = _AWAITABLE_TYPES.get(kind)
    if known is None:
        if kind is GeneratorType:
            return default_is_awaitable(value)
        known = _AWAITABLE_TYPES[kind] = default_is_awaitable(value)
    return known


@dataclass(slots=True)
class Plan:
    """What a valid query document needs per request, computed on its first request."""

    document: DocumentNode
    root_fields: dict[str, str]
    # Whether its answers may be cached per chain tip (answercache.chain_only).
    cacheable: bool = False
    # Set once an execution of the document asked for a second statement (db.Reader).
    snapshot: bool = False


class FastQueries:
    """Executes the common request; `handle` returns False to leave the request to Strawberry."""

    def __init__(
        self,
        schema: BaseSchema,
        settings: Settings,
        context: Callable[[Scope, bool], Context],
        answers: AnswerCache | None = None,
    ):
        assert isinstance(schema, Schema)
        self.answers = answers
        api = settings.api
        self.schema = schema
        self.context = context
        self.max_tokens = api.max_tokens
        self.max_cost = api.max_cost
        self.max_page = api.max_page_size
        self.max_selections = api.max_selections
        self.max_response = api.max_response_bytes
        self.mask = api.mask_errors
        self.rules = (
            *specified_rules,
            *validation_rules(api.max_depth, api.max_aliases, api.introspection),
        )
        self.executor_class = leaf_shortcut(schema.execution_context_class)
        self._plans = Lru(1024)

    def plan(self, query: str, operation_name: str | None) -> Plan | GraphQLError | None:
        """The document's plan; the error refusing it before validation (its shape); or None
        for Strawberry's path."""
        key = (query, operation_name)
        found = self._plans.get(key, _MISSING)
        if found is not _MISSING:
            result: Plan | GraphQLError | None = found
            return result
        plan: Plan | GraphQLError | None = None
        try:
            document = parse(query, max_tokens=self.max_tokens)
        except GraphQLError:
            document = None
        if document is not None:
            # Refused here rather than handed on: Strawberry would parse it a second time.
            plan = shape_error(document_shape(document, query), self.max_selections)
            operation = get_operation_ast(document, operation_name)
            if (
                plan is None
                and operation is not None
                and operation.operation == OperationType.QUERY
                and not validate_document(self.schema._schema, document, self.rules)
            ):
                fields = operation_root_fields(document, query, operation_name) or {}
                cacheable = chain_only(self.schema._schema, document, operation_name)
                plan = Plan(document, fields, cacheable)
        self._plans.put(key, plan)
        return plan

    async def handle(self, scope: Scope, data: Any, send: Send) -> bool:
        """`data` is the decoded JSON body of a POST."""
        if type(data) is not dict:
            return False
        query = data.get("query")
        variables = data.get("variables")
        operation_name = data.get("operationName")
        if (
            type(query) is not str
            or not (variables is None or type(variables) is dict)
            or not (operation_name is None or type(operation_name) is str)
            or data.get("extensions")
        ):
            return False
        plan = self.plan(query, operation_name)
        if isinstance(plan, GraphQLError):
            metrics.REJECTED.labels("selections").inc()
            await _answer(send, {"data": None, "errors": [plan.formatted]})
            return True
        if plan is None or variables_error(variables) is not None:
            return False
        cost = operation_cost(
            self.schema._schema,
            plan.document,
            query,
            operation_name,
            variables or {},
            self.max_page,
        )
        if cost > self.max_cost:
            return False
        started = time.perf_counter()
        # Every guard has passed: an answer of this request may come from the cache.
        key: Key | None = None
        keep = False
        if self.answers is not None and plan.cacheable:
            key = (query, operation_name, variables_key(variables))
            cached = self.answers.get(key)
            if cached is not None:
                if plan.root_fields:
                    record_field_metrics(plan.root_fields, time.perf_counter() - started, None)
                await _send_json(send, cached)
                return True
            # In a snapshot anyway, keeping costs one statement; alone, three (admit).
            keep = plan.snapshot or self.answers.admit(key)
        # Optimistic first (one statement, no transaction), unless the document is known to
        # run more or its answer is to be kept (its tip is read in its snapshot); an
        # optimistic run that asks for a second statement is run again.
        ctx = self.context(scope, not (plan.snapshot or keep))
        try:
            result = await self._execute(plan, ctx, variables, operation_name)
            if ctx.reader.needs_snapshot:
                plan.snapshot = True
                await ctx.close()
                ctx = self.context(scope, False)
                result = await self._execute(plan, ctx, variables, operation_name)
                keep = key is not None
            errors = result.errors
            if plan.root_fields:
                record_field_metrics(plan.root_fields, time.perf_counter() - started, errors)
            payload: dict[str, Any] = {"data": result.data}
            if errors:
                self.schema._process_errors(errors)  # logs them, as Strawberry does
                shown = masked(errors) if self.mask else errors
                payload["errors"] = [tag(e).formatted for e in shown]
            out, whole = _encode(payload, self.max_response)
            # Before the answer goes: a client that has it finds every statement of it done.
            if keep and key is not None and whole and not errors and result.data is not None:
                await self._keep(ctx, key, out)
            await _send_json(send, out)
        finally:
            # After the answer is on its way: ending the read transaction is no part of it.
            await ctx.close()
        return True

    async def _keep(self, ctx: Context, key: Key, out: bytes) -> None:
        """File the answer under the tip its own snapshot shows (answercache.py, point 3)."""
        assert self.answers is not None
        if not ctx.reader.in_one_snapshot:
            return
        try:
            tip = tip_of(await ctx.reader.one(TIP_SQL))
        except Exception:  # not keeping an answer is always correct
            log.debug("reading the tip for the answer cache failed", exc_info=True)
            return
        if tip is not None and ctx.reader.in_one_snapshot:
            self.answers.put(key, tip, out)

    async def _execute(
        self, plan: Plan, ctx: Context, variables: dict[str, Any] | None, name: str | None
    ) -> ExecutionResult:
        try:
            result = execute(
                self.schema._schema,
                plan.document,
                context_value=ctx,
                variable_values=variables,
                operation_name=name,
                executor_class=self.executor_class,
                is_awaitable=is_awaitable,
            )
            if isawaitable(result):
                result = await result
        except Exception as exc:  # as Strawberry: an error result, masked later
            result = ExecutionResult(None, [GraphQLError(str(exc), original_error=exc)])
        assert isinstance(result, ExecutionResult)
        return result


def _encode(payload: dict[str, Any], max_bytes: int | None = None) -> tuple[bytes, bool]:
    """The answer's bytes, and False when they were replaced by the size limit's error."""
    out = json.dumps(payload, separators=(",", ":")).encode()
    if max_bytes is not None and len(out) > max_bytes:
        error = response_too_large(len(out), max_bytes)
        return json.dumps({"data": None, "errors": [error.formatted]}).encode(), False
    return out, True


async def _answer(send: Send, payload: dict[str, Any], max_bytes: int | None = None) -> None:
    await _send_json(send, _encode(payload, max_bytes)[0])


async def _send_json(send: Send, out: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*JSON_HEADERS, (b"content-length", str(len(out)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": out})


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
