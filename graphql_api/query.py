"""Generic list queries: the graph-node `where` dialect, multi-field `orderBy`, keyset cursors and
block-range time travel, compiled to one parameterised SQL statement per page.

Filter inputs and order enums are generated from the Strawberry output types, so a column that
can be read can be filtered and (when declared orderable) sorted, and the two never drift.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import hashlib
import json
import sys
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

import strawberry
from strawberry.types.arguments import InputContext
from strawberry.types.base import StrawberryOptional, get_object_definition
from strawberry.types.nodes import SelectedField
from strawberry.types.private import is_private
from strawberry.utils.str_converters import to_camel_case

from graphql_api.context import Context
from graphql_api.errors import BadUserInput, BlockNotFound, LimitExceeded
from graphql_api.scalars import schema_config

T = TypeVar("T")

COMPARE = {"": "=", "_not": "<>", "_gt": ">", "_gte": ">=", "_lt": "<", "_lte": "<="}
LISTS = {"_in": "= ANY({p})", "_not_in": "<> ALL({p})"}
TEXT = {
    "_contains": "LIKE",
    "_not_contains": "NOT LIKE",
    "_contains_nocase": "ILIKE",
    "_starts_with": "LIKE",
}
_MODULE = sys.modules[__name__]


class _Null:
    """A `null` given explicitly in a filter (an omitted field stays `UNSET`): "is null" for
    `field`, "is not null" for `field_not`, refused with any other operator."""

    def __repr__(self) -> str:
        return "null"


NULL = _Null()


def given(where: Any) -> dict[str, Any]:
    """The fields a filter was given (attribute name -> value, `NULL` for an explicit null)."""
    return {k: v for k, v in vars(where).items() if v is not None and v is not strawberry.UNSET}


def live(alias: str, versioned: bool, at: int | None, params: dict[str, Any]) -> str:
    """The rows of `alias` valid at height `at` (None = the current state)."""
    if versioned:
        if at is None:
            return f"{alias}.block_to IS NULL"
        params["_at"] = at
        return (
            f"{alias}.block_from <= :_at AND ({alias}.block_to IS NULL OR {alias}.block_to > :_at)"
        )
    if at is None:
        return "TRUE"
    params["_at"] = at
    return f"{alias}.block_height <= :_at"


@dataclass
class Entity:
    """How an output type maps to a table."""

    type_: type
    table: str
    key: str
    versioned: bool
    orderable: tuple[str, ...]
    # Nested filters `name_: OtherFilter`: name -> (entity name, local column, remote column).
    nested: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    columns: dict[str, Any] = field(default_factory=dict)
    nullable: set[str] = field(default_factory=set)  # columns that may hold NULL
    ops: dict[str, tuple[str, str]] = field(default_factory=dict)
    filter_input: Any = None
    order_input: Any = None
    # Whether the type's __init__ only assigns its arguments (see `from_row`).
    plain: bool = False
    # GraphQL field name -> column, for the fields that read a column and nothing else.
    leaf_fields: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.type_.__name__

    @property
    def key_attr(self) -> str:
        """Fact rows keep their surrogate `id` private: `id` is the global Node id."""
        return "id_" if self.key == "id" else self.key

    def from_row(self, row: Any, at: int | None, columns: Sequence[str] | None = None) -> Any:
        """The object of a row; `columns` (from `projection`) when the row holds only those."""
        values = {c: row[c] for c in (self.columns if columns is None else columns)}
        if self.key == "id":
            values["id_"] = row["id"]
        values["_at"] = at
        if self.plain:
            # The dataclass __init__ with two dozen keyword arguments cost more than reading
            # the row; it would only assign them, so the instance takes the dict as it is.
            obj: Any = object.__new__(self.type_)
            obj.__dict__ = values
            return obj
        return self.type_(**values)

    def projection(self, selections: Sequence[Sequence[Any]]) -> list[str] | None:
        """The columns that these selections of the entity's objects read (Strawberry's
        `selected_fields` below the objects), the key always among them; None when a field
        with a resolver, or one of another type, is selected: it may read any column.

        A page of 50 certificates read every column (two dozen) where a selection asks for
        three: fetching and converting the rest cost 0.2 of a request's 1.5 CPU-ms."""
        if not self.plain:
            return None
        out = {self.key: None}
        pending = [list(s) for s in selections]
        while pending:
            for node in pending.pop():
                if isinstance(node, SelectedField):
                    if node.name == "__typename":
                        continue
                    column = self.leaf_fields.get(node.name)
                    if column is None:
                        return None
                    out[column] = None
                elif getattr(node, "type_condition", None) in (None, self.name):
                    pending.append(list(node.selections))
                else:
                    return None  # a fragment on an interface: its fields may have resolvers
        return list(out)


