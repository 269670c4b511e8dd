"""Guards against expensive or abusive requests: depth, aliases, tokens, a cost estimate,
masked internal errors, per-field metrics (GraphQL extensions); body size and per-client rate
limits (ASGI middleware). Page size and statement timeout are enforced where they apply
(`query.check_first`, `db.Reader`)."""

from __future__ import annotations

import json
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from graphql import (
    ArgumentNode,
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSyntaxError,
    InlineFragmentNode,
    IntValueNode,
    NoSchemaIntrospectionCustomRule,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    VariableNode,
    Visitor,
    get_named_type,
    visit,
)
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxTokensLimiter,
    ParserCache,
    SchemaExtension,
)
from strawberry.extensions.max_aliases import create_validator as alias_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_rule
from strawberry.schema.schema import validate_document
from strawberry.types.graphql import OperationType as StrawberryOperationType

from graphql_api import metrics
from graphql_api.errors import ApiError
from infra.config import Settings
from infra.httpserver import client_key
from infra.ratelimit import Buckets

# A list that takes no `first` (the parts of a domain answer: a statement's lines, a report's
# rows, a provenance piece's history) is counted at this size; relations are connections and
# count at their page.
LIST_SIZE = 1000
LIMIT = {"code": "LIMIT_EXCEEDED"}
BAD_INPUT = {"code": "BAD_USER_INPUT"}
# Deepest nesting of a variable value (lists and input objects). A `where` nests a few levels;
# thousands of levels made coercion overflow the stack (an internal error).
MAX_INPUT_DEPTH = 32
# PostgreSQL text cannot hold NUL, and UTF-8 has no encoding for unpaired surrogates: either
# would fail inside the database driver as an internal error.
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
BAD_TEXT_MESSAGE = "text must not contain NUL characters or unpaired UTF-16 surrogates"


def has_bad_text(text: str) -> bool:
    return _BAD_TEXT.search(text) is not None


