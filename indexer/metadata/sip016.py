"""SIP-016 token metadata: safe JSON decoding and a per-field schema check.

The decoder refuses, with a typed error and bounded work, what makes JSON hostile: nesting
bombs, huge integers (whose conversion is quadratic), non-finite floats, duplicate keys (which
parsers resolve differently) and too many values.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from indexer.metadata.errors import DocumentError, FieldError, SchemaError, TooLargeError

MAX_DEPTH = 32
MAX_VALUES = 100_000
MAX_INT_DIGITS = 40  # a Clarity uint has 39 decimal digits
MAX_FLOAT_CHARS = 64
MAX_NAME_CHARS = 1024


class _Bomb(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Bomb("huge_number", f"integer with {len(text)} digits")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_FLOAT_CHARS:
        raise _Bomb("huge_number", f"number literal of {len(text)} characters")
    value = float(text)
    if not math.isfinite(value):
        raise _Bomb("huge_number", f"number {text[:20]} is out of range")
    return value


def _parse_constant(text: str) -> Any:
    raise _Bomb("invalid_json", f"{text} is not JSON")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Bomb("invalid_json", f"duplicate key {key[:40]!r}")
        out[key] = value
    return out


def _check_shape(doc: Any) -> None:
    """Depth and value count, walked iteratively so the check itself cannot recurse."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise DocumentError("document has too many values", reason="json_bomb")
        if isinstance(node, dict | list):
            if depth > MAX_DEPTH:
                raise DocumentError(f"nesting deeper than {MAX_DEPTH}", reason="json_bomb")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children)


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def _max_nesting(raw: bytes) -> int:
    """Nesting depth of the text, ignoring brackets inside strings; stops early on a bomb.
    Strings are cut out by a regex first, so only the brackets are walked in Python."""
    openers = raw.count(b"[") + raw.count(b"{")
    if openers <= MAX_DEPTH:
        return openers  # depth can never exceed the number of openers
    depth = best = 0
    for m in _BRACKET.finditer(_STRING.sub(b'""', raw)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > best:
                best = depth
                if best > MAX_DEPTH:
                    return best
        else:
            depth -= 1
    return best


def load_json(raw: bytes, *, max_bytes: int = 1_048_576) -> Any:
    if len(raw) > max_bytes:
        raise TooLargeError(f"document is {len(raw)} bytes, limit {max_bytes}")
    # Rejecting deep nesting before parsing keeps the C parser's recursion out of reach.
    if _max_nesting(raw) > MAX_DEPTH:
        raise DocumentError(f"nesting deeper than {MAX_DEPTH}", reason="json_bomb")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"not UTF-8 at byte {exc.start}") from None
    try:
        doc = json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
            object_pairs_hook=_pairs,
        )
    except _Bomb as exc:
        raise DocumentError(str(exc), reason=exc.reason) from None
    except RecursionError:
        raise DocumentError("nesting too deep", reason="json_bomb") from None
    except ValueError as exc:
        raise DocumentError(f"invalid JSON: {exc}") from None
    _check_shape(doc)
    return doc


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def validate(doc: Any) -> dict[str, Any]:
    """Check a decoded document against SIP-016; raise :class:`SchemaError` listing every
    wrong field, or return the document."""
    errors: list[FieldError] = []

    def err(path: str, msg: str) -> None:
        errors.append(FieldError(path, msg))

    if not isinstance(doc, dict):
        raise SchemaError([FieldError("$", "document must be a JSON object")])
    sip = doc.get("sip")
    if "sip" not in doc:
        err("sip", "required")
    elif isinstance(sip, bool) or sip != 16:
        err("sip", f"must be the number 16, got {json.dumps(sip)[:40]}")
    name = doc.get("name")
    if "name" not in doc:
        err("name", "required")
    elif not isinstance(name, str) or not name.strip():
        err("name", "must be a non-empty string")
    elif len(name) > MAX_NAME_CHARS:
        err("name", f"longer than {MAX_NAME_CHARS} characters")
    for key in ("description", "image"):
        if key in doc and not isinstance(doc[key], str):
            err(key, "must be a string")
    if "attributes" in doc:
        attrs = doc["attributes"]
        if not isinstance(attrs, list):
            err("attributes", "must be an array")
        else:
            for i, attr in enumerate(attrs):
                at = f"attributes[{i}]"
                if not isinstance(attr, dict):
                    err(at, "must be an object")
                    continue
                if not isinstance(attr.get("trait_type"), str):
                    err(f"{at}.trait_type", "required string")
                if "value" not in attr:
                    err(f"{at}.value", "required")
                elif not isinstance(attr["value"], str | int | float | bool):
                    err(f"{at}.value", "must be a string, number or boolean")
                if "display_type" in attr and not isinstance(attr["display_type"], str):
                    err(f"{at}.display_type", "must be a string")
    if "properties" in doc and not isinstance(doc["properties"], dict):
        err("properties", "must be an object")
    if "localization" in doc:
        loc = doc["localization"]
        if not isinstance(loc, dict):
            err("localization", "must be an object")
        else:
            for key in ("uri", "default"):
                if not isinstance(loc.get(key), str):
                    err(f"localization.{key}", "required string")
            locales = loc.get("locales")
            if not isinstance(locales, list) or not all(isinstance(x, str) for x in locales):
                err("localization.locales", "required array of strings")
    if errors:
        raise SchemaError(errors)
    return doc


def parse_document(raw: bytes, *, max_bytes: int = 1_048_576) -> dict[str, Any]:
    return validate(load_json(raw, max_bytes=max_bytes))


# ---- REC attributes ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecClaims:
    """What a document says about the certificate; ``None`` where it says nothing."""

    facility_id: int | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    wh: int | None = None
    energy_source: str | None = None
    country: str | None = None


_ALIASES = {
    "facility_id": ("facilityid", "facility", "deviceid", "device"),
    "period_start": ("periodstart", "generationstart", "start"),
    "period_end": ("periodend", "generationend", "end"),
    "wh": ("energywh", "wh", "energy", "volumewh"),
    "energy_source": ("energysource", "source", "fuel"),
    "country": ("country", "countrycode"),
}


def _norm(key: str) -> str:
    return "".join(ch for ch in key.lower() if ch.isalnum())


def _to_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit() and len(v) <= MAX_INT_DIGITS:
        return int(v.strip())
    return None


def _to_time(v: Any) -> datetime | None:
    n = _to_int(v)
    if n is not None:
        try:
            return datetime.fromtimestamp(n, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(v, str):
        try:
            t = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            return None
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    return None


def rec_claims(doc: dict[str, Any]) -> RecClaims:
    """Collect the REC attributes from ``properties`` and ``attributes`` (properties win)."""
    found: dict[str, Any] = {}
    attrs = doc.get("attributes")
    if isinstance(attrs, list):
        for a in attrs:
            if isinstance(a, dict) and isinstance(a.get("trait_type"), str):
                found.setdefault(_norm(a["trait_type"]), a.get("value"))
    props = doc.get("properties")
    if isinstance(props, dict):
        for k, v in props.items():
            found[_norm(k)] = v

    def pick(name: str) -> Any:
        for alias in _ALIASES[name]:
            if alias in found:
                return found[alias]
        return None

    source = pick("energy_source")
    country = pick("country")
    return RecClaims(
        facility_id=_to_int(pick("facility_id")),
        period_start=_to_time(pick("period_start")),
        period_end=_to_time(pick("period_end")),
        wh=_to_int(pick("wh")),
        energy_source=source if isinstance(source, str) else None,
        country=country.upper() if isinstance(country, str) else None,
    )