ENTITIES: dict[str, Entity] = {}
_NAMES = schema_config().name_converter


def selections_at(selections: Sequence[Any], *path: str) -> list[list[Any]]:
    """The selection sets found at `path` (field names, through fragments) below
    `selections` (Strawberry's `info.selected_fields`)."""
    found: list[list[Any]] = []
    pending: list[tuple[Sequence[Any], int]] = [(selections, 0)]
    while pending:
        nodes, depth = pending.pop()
        for node in nodes:
            if not isinstance(node, SelectedField):
                pending.append((node.selections, depth))
            elif node.name == path[depth]:
                if depth + 1 == len(path):
                    found.append(list(node.selections))
                else:
                    pending.append((node.selections, depth + 1))
    return found


def _assigns_only(entity: Entity) -> bool:
    """Whether `entity.type_(**values)` does nothing but assign `values` (`from_row`'s
    arguments): a dataclass without slots or __post_init__ whose __init__ takes exactly those
    and computes nothing for the fields it does not take."""
    cls = entity.type_
    if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
        return False
    if "__slots__" in cls.__dict__:
        return False
    expected = {*entity.columns, "_at", *(("id_",) if entity.key == "id" else ())}
    taken = set()
    for f in dataclasses.fields(cls):
        if f.init:
            taken.add(f.name)
        elif f.default_factory is not dataclasses.MISSING:
            return False
    return taken == expected


@strawberry.enum(description="Sort direction.")
class OrderDirection(enum.Enum):
    asc = "asc"
    desc = "desc"


def _scalar(tp: Any) -> Any:
    return tp.of_type if isinstance(tp, StrawberryOptional) else tp


def register(entity: Entity) -> Entity:
    definition = get_object_definition(entity.type_, strict=True)
    for f in definition.fields:
        if f.base_resolver is None and not is_private(f.type) and f.python_name[0] != "_":
            entity.columns[f.python_name] = _scalar(f.type)
            entity.leaf_fields[_NAMES.get_graphql_name(f)] = f.python_name
            if isinstance(f.type, StrawberryOptional):
                entity.nullable.add(f.python_name)
    entity.plain = _assigns_only(entity)
    ENTITIES[entity.name] = entity
    return entity


