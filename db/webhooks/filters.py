"""Webhook filters: the subscriptions' `where` dialect, compiled to SQL/JSON paths.

A filter is `{"kind": K, "where": {...}}` (plus, for listings, `"changes": [...]` to select
update kinds such as `created` or `sold`). `where` is the graph-node dialect the API's lists
and `listingUpdates(where)` take, over the fields of the kind's main object (camelCase):
`field`, `field_not`, `field_gt/_gte/_lt/_lte`, `field_in/_not_in`, for text also
`_contains/_not_contains/_contains_nocase/_starts_with`, nested objects `relation_: {...}`,
`and: [...]`, `or: [...]`. A null value means "no condition", as in GraphQL.

| kind | fields of | nested |
| --- | --- | --- |
| `block` | `Block` | |
| `listing` | `Listing` | `certificate_` (and its `facility_`) |
| `certificate` | `Certificate` | `facility_`, `transfers_` (any custody change in that block) |
| `retirement` | `Retirement` | `facility_` |

Comparisons follow SQL: a null field matches no comparison, negated ones included; text is
ordered by code point (`_gt`... on text), as SQL/JSON paths do. The
compiled path is evaluated by PostgreSQL (`jsonb_path_exists`) against each event document in
the indexer's transaction, for every endpoint at once. Values are bound as path variables
(`$v0`...), never spliced into the path, except the patterns of `_contains`, which jsonpath
takes only as literals: they are quoted as JSON strings and matched literally (flag `q`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from db.webhooks.docs import LISTING_CHANGES, ROOTS, SIBLING_LISTS, Field, Shape

MAX_DEPTH = 4
MAX_LIST = 1000
MAX_PATH = 32_000
_COMPARE = {"": "==", "_gt": ">", "_gte": ">=", "_lt": "<", "_lte": "<="}
# Longest first, so `price_not_in` is not read as `price_not` + `_in`.
_SUFFIXES: tuple[str, ...] = (
    *("_not_contains", "_contains_nocase", "_contains", "_starts_with", "_not_in", "_in"),
    *("_not", "_gte", "_gt", "_lte", "_lt"),
)
_ORDERED = ("int", "big", "decimal", "text", "time", "date")


class FilterError(ValueError):
    """A filter that cannot be compiled; `str()` names the offending key."""


@dataclass(frozen=True, slots=True)
class Compiled:
    kind: str
    condition: dict[str, Any]  # the filter as given, nulls dropped: shown back to its owner
    path: str | None  # None: every event of the kind
    vars: dict[str, Any]


@dataclass
class _Compiler:
    vars: dict[str, Any] = field(default_factory=dict)

    def bind(self, value: Any) -> str:
        name = f"v{len(self.vars)}"
        self.vars[name] = value
        return f"${name}"

    def predicate(
        self, where: Any, shape: Shape, at: str, depth: int, lists: Mapping[str, Shape]
    ) -> str | None:
        """The condition on the object `@` (`where` keys AND-ed), None when it has none."""
        if not isinstance(where, Mapping):
            raise FilterError(f"{at}: expected an object")
        if depth > MAX_DEPTH:
            raise FilterError(f"{at}: nesting deeper than {MAX_DEPTH} levels")
        fields = shape.by_name()
        parts: list[str] = []
        for key, value in where.items():
            if value is None:
                continue
            here = f"{at}.{key}"
            if key in ("and", "or"):
                if not isinstance(value, list) or len(value) > 100:
                    raise FilterError(f"{here}: expected a list of at most 100 filters")
                subs = [
                    self.predicate(w, shape, f"{here}[{i}]", depth + 1, lists)
                    for i, w in enumerate(value)
                ]
                if key == "and":
                    parts += [p for p in subs if p is not None]
                elif subs:
                    # An empty `or` member matches everything, so the `or` does too.
                    if all(p is not None for p in subs):
                        parts.append("(" + " || ".join(f"({p})" for p in subs) + ")")
                else:
                    parts.append("(1 == 0)")
                continue
            if key.endswith("_") and key[:-1] in shape.nested:
                inner = self.predicate(value, shape.nested[key[:-1]], here, depth + 1, {})
                cond = f" ? ({inner})" if inner else ""
                parts.append(f"exists(@.{key[:-1]}{cond})")
                continue
            if key.endswith("_") and key[:-1] in lists:
                inner = self.predicate(value, lists[key[:-1]], here, depth + 1, {})
                cond = f" ? ({inner})" if inner else ""
                # Arrays beside the main object are reached from the document's root.
                parts.append(f"exists($.{key[:-1]}[*]{cond})")
                continue
            name, op = _split(key, fields)
            if name is None:
                raise FilterError(f"{here}: unknown field or operator")
            parts.append(self.condition(fields[name], op, value, here))
        if not parts:
            return None
        return " && ".join(parts) if len(parts) == 1 else "(" + " && ".join(parts) + ")"

    def condition(self, spec: Field, op: str, value: Any, at: str) -> str:
        ref = f"@.{spec.name}"
        if op in _COMPARE:
            if op != "" and spec.type not in _ORDERED:
                raise FilterError(f"{at}: {spec.type} fields cannot be ordered")
            return f"{ref} {_COMPARE[op]} {self.bind(_value(spec, value, at))}"
        if op == "_not":
            return f"({ref} != null && {ref} != {self.bind(_value(spec, value, at))})"
        if op in ("_in", "_not_in"):
            if not isinstance(value, list):
                raise FilterError(f"{at}: expected a list")
            if len(value) > MAX_LIST:
                raise FilterError(f"{at}: at most {MAX_LIST} values")
            values = [self.bind(_value(spec, v, f"{at}[{i}]")) for i, v in enumerate(value)]
            if op == "_in":
                if not values:
                    return "(1 == 0)"
                return "(" + " || ".join(f"{ref} == {v}" for v in values) + ")"
            if not values:  # as in SQL, `<> ALL` of nothing holds even for null
                return "(1 == 1)"
            return "(" + " && ".join([f"{ref} != null", *(f"{ref} != {v}" for v in values)]) + ")"
        if spec.type != "text":
            raise FilterError(f"{at}: {op} applies to text fields only")
        if not isinstance(value, str):
            raise FilterError(f"{at}: expected a string")
        if op == "_starts_with":
            return f"{ref} starts with {self.bind(value)}"
        flag = '"iq"' if op == "_contains_nocase" else '"q"'
        match = f"{ref} like_regex {json.dumps(value)} flag {flag}"
        return f"({ref} != null && !({match}))" if op == "_not_contains" else match


def _split(key: str, fields: Mapping[str, Field]) -> tuple[str | None, str]:
    if key in fields:
        return key, ""
    for suffix in _SUFFIXES:
        if key.endswith(suffix) and key[: -len(suffix)] in fields:
            return key[: -len(suffix)], suffix
    return None, ""


def _value(spec: Field, value: Any, at: str) -> Any:
    """The filter value as the document holds it (JSON), or a FilterError."""
    kind = spec.type
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise FilterError(f"{at}: expected an integer")
    if kind == "big":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
        raise FilterError(f"{at}: expected an integer or a decimal string")
    if kind == "decimal":
        try:
            if isinstance(value, bool):
                raise InvalidOperation
            return float(Decimal(str(value)))
        except (InvalidOperation, ValueError):
            raise FilterError(f"{at}: expected a decimal number or string") from None
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise FilterError(f"{at}: expected true or false")
    if not isinstance(value, str):
        raise FilterError(f"{at}: expected a string")
    if kind == "time":
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise FilterError(f"{at}: expected an ISO 8601 date-time") from None
        if when.tzinfo is None:
            raise FilterError(f"{at}: the date-time needs a time zone (e.g. Z)")
        return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == "date":
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            raise FilterError(f"{at}: expected a date (YYYY-MM-DD)") from None
    if kind == "json":
        raise FilterError(f"{at}: JSON fields cannot be filtered")
    return value


def _clean(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def compile_filter(spec: Any, at: str = "filter") -> Compiled:
    """Validate and compile one filter; raises FilterError with the offending key."""
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, Mapping):
        raise FilterError(f"{at}: expected an object with a kind")
    unknown = set(spec) - {"kind", "where", "changes"}
    if unknown:
        raise FilterError(f"{at}: unknown key(s) {', '.join(sorted(unknown))}")
    kind = spec.get("kind")
    if kind not in ROOTS:
        raise FilterError(f"{at}.kind: one of {', '.join(ROOTS)}")
    where = spec.get("where") or {}
    root, shape = ROOTS[kind]
    compiler = _Compiler()
    pred = compiler.predicate(where, shape, f"{at}.where", 0, SIBLING_LISTS.get(kind, {}))
    prefix = "$"
    changes = spec.get("changes")
    condition: dict[str, Any] = {"kind": kind, "where": _clean(where)}
    if changes is not None:
        if kind != "listing":
            raise FilterError(f"{at}.changes: only listing filters select changes")
        if not isinstance(changes, list) or not changes:
            raise FilterError(f"{at}.changes: expected a non-empty list")
        bad = [c for c in changes if c not in LISTING_CHANGES]
        if bad:
            known = ", ".join(LISTING_CHANGES)
            raise FilterError(f"{at}.changes: unknown {bad[0]!r}; one of {known}")
        kinds = " || ".join(f"@.kind == {compiler.bind(c)}" for c in changes)
        prefix = f"$ ? ({kinds})"
        condition["changes"] = list(changes)
    if pred is None and changes is None:
        return Compiled(kind, condition, None, {})
    path = f"{prefix}.{root}" + (f" ? ({pred})" if pred else "")
    if len(path) > MAX_PATH:
        raise FilterError(f"{at}: the filter is too large")
    return Compiled(kind, condition, path, compiler.vars)


def compile_filters(specs: Any) -> list[Compiled]:
    if not isinstance(specs, list) or not specs:
        raise FilterError("filters: expected a non-empty list")
    if len(specs) > 20:
        raise FilterError("filters: at most 20 per endpoint")
    return [compile_filter(s, f"filters[{i}]") for i, s in enumerate(specs)]