class CloseReader(SchemaExtension):
    """Ends the operation's read transaction once the result is built."""

    async def on_operation(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            ctx = self.execution_context.context
            if ctx is not None and hasattr(ctx, "close"):
                await ctx.close()


# -- the document's shape: what validation will cost ---------------------------------------


@dataclass(frozen=True, slots=True)
class Shape:
    """What validating a document costs, computed in one linear pass before validation runs.

    `selections` counts field selections with every fragment counted once per spread (two
    spreads of a fragment that spreads the next one twice, forty deep, is 2^40 selections for
    the depth and alias rules, which expand fragments). `pairs` counts what the overlapping-
    fields rule compares: pairs of same-named fields in one selection set, and pairs of
    distinct fragments spread into one (1,400 `__typename` are 979,300 pairs). `bad_text` is
    whether a string literal holds what PostgreSQL cannot store."""

    selections: int
    pairs: int
    bad_text: bool


def _shape(document: DocumentNode) -> Shape:
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    expanded: dict[str, int] = {}
    visiting: set[str] = set()

    def count(selection_set: SelectionSetNode) -> int:
        total = 0
        for node in selection_set.selections:
            if isinstance(node, FieldNode):
                total += 1 + (count(node.selection_set) if node.selection_set else 0)
            elif isinstance(node, InlineFragmentNode):
                total += count(node.selection_set)
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                if name in visiting or name not in fragments:
                    continue  # a cycle or an unknown fragment: validation refuses it
                if name not in expanded:
                    visiting.add(name)
                    expanded[name] = count(fragments[name].selection_set)
                    visiting.discard(name)
                total += expanded[name]
        return total

    selections = sum(
        count(d.selection_set)
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode)
    )
    pairs = 0
    bad_text = False
    # graphql-core's visitor walks with its own stack: no recursion on deep documents.
    for node in _nodes(document):
        if isinstance(node, SelectionSetNode):
            names: dict[str, int] = {}
            spreads: set[str] = set()
            stack = [node]
            while stack:
                for sel in stack.pop().selections:
                    if isinstance(sel, FieldNode):
                        key = (sel.alias or sel.name).value
                        names[key] = names.get(key, 0) + 1
                    elif isinstance(sel, InlineFragmentNode):
                        stack.append(sel.selection_set)
                    elif isinstance(sel, FragmentSpreadNode):
                        spreads.add(sel.name.value)
            pairs += sum(k * (k - 1) // 2 for k in names.values())
            pairs += len(spreads) * (len(spreads) - 1) // 2
        elif isinstance(node, StringValueNode) and _BAD_TEXT.search(node.value):
            bad_text = True
    return Shape(selections, pairs, bad_text)


def _nodes(document: DocumentNode) -> list[Any]:
    found: list[Any] = []

    class Collect(Visitor):
        def enter(self, node: Any, *_: Any) -> None:
            if isinstance(node, SelectionSetNode | StringValueNode):
                found.append(node)

    visit(document, Collect())
    return found


def document_shape(document: DocumentNode, query: str) -> Shape:
    """The document's Shape, cached per query text (a document is analysed once)."""
    shape: Shape | None = _SHAPES.get(query)
    if shape is None:
        shape = _SHAPES.put(query, _shape(document))
    return shape


def shape_error(shape: Shape, max_selections: int) -> GraphQLError | None:
    """The error refusing a document before validation, or None."""
    if shape.bad_text:
        return GraphQLError(f"string literal: {BAD_TEXT_MESSAGE}", extensions=dict(BAD_INPUT))
    if shape.selections > max_selections or shape.pairs > max_selections:
        return GraphQLError(
            f"the document has {shape.selections} field selections (fragments counted per"
            f" spread) and {shape.pairs} pairs of same-named sibling selections; at most"
            f" {max_selections} of each: select each field once",
            extensions={
                **LIMIT,
                "limit": "max_selections",
                "selections": shape.selections,
                "pairs": shape.pairs,
                "max": max_selections,
            },
        )
    return None


def variables_error(variables: Any) -> GraphQLError | None:
    """The error refusing the request's variables (too deep, unstorable text), or None."""
    stack: list[tuple[Any, int]] = [(variables, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if _BAD_TEXT.search(value):
                return GraphQLError(f"variables: {BAD_TEXT_MESSAGE}", extensions=dict(BAD_INPUT))
            continue
        if isinstance(value, dict | list):
            if depth >= MAX_INPUT_DEPTH:
                return GraphQLError(
                    f"variables: nested deeper than {MAX_INPUT_DEPTH} levels",
                    extensions={**BAD_INPUT, "max_depth": MAX_INPUT_DEPTH},
                )
            if isinstance(value, dict):
                stack.extend((k, depth) for k in value)
                stack.extend((v, depth + 1) for v in value.values())
            else:
                stack.extend((v, depth + 1) for v in value)
    return None


# -- the cost estimate ----------------------------------------------------------------------


def _unwrapped(tp: Any) -> Any:
    while isinstance(tp, GraphQLNonNull):
        tp = tp.of_type
    return tp


def _is_connection(tp: Any) -> bool:
    return isinstance(tp, GraphQLObjectType) and tp.name.endswith("Connection")


class _Estimate:
    """The estimated rows of an operation: see `operation_cost`."""

    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        variables: dict[str, Any],
        defaults: dict[str, Any],
        max_page: int,
    ) -> None:
        self.schema = schema
        self.variables = variables
        self.defaults = defaults
        self.max_page = max_page
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        # A fragment's cost is linear in the rows above it: computed once per (fragment, page)
        # for one row, then multiplied (spreads of spreads cost no more than they hold).
        self.unit: dict[tuple[str, int | None], int] = {}
        self.visiting: set[str] = set()

    def _first(self, node: FieldNode, arg: Any) -> int:
        value: Any = None
        for given in node.arguments or ():
            if given.name.value == "first":
                if isinstance(given.value, IntValueNode):
                    value = int(given.value.value)
                elif isinstance(given.value, VariableNode):
                    name = given.value.name.value
                    value = self.variables.get(name, self.defaults.get(name))
                break
        else:
            value = arg.default_value
        if value is None:  # a `first` variable left null: refused by coercion later
            return LIST_SIZE
        # A value that is not an Int is refused by coercion later; until then it counts as the
        # largest page, so a cheap estimate can never let it through.
        if type(value) is not int:
            return self.max_page
        return max(1, value)

    def selection(
        self, selection_set: SelectionSetNode, parent: Any, rows: int, page: int | None
    ) -> int:
        fields = getattr(parent, "fields", None) or {}
        total = 0
        for node in selection_set.selections:
            if isinstance(node, FieldNode):
                total += rows
                if node.selection_set is None:
                    continue
                definition = fields.get(node.name.value)
                tp = _unwrapped(definition.type) if definition is not None else None
                named = get_named_type(tp) if tp is not None else None
                inner, child_page = rows, None
                first = definition.args.get("first") if definition is not None else None
                is_list = isinstance(tp, GraphQLList) or _is_connection(named)
                if first is not None:
                    n = self._first(node, first)
                    if is_list:
                        inner = rows * n
                    else:  # an object holding the page (holdings, expiryExposure)
                        child_page = n
                elif is_list and not _is_connection(parent):  # a connection's edges are its page
                    inner = rows * (page if page is not None else LIST_SIZE)
                total += self.selection(node.selection_set, named, inner, child_page)
            elif isinstance(node, InlineFragmentNode):
                tp = parent
                if node.type_condition is not None:
                    tp = self.schema.get_type(node.type_condition.name.value) or parent
                total += self.selection(node.selection_set, tp, rows, page)
            elif isinstance(node, FragmentSpreadNode):
                total += rows * self._fragment(node.name.value, page)
        return total

    def _fragment(self, name: str, page: int | None) -> int:
        fragment = self.fragments.get(name)
        if fragment is None or name in self.visiting:
            return 0
        key = (name, page)
        if key not in self.unit:
            self.visiting.add(name)
            tp = self.schema.get_type(fragment.type_condition.name.value)
            self.unit[key] = self.selection(fragment.selection_set, tp, 1, page)
            self.visiting.discard(name)
        return self.unit[key]


def _operations(
    document: DocumentNode, operation_name: str | None
) -> list[OperationDefinitionNode]:
    return [
        d
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode)
        and (operation_name is None or d.name is None or d.name.value == operation_name)
    ]


def _cost_variables(document: DocumentNode) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Names of the variables that feed a `first` argument, and the variables' defaults."""
    names: set[str] = set()
    defaults: dict[str, Any] = {}
    for node in _arguments(document):
        if node.name.value == "first" and isinstance(node.value, VariableNode):
            names.add(node.value.name.value)
    for d in document.definitions:
        if isinstance(d, OperationDefinitionNode):
            for v in d.variable_definitions or ():
                if isinstance(v.default_value, IntValueNode):
                    defaults[v.variable.name.value] = int(v.default_value.value)
    return tuple(sorted(names)), defaults


def _arguments(document: DocumentNode) -> list[ArgumentNode]:
    found: list[ArgumentNode] = []

    class Collect(Visitor):
        def enter_argument(self, node: ArgumentNode, *_: Any) -> None:
            found.append(node)

    visit(document, Collect())
    return found


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
_SHAPES = Lru(1024)


def operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    query: str,
    operation_name: str | None,
    variables: dict[str, Any],
    max_page: int,
) -> int:
    """The estimated cost of the operation with these variables: every field costs 1 per row
    it is selected on; a list or connection multiplies the rows below it by its `first`
    (given, or the argument's default), a plain list without `first` by `LIST_SIZE`;
    a connection's `edges`/`nodes` are its page, not another multiple.

    Only the variables that feed `first` change the estimate, so the cost is cached per
    (document, those values); a simple request finds its cost with one dictionary lookup.
    """
    key = (query, operation_name)
    plan = _COST_PLANS.get(key)
    if plan is None:
        names, defaults = _cost_variables(document)
        plan = _COST_PLANS.put(key, (names, defaults, Lru(64)))
    names_used, defaults, costs = plan
    values = tuple(_hashable(variables.get(n)) for n in names_used)
    cost: int | None = costs.get(values)
    if cost is None:
        estimate = _Estimate(schema, document, variables, defaults, max_page)
        root_types = {
            "query": schema.query_type,
            "mutation": schema.mutation_type,
            "subscription": schema.subscription_type,
        }
        cost = costs.put(
            values,
            sum(
                estimate.selection(d.selection_set, root_types[d.operation.value], 1, None)
                for d in _operations(document, operation_name)
            ),
        )
    return cost