def build_inputs() -> None:
    """Generate `<Type>Filter`, `<Type>OrderField` and `<Type>OrderBy` for every entity."""
    for entity in ENTITIES.values():
        name = f"{entity.name}Filter"
        annotations: dict[str, Any] = {}
        defaults: dict[str, Any] = {}
        for col, tp in entity.columns.items():
            is_text = tp is str
            ordered = tp is not bool
            for suffix in COMPARE:
                if suffix in ("", "_not") or ordered:
                    annotations[col + suffix] = tp | None
                    entity.ops[col + suffix] = (col, suffix)
            for suffix in LISTS:
                annotations[col + suffix] = list[tp] | None  # type: ignore[valid-type]
                entity.ops[col + suffix] = (col, suffix)
            if is_text:
                for suffix in TEXT:
                    annotations[col + suffix] = str | None
                    entity.ops[col + suffix] = (col, suffix)
        for nested, (target, _, _) in entity.nested.items():
            annotations[nested + "_"] = f"{target}Filter | None"
        annotations["and_"] = f"list[{name}] | None"
        annotations["or_"] = f"list[{name}] | None"
        # GraphQL name -> (attribute, how to convert a non-null value, nested entity).
        spec: dict[str, tuple[str, str, str | None]] = {}
        for key in annotations:
            col, suffix = entity.ops.get(key, (key[:-1], "_"))
            # No default in the schema: an omitted field is absent, a `null` one is explicit.
            defaults[key] = strawberry.field(
                default=strawberry.UNSET, name=to_camel_case(col) + suffix
            )
            if key in ("and_", "or_"):
                spec[key[:-1]] = (key, "filters", entity.name)
            elif key in entity.ops:
                spec[to_camel_case(col) + suffix] = (
                    key,
                    "list" if suffix in LISTS else "leaf",
                    None,
                )
            else:
                spec[to_camel_case(col) + suffix] = (key, "filter", entity.nested[col][0])
        defaults["and_"] = strawberry.field(
            default=strawberry.UNSET, name="and", description="All of."
        )
        defaults["or_"] = strawberry.field(
            default=strawberry.UNSET, name="or", description="Any of."
        )
        cls = type(name, (), {"__annotations__": annotations, "__module__": __name__, **defaults})
        setattr(_MODULE, name, cls)
        entity.filter_input = strawberry.input(
            cls,
            name=name,
            description=f"Filter on {entity.name}: `field`, `field_not`, `_gt/_gte/_lt/_lte`,"
            " `_in/_not_in`, text `_contains/_contains_nocase/_starts_with`, nested `x_`,"
            " `and`/`or`. `field: null` means the field is null, `field_not: null` that it is"
            " not; `null` with any other operator is refused.",
        )
        setattr(_MODULE, name, entity.filter_input)
        get_object_definition(entity.filter_input, strict=True).from_input = _filter_from_input(
            spec
        )
        members = {to_camel_case(c): c for c in entity.orderable}
        order_enum: Any = strawberry.enum(  # type: ignore[call-overload]
            enum.Enum(f"{entity.name}OrderField", members),
            description=f"Sortable fields of {entity.name}.",
        )
        order_cls = type(
            f"{entity.name}OrderBy",
            (),
            {
                "__annotations__": {"field": order_enum, "direction": OrderDirection},
                "__module__": __name__,
                "direction": OrderDirection.asc,
            },
        )
        entity.order_input = strawberry.input(
            order_cls, description=f"One sort key of {entity.name}."
        )


def _filter_from_input(
    spec: dict[str, tuple[str, str, str | None]],
) -> Callable[[type, Mapping[str, Any], InputContext], Any]:
    """Builds a `<Type>Filter` from its GraphQL input value.

    Strawberry's generic conversion resolves the type of every field of an input per value;
    a filter has well over a hundred fields (each defaults to null, so each is present), and
    that cost more than the rest of a list request. graphql-core has already coerced the leaf
    values; only lists are copied and nested filters converted. Only the fields given are in
    `value` (the schema has no defaults for them); an explicit `null` becomes `NULL`.
    """

    def from_input(cls: type, value: Mapping[str, Any], ctx: InputContext) -> Any:
        kwargs: dict[str, Any] = {}
        for name, item in value.items():
            attr, how, target = spec[name]
            if item is None:
                kwargs[attr] = NULL
                continue
            if how == "leaf":
                kwargs[attr] = item
            elif how == "list":
                kwargs[attr] = list(item)
            else:
                inner = ENTITIES[target or ""].filter_input
                kwargs[attr] = (
                    ctx.convert(item, inner, name)
                    if how == "filter"
                    else [ctx.convert(w, inner, name, i) for i, w in enumerate(item)]
                )
        return cls(**kwargs)

    return from_input


@dataclass
class SqlWhere:
    entity: Entity
    at: int | None
    params: dict[str, Any]
    counter: list[int] = field(default_factory=lambda: [0])

    def bind(self, value: Any) -> str:
        self.counter[0] += 1
        name = f"p{self.counter[0]}"
        self.params[name] = value
        return f":{name}"

    def compile(self, where: Any, alias: str, entity: Entity | None = None, depth: int = 0) -> str:
        entity = entity or self.entity
        if depth > 4:
            raise BadUserInput("where: nesting deeper than 4 levels")
        clauses: list[str] = []
        for name, value in given(where).items():
            if isinstance(value, _Null):
                clauses.append(self._null(entity, name, alias))
                continue
            if name == "and_":
                clauses.extend(self.compile(w, alias, entity, depth + 1) for w in value)
            elif name == "or_":
                parts = [self.compile(w, alias, entity, depth + 1) for w in value]
                clauses.append("(" + " OR ".join(parts or ["FALSE"]) + ")")
            elif name.endswith("_") and name[:-1] in entity.nested:
                target_name, local, remote = entity.nested[name[:-1]]
                target = ENTITIES[target_name]
                sub = f"n{depth}_{self.counter[0]}"
                self.counter[0] += 1
                inner = self.compile(value, sub, target, depth + 1)
                clauses.append(
                    f"EXISTS (SELECT 1 FROM {target.table} {sub} WHERE {sub}.{remote} = "
                    f"{alias}.{local} AND {live(sub, target.versioned, self.at, self.params)}"
                    f" AND {inner})"
                )
            else:
                col, op = entity.ops[name]
                ref = f"{alias}.{col}"
                if op in COMPARE:
                    clauses.append(f"{ref} {COMPARE[op]} {self.bind(value)}")
                elif op in LISTS:
                    if len(value) > 1000:
                        raise LimitExceeded(f"where.{name}: at most 1000 values")
                    clauses.append(f"{ref} {LISTS[op].format(p=self.bind(list(value)))}")
                else:
                    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                    pattern = escaped + "%" if op == "_starts_with" else f"%{escaped}%"
                    clauses.append(f"{ref} {TEXT[op]} {self.bind(pattern)}")
        return "(" + " AND ".join(clauses or ["TRUE"]) + ")"

    @staticmethod
    def _null(entity: Entity, name: str, alias: str) -> str:
        col, op = entity.ops.get(name, (name.rstrip("_"), None))
        if op == "":
            return f"{alias}.{col} IS NULL"
        if op == "_not":
            return f"{alias}.{col} IS NOT NULL"
        shown = to_camel_case(col) + (op if op is not None else "")
        if name in ("and_", "or_"):
            shown = name[:-1]
        elif op is None:
            shown += "_"
        raise BadUserInput(
            f"where.{shown}: null is only meaningful for `field` (is null) and `field_not`"
            " (is not null)"
        )


# -- cursors --------------------------------------------------------------------------------