def cost_error(cost: int, max_cost: int) -> GraphQLError:
    metrics.REJECTED.labels("cost").inc()
    return GraphQLError(
        f"query cost {cost} exceeds the maximum of {max_cost}:"
        " lower `first` (nested lists count at their `first`, or 1000 without one)"
        " or select fewer nested lists",
        extensions={**LIMIT, "cost": cost, "max": max_cost},
    )


def response_too_large(size: int, max_bytes: int) -> GraphQLError:
    metrics.REJECTED.labels("response_size").inc()
    return GraphQLError(
        f"the answer is {size} bytes, over the maximum of {max_bytes}: select fewer fields"
        " or rows (lower `first`)",
        extensions={**LIMIT, "limit": "max_response_bytes", "max": max_bytes},
    )


def request_timed_out(timeout_ms: int) -> GraphQLError:
    metrics.REJECTED.labels("request_timeout").inc()
    return GraphQLError(
        f"the request ran longer than {timeout_ms} ms and was cancelled: select less",
        extensions={**LIMIT, "limit": "request_timeout", "max": timeout_ms},
    )


def _hashable(value: Any) -> Any:
    # A `first` variable is an Int; anything else (refused later by coercion) still needs a key.
    return value if isinstance(value, int | str | float | bool | None) else repr(value)