def _to_json(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return {"t": value.isoformat()}
    if isinstance(value, Decimal):
        return {"d": str(value)}
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if "t" in value:
            text = value["t"]
            return datetime.fromisoformat(text) if "T" in text else date.fromisoformat(text)
        if "d" in value:
            return Decimal(value["d"])
    return value


def cursor_signature(text: str) -> str:
    """What a cursor carries of the list and ordering it belongs to (checked on decoding)."""
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Pin:
    """The canonical block a list's first page was read at. Every later page of that list
    reads the state of this block (time travel), so paging while blocks arrive, or while a
    fork replaces blocks above it, neither repeats nor skips a row. The hash makes a fork
    that orphans the block itself visible: its height then holds another state."""

    height: int
    hash: str


def encode_cursor(signature: str, values: Sequence[Any], pin: Pin | None = None) -> str:
    body: list[Any] = [signature, [_to_json(v) for v in values]]
    if pin is not None:
        body.append([pin.height, pin.hash])
    raw = json.dumps(body, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _cursor_body(cursor: str) -> tuple[Any, Any, Pin | None]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
        sig, values = body[0], body[1]
        pin = None
        if len(body) > 2:
            height, block_hash = body[2]
            # A height the block columns can hold (int4): anything else was not issued here.
            if type(height) is not int or not 0 <= height < 2**31 or type(block_hash) is not str:
                raise TypeError("pin")
            pin = Pin(height, block_hash)
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise BadUserInput("after: not a cursor issued by this API") from exc
    return sig, values, pin


def decode_cursor(signature: str, cursor: str, width: int) -> list[Any]:
    sig, values, _ = _cursor_body(cursor)
    if sig != signature or not isinstance(values, list) or len(values) != width:
        raise BadUserInput("after: the cursor belongs to another list or ordering")
    return [_from_json(v) for v in values]


def cursor_pin(cursor: str | None) -> Pin | None:
    """The block a cursor's list is read at (None: a cursor from before pins existed, or of
    a list read before the first block)."""
    return None if cursor is None else _cursor_body(cursor)[2]


def pinned_height(at: int | None, after: str | None) -> tuple[int | None, Pin | None]:
    """The height a page reads: the cursor's block when it has one, else `at`. A `block`
    argument naming another block than the cursor's is a contradiction, refused."""
    pin = cursor_pin(after)
    if pin is None:
        return at, None
    if at is not None and at != pin.height:
        raise BadUserInput(
            f"after: the cursor pages this list as of block {pin.height}; give that block or"
            " none with it"
        )
    return pin.height, pin


async def page_at(ctx: Context, block: Any, after: str | None) -> tuple[int | None, Pin | None]:
    """`pinned_height` for a root field's `block` argument."""
    return pinned_height(await ctx.at(block), after)


_TIP = "(SELECT b.{col} FROM blocks b WHERE b.canonical ORDER BY b.block_height DESC LIMIT 1)"


def pin_columns(at: int | None, pin: Pin | None, params: dict[str, Any]) -> str:
    """Select-list items `_pin_h`, `_pin_hash`: the block a first page reads, from the page's
    own statement (so from its snapshot). Empty when the cursor already names it."""
    if pin is not None:
        return ""
    if at is None:
        return (
            f", {_TIP.format(col='block_height')} AS _pin_h,"
            f" {_TIP.format(col='index_block_hash')} AS _pin_hash"
        )
    params["_pin_at"] = at
    return (
        ", CAST(:_pin_at AS bigint) AS _pin_h, (SELECT b.index_block_hash FROM blocks b"
        " WHERE b.canonical AND b.block_height = :_pin_at LIMIT 1) AS _pin_hash"
    )


def row_pin(row: Any, pin: Pin | None) -> Pin | None:
    if pin is not None or row.get("_pin_hash") is None:
        return pin
    return Pin(int(row["_pin_h"]), row["_pin_hash"])


def pin_guard(pin: Pin, params: dict[str, Any]) -> str:
    """True while the pinned block is canonical (its height then holds the pinned state)."""
    params["_pin_h"], params["_pin_hash"] = pin.height, pin.hash
    return (
        "EXISTS (SELECT 1 FROM blocks b WHERE b.index_block_hash = :_pin_hash"
        " AND b.block_height = :_pin_h AND b.canonical)"
    )


def pin_lost(pin: Pin) -> BlockNotFound:
    return BlockNotFound(
        f"after: the cursor pages this list as of block {pin.height} ({pin.hash}), which a fork"
        " has taken off the canonical chain; start again from the first page",
        reason="cursor_block_orphaned",
    )


def guarded(sql: str, pin: Pin | None, params: dict[str, Any], order_by: str) -> str:
    """`sql` (a SELECT) read only while the pinned block is canonical, in one statement that
    always returns a row, so that an empty page and a lost block differ without a second
    statement: `_pin_ok` beside the rows of `sql` in `order_by` (over its output columns, as
    `p.<name>`), or beside one row of NULLs when it gives none."""
    if pin is None:
        return sql
    return (
        f"SELECT p.*, g.ok AS _pin_ok FROM (SELECT {pin_guard(pin, params)} AS ok) g"
        f" LEFT JOIN LATERAL ({sql}) p ON g.ok ORDER BY {order_by}"
    )


def unguarded(rows: Sequence[Any], pin: Pin | None, key: str) -> Sequence[Any]:
    """The rows of a `guarded` statement (`key`: an output column never NULL in a real row);
    `pin_lost` if the block was no longer canonical."""
    if pin is None:
        return rows
    if not rows or not rows[0]["_pin_ok"]:
        raise pin_lost(pin)
    return [r for r in rows if r[key] is not None]


def keyset(
    columns: Sequence[tuple[str, bool]],
    values: Sequence[Any],
    bind: Any,
    nullable: Collection[str] = (),
) -> str:
    """Rows strictly after `values` in the order `columns` (name, descending). PostgreSQL sorts
    NULL after every value ascending and before every value descending; comparing with NULL
    is never true, so a NULL sort value (or, ascending, the NULLs that follow a value of a
    `nullable` column) needs IS [NOT] NULL or the pages stop at the first NULL."""

    def same(col: str, value: Any) -> str:
        return f"{col} IS NULL" if value is None else f"{col} = {bind(value)}"

    def beyond(col: str, desc: bool, value: Any) -> str:
        if value is None:
            return f"{col} IS NOT NULL" if desc else "FALSE"
        cmp = f"{col} {'<' if desc else '>'} {bind(value)}"
        return f"({cmp} OR {col} IS NULL)" if col in nullable and not desc else cmp

    ors = []
    for i, (col, desc) in enumerate(columns):
        eqs = [same(c, v) for (c, _), v in zip(columns[:i], values[:i], strict=True)]
        eqs.append(beyond(col, desc, values[i]))
        ors.append("(" + " AND ".join(eqs) + ")")
    return "(" + " OR ".join(ors) + ")"


# -- connections ----------------------------------------------------------------------------


@strawberry.type(description="Relay page information.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="More rows follow `endCursor`.")
    has_previous_page: bool = strawberry.field(description="This page started after a cursor.")
    start_cursor: str | None = strawberry.field(description="Cursor of the first edge.")
    end_cursor: str | None = strawberry.field(description="Pass as `after` for the next page.")


@strawberry.type(description="A node and the cursor that resumes after it.")
class Edge(Generic[T]):
    node: T = strawberry.field(description="The item.")
    # Encoded when asked: most selections of a page take `nodes`, and a cursor per row was a
    # tenth of a page's CPU.
    _key: strawberry.Private[tuple[str, list[Any], Pin | None]]

    @strawberry.field(
        description="Opaque keyset cursor; the pages after it read the block the first page read."
    )
    def cursor(self) -> str:
        return encode_cursor(*self._key)


@strawberry.type(description="A page of a keyset-paginated list.")
class Connection(Generic[T]):
    edges: list[Edge[T]] = strawberry.field(description="The page's items with cursors.")
    page_info: PageInfo = strawberry.field(description="Paging state.")
    _count: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="Number of matching items (costs a COUNT; ask only if needed).")
    async def total_count(self) -> int:
        return await self._count()

    @strawberry.field(description="The items without cursors.")
    def nodes(self) -> list[T]:
        return [e.node for e in self.edges]


# The page of a list (root or relation) when `first` is not given.
DEFAULT_FIRST = 100


def check_first(ctx: Context, first: int) -> int:
    cap = ctx.settings.api.max_page_size
    if first < 0:
        raise BadUserInput("first must be >= 0")
    if first > cap:
        raise LimitExceeded(f"first must be <= {cap}", limit="max_page_size", max=cap)
    return first


async def paginate(
    ctx: Context,
    *,
    from_sql: str,
    alias: str,
    params: dict[str, Any],
    conditions: list[str],
    order: Sequence[tuple[str, bool]],
    signature: str,
    first: int,
    after: str | None,
    build: Callable[[Any], Any],
    at: int | None,
    pin: Pin | None,
    select: str | None = None,
    prefix: str = "",
    nullable: Collection[str] = (),
    with_count: bool = False,
) -> Connection[Any]:
    """One keyset page: `order` must end with a unique column so the order is total.

    `at` is the height the page reads and `pin` the cursor's block (`page_at` gives both, and
    `conditions` must read at `at`): the first page's cursors name the block it read, and a
    later page reads only while that block is canonical.

    `with_count` (the caller knows `totalCount` is asked for) reads the count in the page's own
    statement: a request of one statement runs without a transaction (db.Reader), where a
    second one costs BEGIN, the statement and ROLLBACK. A page with no rows still counts apart
    (its count need not be 0 after a cursor)."""
    check_first(ctx, first)
    sig = cursor_signature(signature)
    counter = [0]

    def bind(value: Any) -> str:
        counter[0] += 1
        name = f"k{counter[0]}"
        params[name] = value
        return f":{name}"

    base_where = " AND ".join(conditions or ["TRUE"])
    page_where = base_where
    if after:
        values = decode_cursor(sig, after, len(order))
        page_where += " AND " + keyset(order, values, bind, nullable)
    guard = "TRUE" if pin is None else pin_guard(pin, params)
    order_sql = ", ".join(f"{c} {'DESC' if d else 'ASC'}" for c, d in order)
    cols = ", ".join(f"{c} AS _o{i}" for i, (c, _) in enumerate(order))
    cols += pin_columns(at, pin, params)
    base_params = {k: v for k, v in params.items() if not k.startswith("k") and k != "_pin_at"}
    if with_count:
        cols += f", (SELECT count(*) FROM {from_sql} WHERE {base_where}) AS _n"
    page_sql = (
        f"SELECT {select or alias + '.*'}, {cols} FROM {from_sql}"
        f" WHERE {page_where} ORDER BY {order_sql} LIMIT {first + 1}"
    )
    outer = ", ".join(f"p._o{i} {'DESC' if d else 'ASC'}" for i, (_, d) in enumerate(order))
    rows: Sequence[Any] = []
    if first > 0:
        sql = f"{prefix} {guarded(page_sql, pin, params, outer)}"
        rows = unguarded(await ctx.reader.all(sql, params), pin, f"_o{len(order) - 1}")
    pinned = row_pin(rows[0], pin) if rows else pin
    edges = [
        Edge(node=build(r), _key=(sig, [r[f"_o{i}"] for i in range(len(order))], pinned))
        for r in rows[:first]
    ]
    count_params = base_params

    async def count() -> int:
        if with_count and rows:  # read with the page, under its guard
            return int(rows[0]["_n"])
        # The guard beside the count: one statement, one snapshot, a row even when n = 0.
        row = await ctx.reader.one(
            f"{prefix} SELECT count(*) AS n, {guard} AS ok FROM {from_sql} WHERE {base_where}",
            count_params,
        )
        if pin is not None and (row is None or not row["ok"]):
            raise pin_lost(pin)
        return int(row["n"]) if row is not None else 0

    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(rows) > first,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor() if edges else None,
            end_cursor=edges[-1].cursor() if edges else None,
        ),
        _count=count,
    )


async def list_entity(
    ctx: Context,
    entity: Entity,
    *,
    where: Any,
    order_by: Sequence[Any] | None,
    first: int,
    after: str | None,
    at: int | None,
    extra: Sequence[str] = (),
    extra_params: dict[str, Any] | None = None,
) -> Connection[Any]:
    """The root list fields: `where`, `orderBy`, keyset page, time travel (`at`: the `block`
    argument's height; a cursor's block overrides it)."""
    at, pin = pinned_height(at, after)
    params: dict[str, Any] = dict(extra_params or {})
    conditions = [live("t", entity.versioned, at, params), *extra]
    if where is not None:
        conditions.append(SqlWhere(entity, at, params).compile(where, "t"))
    order: list[tuple[str, bool]] = []
    for key in order_by or []:
        col = key.field.value
        if any(c == f"t.{col}" for c, _ in order):
            raise BadUserInput(f"orderBy: {col} given twice")
        order.append((f"t.{col}", key.direction == OrderDirection.desc))
    if len(order) > 4:
        raise BadUserInput("orderBy: at most 4 keys")
    # The key breaks ties (ascending), which makes the order total and the cursor exact.
    order.append((f"t.{entity.key}", False))
    signature = entity.name + "|" + ",".join(f"{c}:{d}" for c, d in order)
    return await paginate(
        ctx,
        from_sql=f"{entity.table} t",
        alias="t",
        params=params,
        conditions=conditions,
        order=order,
        signature=signature,
        first=first,
        after=after,
        build=lambda r: entity.from_row(r, at),
        at=at,
        pin=pin,
        nullable={f"t.{c}" for c in entity.nullable},
    )