class GuardedValidation(SchemaExtension):
    """Validation, cached per document (Strawberry's ValidationCache), after a linear check of
    the document's shape: a document whose validation would cost more than `max_selections`
    allows is refused before any rule runs, and validation errors carry a code."""

    def __init__(self, max_selections: int, maxsize: int = 1024) -> None:
        self.max_selections = max_selections
        self.validate = _cached_validate(maxsize)

    def on_validate(self) -> Iterator[None]:
        ec = self.execution_context
        document = ec.graphql_document
        if document is not None and ec.query is not None:
            error = shape_error(document_shape(document, ec.query), self.max_selections)
            if error is not None:
                metrics.REJECTED.labels("selections").inc()
                ec.pre_execution_errors = [error]
            else:
                errors = self.validate(ec.schema._schema, document, tuple(ec.validation_rules))
                for e in errors:
                    tag(e, "GRAPHQL_VALIDATION_FAILED")
                ec.pre_execution_errors = errors
        yield


@lru_cache(maxsize=4)
def _cached_validate(maxsize: int) -> Any:
    # One cache per size for every operation (extensions are made per operation).
    return lru_cache(maxsize=maxsize)(validate_document)


class RequestGuard(SchemaExtension):
    """Refuses, before execution, what the document alone cannot tell: a subscription over
    HTTP, variables nested too deep or holding unstorable text, a cost over `max_cost` with
    these variables. Raised (not set as the result) so that subscriptions are refused too."""

    def __init__(self, max_cost: int, max_page: int) -> None:
        self.max_cost = max_cost
        self.max_page = max_page

    def on_execute(self) -> Iterator[None]:
        ec = self.execution_context
        document = ec.graphql_document
        if document is not None and ec.query is not None:
            # Over HTTP a subscription would be executed like a query (its resolver is a
            # stream): an internal error. Shared streams run with no request at all.
            if ec.operation_type == StrawberryOperationType.SUBSCRIPTION and isinstance(
                getattr(ec.context, "request", None), Request
            ):
                raise GraphQLError(
                    "subscriptions are served over a websocket (graphql-transport-ws or"
                    " graphql-ws) on this path, not over HTTP",
                    extensions={"code": "BAD_REQUEST"},
                )
            error = variables_error(ec.variables)
            if error is not None:
                raise error
            cost = operation_cost(
                ec.schema._schema,
                document,
                ec.query,
                ec.operation_name,
                ec.variables or {},
                self.max_page,
            )
            if cost > self.max_cost:
                raise cost_error(cost, self.max_cost)
        yield


# graphql-core's words when parsing stops at `max_tokens`: a limit, not a malformed document.
_TOO_MANY_TOKENS = re.compile(r"Document contains more than (\d+) tokens")


def _token_limit(error: GraphQLError) -> int | None:
    if not isinstance(error, GraphQLSyntaxError):
        return None
    found = _TOO_MANY_TOKENS.search(error.message[:200])
    return int(found.group(1)) if found else None


def error_code(error: GraphQLError) -> str:
    """The code of an error that carries none yet: what kind of client mistake (or not)."""
    if _token_limit(error) is not None:
        return "LIMIT_EXCEEDED"
    if isinstance(error, GraphQLSyntaxError):
        return "GRAPHQL_PARSE_FAILED"
    if error.message == MASKED_MESSAGE or is_internal(error):
        return "INTERNAL_SERVER_ERROR"
    if error.message.startswith("Variable '$"):
        return "BAD_USER_INPUT"  # variable coercion: a value of the wrong type
    if error.path is None:
        return "GRAPHQL_VALIDATION_FAILED"
    return "BAD_USER_INPUT"


def tag(error: GraphQLError, code: str | None = None) -> GraphQLError:
    """Give `error` an `extensions.code` if it has none."""
    extensions = error.extensions or {}
    if "code" not in extensions:
        error.extensions = {**extensions, "code": code or error_code(error)}
        tokens = _token_limit(error)
        if tokens is not None and error.extensions["code"] == "LIMIT_EXCEEDED":
            error.extensions.update(limit="max_tokens", max=tokens)
    return error


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
            extensions={"code": "INTERNAL_SERVER_ERROR"},
        )
        if is_internal(e)
        else e
        for e in errors
    ]


@lru_cache(maxsize=16)
def validation_rules(
    max_depth: int, max_aliases: int, introspection: bool = True
) -> tuple[type[ASTValidationRule], ...]:
    """The depth and alias rules, built once per limit.

    Validation results are cached keyed by the rule classes too, and QueryDepthLimiter /
    MaxAliasesLimiter make new classes per instance: per-operation instances of those made
    every request miss the validation cache and validate afresh.
    """
    rules: tuple[type[ASTValidationRule], ...] = (
        depth_rule(max_depth, None),
        alias_rule(max_aliases),
    )
    if not introspection:
        rules += (NoSchemaIntrospectionCustomRule,)
    return rules


def build_extensions(settings: Settings) -> list[Any]:
    """Extension factories: every operation gets fresh instances. An instance shared by
    concurrent operations would see another operation's execution context after its first await
    (a shared MaskErrors could mask the wrong result). The parse and validation LRU caches live
    at module level in Strawberry, so per-operation instances still share them."""
    api = settings.api
    rules = list(validation_rules(api.max_depth, api.max_aliases, api.introspection))
    extensions: list[Any] = [
        CloseReader,
        lambda: MaxTokensLimiter(max_token_count=api.max_tokens),
        # Parsing and validating dominate small requests; both depend on the document only.
        lambda: ParserCache(maxsize=1024),
        lambda: AddValidationRules(rules),
        lambda: GuardedValidation(api.max_selections),
        lambda: RequestGuard(api.max_cost, api.max_page_size),
        FieldMetrics,
    ]
    if api.mask_errors:
        extensions.append(
            lambda: CodedMaskErrors(should_mask_error=is_internal, error_message=MASKED_MESSAGE)
        )
    return extensions


class CodedMaskErrors(MaskErrors):
    """MaskErrors whose generic error still says what it is (`INTERNAL_SERVER_ERROR`)."""

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        return tag(super().anonymise_error(error), "INTERNAL_SERVER_ERROR")


# -- ASGI middleware --------------------------------------------------------------------------


async def refuse(send: Send, status: int, message: str, **extra: Any) -> None:
    """An HTTP refusal with a GraphQL-shaped JSON body (`extensions` holds its code)."""
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
            await refuse(
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
                await refuse(
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


WS_SUBPROTOCOLS = ("graphql-transport-ws", "graphql-ws")


class RateLimit:
    """Token bucket per client address for `/graphql` requests and websocket connections;
    the buckets (`infra.ratelimit`) are shared by every replica when `redis_url` is set."""

    def __init__(self, app: ASGIApp, buckets: Buckets, paths: tuple[str, ...]) -> None:
        self.app = app
        self.buckets = buckets
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        client = client_key((scope.get("client") or ("unknown", 0))[0])
        wait = await self.buckets.take(client)
        if wait == 0:
            await self.app(scope, receive, send)
            return
        metrics.REJECTED.labels("rate_limit").inc()
        if scope["type"] == "websocket":
            # Closing before the handshake is an HTTP 403 without a word; accept (with the
            # client's subprotocol, or its library drops the socket as a protocol error)
            # and close with 4429 so that the client can tell why.
            await receive()  # websocket.connect
            offered = scope.get("subprotocols") or []
            chosen = next((p for p in offered if p in WS_SUBPROTOCOLS), None)
            await send({"type": "websocket.accept", "subprotocol": chosen})
            await send({"type": "websocket.close", "code": 4429, "reason": "rate limited"})
            return
        await refuse(
            send,
            429,
            "rate limit exceeded",
            code="RATE_LIMITED",
            retryAfter=max(1, int(wait + 0.999)),
        )
