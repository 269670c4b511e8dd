"""Clarity values and their consensus serialization (SIP-005).

Three views of a value:
- typed: frozen dataclasses below (`decode`, `encode`, `to_json`, `from_json`);
- typed JSON: the exact user-facing form documented in `to_json`;
- plain Python (`to_python`, `decode_hex_to_python`): int, bytes, str, bool, None, dict, list,
  principals as strings, responses as `Ok(value)` / `Err(value)`; `(some v)` becomes `v`, so
  `none` and `(some none)` both read as None (they are only distinguishable in the typed view).

Decoding follows stacks-core: tuple fields may arrive in any order and are stored sorted by name,
a repeated field name is rejected. Decoding does not type-check list homogeneity (stacks-core
does; values from the node are already well-typed). Every malformed input raises a subclass of
`ClarityDecodeError` carrying the byte offset, never IndexError, RecursionError or a hang: all
lengths are checked against the remaining input before anything is allocated or looped over.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from stacks.c32 import AddressError, address_from_hash160, parse_principal

MAX_VALUE_SIZE = 1024 * 1024
MAX_DEPTH = 32
CLARITY_NAME_MAX = 128

_U128_MAX = (1 << 128) - 1
_I128_MIN = -(1 << 127)
_I128_MAX = (1 << 127) - 1

# Clarity identifiers (tuple field names) and contract names, as stacks-core defines them.
_CLARITY_NAME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9\-_!?+<>=/*]*|[-+=/*]|[<>]=?")
_CONTRACT_NAME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9_-]*|__transient")
# string-ascii admits printable ASCII and ASCII whitespace only (stacks-core's check).
_ASCII_OK = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0C, 0x0D}
_ASCII_BAD_RE = re.compile(rb"[^\x20-\x7e\t\n\x0c\r]")

T_INT, T_UINT, T_BUFFER, T_TRUE, T_FALSE = 0x00, 0x01, 0x02, 0x03, 0x04
T_STD_PRINCIPAL, T_CONTRACT_PRINCIPAL, T_OK, T_ERR, T_NONE = 0x05, 0x06, 0x07, 0x08, 0x09
T_SOME, T_LIST, T_TUPLE, T_ASCII, T_UTF8 = 0x0A, 0x0B, 0x0C, 0x0D, 0x0E


# ----------------------------------------------------------------------------------- errors


class ClarityDecodeError(ValueError):
    """Malformed serialized Clarity value; `offset` is where decoding stopped."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.offset = offset


class TruncatedError(ClarityDecodeError):
    """The input ended before the value did."""


class BadTypeByteError(ClarityDecodeError):
    """A type prefix byte that is not one of the 15 Clarity type ids."""


class OversizedLengthError(ClarityDecodeError):
    """A length or count that exceeds the 1 MB value limit or the remaining input."""


class BadUtf8Error(ClarityDecodeError):
    """string-utf8 bytes that are not valid UTF-8."""


class NonAsciiError(ClarityDecodeError):
    """string-ascii bytes outside printable ASCII and whitespace."""


class BadPrincipalError(ClarityDecodeError):
    """Principal version byte >= 32, or a contract name that breaks Clarity's rules."""


class BadNameError(ClarityDecodeError):
    """A tuple field name that is not a Clarity name, or a name repeated within one tuple."""


class TrailingBytesError(ClarityDecodeError):
    """Bytes left over after a complete value."""


class TooDeepError(ClarityDecodeError):
    """Nesting deeper than Clarity's type depth limit of 32."""


class BadHexError(ClarityDecodeError):
    """The hex text itself is malformed."""


class ClarityEncodeError(ValueError):
    """A typed value that has no valid serialization (out-of-range int, bad name, too big)."""


class ClarityJsonError(ValueError):
    """Typed JSON that does not follow the documented form."""


# ----------------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class IntCV:
    value: int


@dataclass(frozen=True, slots=True)
class UIntCV:
    value: int


@dataclass(frozen=True, slots=True)
class BufferCV:
    value: bytes


@dataclass(frozen=True, slots=True)
class BoolCV:
    value: bool


@dataclass(frozen=True, slots=True)
class StandardPrincipalCV:
    version: int
    hash160: bytes

    @property
    def address(self) -> str:
        return address_from_hash160(self.version, self.hash160)

    def __str__(self) -> str:
        return self.address


@dataclass(frozen=True, slots=True)
class ContractPrincipalCV:
    version: int
    hash160: bytes
    name: str

    @property
    def address(self) -> str:
        return address_from_hash160(self.version, self.hash160)

    def __str__(self) -> str:
        return f"{self.address}.{self.name}"


@dataclass(frozen=True, slots=True)
class OkCV:
    value: ClarityValue


@dataclass(frozen=True, slots=True)
class ErrCV:
    value: ClarityValue


@dataclass(frozen=True, slots=True)
class NoneCV:
    pass


@dataclass(frozen=True, slots=True)
class SomeCV:
    value: ClarityValue


@dataclass(frozen=True, slots=True)
class ListCV:
    items: tuple[ClarityValue, ...]


@dataclass(frozen=True, slots=True)
class TupleCV:
    """Fields sorted by name, which is both Clarity's canonical order and its wire order."""

    fields: tuple[tuple[str, ClarityValue], ...]

    @classmethod
    def of(cls, mapping: Mapping[str, ClarityValue]) -> TupleCV:
        return cls(tuple(sorted(mapping.items(), key=lambda kv: kv[0])))

    def __getitem__(self, name: str) -> ClarityValue:
        for key, value in self.fields:
            if key == name:
                return value
        raise KeyError(name)

    def as_dict(self) -> dict[str, ClarityValue]:
        return dict(self.fields)


@dataclass(frozen=True, slots=True)
class StringAsciiCV:
    value: str


@dataclass(frozen=True, slots=True)
class StringUtf8CV:
    value: str


ClarityValue: TypeAlias = (
    IntCV
    | UIntCV
    | BufferCV
    | BoolCV
    | StandardPrincipalCV
    | ContractPrincipalCV
    | OkCV
    | ErrCV
    | NoneCV
    | SomeCV
    | ListCV
    | TupleCV
    | StringAsciiCV
    | StringUtf8CV
)
PrincipalCV: TypeAlias = StandardPrincipalCV | ContractPrincipalCV


def principal_cv(text: str) -> PrincipalCV:
    """`ADDR` or `ADDR.name` as a principal value (raises AddressError)."""
    parsed = parse_principal(text)
    if parsed.contract_name is None:
        return StandardPrincipalCV(parsed.version, parsed.hash160)
    return ContractPrincipalCV(parsed.version, parsed.hash160, parsed.contract_name)


# Dataclasses rather than NamedTuples: tuples would make Ok(x) == Err(x).
@dataclass(frozen=True, slots=True)
class Ok:
    """`(ok value)` in the plain-Python view."""

    value: Any


@dataclass(frozen=True, slots=True)
class Err:
    """`(err value)` in the plain-Python view."""

    value: Any


# ----------------------------------------------------------------------------------- decoding


def _need(data: bytes, pos: int, n: int, what: str) -> None:
    if pos + n > len(data):
        raise TruncatedError(f"truncated {what}: need {n} bytes, {len(data) - pos} left", pos)


def _read_len(data: bytes, pos: int, what: str) -> int:
    _need(data, pos, 4, f"{what} length")
    n = int.from_bytes(data[pos : pos + 4], "big")
    if n > MAX_VALUE_SIZE:
        raise OversizedLengthError(f"{what} length {n} exceeds the 1 MB value limit", pos)
    return n


# Event payloads reuse a handful of field names; remembering validated ones skips the regex.
_NAME_CACHE: dict[bytes, str] = {}
_NAME_CACHE_MAX = 4096


def _read_name(data: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(data):
        raise TruncatedError("truncated tuple field name length", pos)
    end = pos + 1 + data[pos]
    if end > len(data):
        raise TruncatedError(f"truncated tuple field name: need {end - pos - 1} bytes", pos + 1)
    raw = data[pos + 1 : end]
    name = _NAME_CACHE.get(raw)
    if name is not None:
        return name, end
    name = raw.decode("latin-1")
    if len(raw) > CLARITY_NAME_MAX or _CLARITY_NAME_RE.fullmatch(name) is None:
        raise BadNameError(f"invalid tuple field name {name!r}", pos)
    if len(_NAME_CACHE) < _NAME_CACHE_MAX:
        _NAME_CACHE[raw] = name
    return name, end


def _read_principal(data: bytes, pos: int, contract: bool) -> tuple[int, bytes, str | None, int]:
    _need(data, pos, 21, "principal")
    version = data[pos]
    if version >= 32:
        raise BadPrincipalError(f"principal version {version} is not below 32", pos)
    hash160 = data[pos + 1 : pos + 21]
    pos += 21
    if not contract:
        return version, hash160, None, pos
    _need(data, pos, 1, "contract name length")
    n = data[pos]
    _need(data, pos + 1, n, "contract name")
    name = data[pos + 1 : pos + 1 + n].decode("latin-1")
    if n > CLARITY_NAME_MAX or _CONTRACT_NAME_RE.fullmatch(name) is None:
        raise BadPrincipalError(f"invalid contract name {name!r}", pos)
    return version, hash160, name, pos + 1 + n


def _read_ascii(data: bytes, pos: int) -> tuple[str, int]:
    n = _read_len(data, pos, "string-ascii")
    _need(data, pos + 4, n, "string-ascii")
    raw = data[pos + 4 : pos + 4 + n]
    bad = _ASCII_BAD_RE.search(raw)
    if bad is not None:
        raise NonAsciiError(
            f"string-ascii holds byte 0x{raw[bad.start()]:02x}", pos + 4 + bad.start()
        )
    return raw.decode("ascii"), pos + 4 + n


def _read_utf8(data: bytes, pos: int) -> tuple[str, int]:
    n = _read_len(data, pos, "string-utf8")
    _need(data, pos + 4, n, "string-utf8")
    try:
        text = data[pos + 4 : pos + 4 + n].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadUtf8Error(
            f"string-utf8 is not valid UTF-8: {exc.reason}", pos + 4 + exc.start
        ) from None
    return text, pos + 4 + n


def _check_count(data: bytes, pos: int, count: int, min_item: int, what: str) -> None:
    # Each element needs at least `min_item` bytes, so a count the input cannot hold is
    # rejected before any loop runs.
    if count * min_item > len(data) - pos:
        raise OversizedLengthError(
            f"{what} claims {count} entries but only {len(data) - pos} bytes remain", pos
        )


# Frozen values, so one instance can stand for every occurrence.
_TRUE_CV, _FALSE_CV, _NONE_CV = BoolCV(True), BoolCV(False), NoneCV()
# Two 64-bit halves read in place: about half the cost of slicing 16 bytes for int.from_bytes.
_U128_PARTS = struct.Struct(">QQ").unpack_from
# Validated principals by their wire bytes (type byte included), emptied when full.
_PRINCIPAL_CV_CACHE: dict[bytes, PrincipalCV] = {}
_PRINCIPAL_CV_CACHE_MAX = 65536


def _decode_principal(data: bytes, pos: int, t: int) -> tuple[PrincipalCV, int]:
    # `pos` is just past the type byte. A stored contract key carries its own name length, so a
    # key cut short by the end of the input never matches one and takes the checked path.
    if t == T_STD_PRINCIPAL:
        end = pos + 21
    elif pos + 21 < len(data):
        end = pos + 22 + data[pos + 21]
    else:
        end = -1
    cached = _PRINCIPAL_CV_CACHE.get(data[pos - 1 : end]) if end > 0 else None
    if cached is not None:
        return cached, end
    version, h, name, end = _read_principal(data, pos, t == T_CONTRACT_PRINCIPAL)
    cv: PrincipalCV = (
        StandardPrincipalCV(version, h) if name is None else ContractPrincipalCV(version, h, name)
    )
    if len(_PRINCIPAL_CV_CACHE) >= _PRINCIPAL_CV_CACHE_MAX:
        _PRINCIPAL_CV_CACHE.clear()
    _PRINCIPAL_CV_CACHE[data[pos - 1 : end]] = cv
    return cv, end


def _decode(data: bytes, pos: int, depth: int) -> tuple[ClarityValue, int]:
    if depth > MAX_DEPTH:
        raise TooDeepError(f"value nested deeper than {MAX_DEPTH}", pos)
    _need(data, pos, 1, "type prefix")
    t = data[pos]
    pos += 1
    if t == T_UINT:
        if pos + 16 > len(data):
            _need(data, pos, 16, "integer")
        high, low = _U128_PARTS(data, pos)
        return UIntCV(high << 64 | low if high else low), pos + 16
    if t == T_INT:
        _need(data, pos, 16, "integer")
        return IntCV(int.from_bytes(data[pos : pos + 16], "big", signed=True)), pos + 16
    if t == T_BUFFER:
        n = _read_len(data, pos, "buffer")
        _need(data, pos + 4, n, "buffer")
        return BufferCV(bytes(data[pos + 4 : pos + 4 + n])), pos + 4 + n
    if t == T_TRUE:
        return _TRUE_CV, pos
    if t == T_FALSE:
        return _FALSE_CV, pos
    if t in (T_STD_PRINCIPAL, T_CONTRACT_PRINCIPAL):
        return _decode_principal(data, pos, t)
    if t in (T_OK, T_ERR, T_SOME):
        inner, pos = _decode(data, pos, depth + 1)
        if t == T_OK:
            return OkCV(inner), pos
        if t == T_ERR:
            return ErrCV(inner), pos
        return SomeCV(inner), pos
    if t == T_NONE:
        return _NONE_CV, pos
    if t == T_LIST:
        count = _read_len(data, pos, "list")
        pos += 4
        _check_count(data, pos, count, 1, "list")
        items = []
        for _ in range(count):
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
        return ListCV(tuple(items)), pos
    if t == T_TUPLE:
        count = _read_len(data, pos, "tuple")
        pos += 4
        _check_count(data, pos, count, 3, "tuple")
        fields: dict[str, ClarityValue] = {}
        in_order = True
        previous = ""
        for _ in range(count):
            name_at = pos
            name, pos = _read_name(data, pos)
            value, pos = _decode(data, pos, depth + 1)
            if name in fields:
                raise BadNameError(f"tuple field {name!r} repeated", name_at)
            fields[name] = value
            # Names are never empty, so the first one always sorts after "".
            in_order = in_order and name > previous
            previous = name
        # Canonical (sorted) wire order is the norm; only other orders need sorting.
        return (TupleCV(tuple(fields.items())) if in_order else TupleCV.of(fields)), pos
    if t == T_ASCII:
        text, pos = _read_ascii(data, pos)
        return StringAsciiCV(text), pos
    if t == T_UTF8:
        text, pos = _read_utf8(data, pos)
        return StringUtf8CV(text), pos
    raise BadTypeByteError(f"unknown Clarity type byte 0x{t:02x}", pos - 1)


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    return data if isinstance(data, bytes) else bytes(data)


def decode_prefix(
    data: bytes | bytearray | memoryview, offset: int = 0
) -> tuple[ClarityValue, int]:
    """Decode one value starting at `offset`; return it and the offset just past it."""
    buf = _as_bytes(data)
    try:
        value, end = _decode(buf, offset, 1)
    except RecursionError:  # pragma: no cover - depth is bounded well below the stack limit
        raise TooDeepError("value nested too deeply", offset) from None
    if end - offset > MAX_VALUE_SIZE:
        raise OversizedLengthError(f"value of {end - offset} bytes exceeds 1 MB", offset)
    return value, end


def decode(data: bytes | bytearray | memoryview) -> ClarityValue:
    """Decode exactly one value; trailing bytes are an error."""
    value, end = decode_prefix(data, 0)
    if end != len(data):
        raise TrailingBytesError(f"{len(data) - end} bytes after the value", end)
    return value


def _hex_to_bytes(text: str | bytes) -> bytes:
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    body = text[2:] if text[:2] in ("0x", "0X") else text
    try:
        return bytes.fromhex(body)
    except ValueError:
        raise BadHexError(f"not a hex string: {text[:40]!r}", 0) from None


def decode_hex(text: str) -> ClarityValue:
    return decode(_hex_to_bytes(text))


# ----------------------------------------------------------------------------------- encoding


def _encode_into(value: ClarityValue, out: bytearray) -> None:
    if isinstance(value, UIntCV):
        if not 0 <= value.value <= _U128_MAX:
            raise ClarityEncodeError(f"uint out of range: {value.value}")
        out.append(T_UINT)
        out += value.value.to_bytes(16, "big")
    elif isinstance(value, IntCV):
        if not _I128_MIN <= value.value <= _I128_MAX:
            raise ClarityEncodeError(f"int out of range: {value.value}")
        out.append(T_INT)
        out += value.value.to_bytes(16, "big", signed=True)
    elif isinstance(value, BufferCV):
        out.append(T_BUFFER)
        out += len(value.value).to_bytes(4, "big")
        out += value.value
    elif isinstance(value, BoolCV):
        out.append(T_TRUE if value.value else T_FALSE)
    elif isinstance(value, StandardPrincipalCV | ContractPrincipalCV):
        if not 0 <= value.version < 32 or len(value.hash160) != 20:
            raise ClarityEncodeError(f"bad principal version/hash: {value!r}")
        if isinstance(value, StandardPrincipalCV):
            out.append(T_STD_PRINCIPAL)
            out.append(value.version)
            out += value.hash160
        else:
            name = value.name
            if len(name) > CLARITY_NAME_MAX or _CONTRACT_NAME_RE.fullmatch(name) is None:
                raise ClarityEncodeError(f"invalid contract name {name!r}")
            out.append(T_CONTRACT_PRINCIPAL)
            out.append(value.version)
            out += value.hash160
            out.append(len(name))
            out += name.encode("ascii")
    elif isinstance(value, OkCV | ErrCV | SomeCV):
        out.append(
            T_OK if isinstance(value, OkCV) else T_ERR if isinstance(value, ErrCV) else T_SOME
        )
        _encode_into(value.value, out)
    elif isinstance(value, NoneCV):
        out.append(T_NONE)
    elif isinstance(value, ListCV):
        out.append(T_LIST)
        out += len(value.items).to_bytes(4, "big")
        for item in value.items:
            _encode_into(item, out)
    elif isinstance(value, TupleCV):
        out.append(T_TUPLE)
        out += len(value.fields).to_bytes(4, "big")
        seen: set[str] = set()
        for name, item in sorted(value.fields, key=lambda kv: kv[0]):
            if name in seen:
                raise ClarityEncodeError(f"tuple field {name!r} repeated")
            seen.add(name)
            if len(name) > CLARITY_NAME_MAX or _CLARITY_NAME_RE.fullmatch(name) is None:
                raise ClarityEncodeError(f"invalid tuple field name {name!r}")
            out.append(len(name))
            out += name.encode("ascii")
            _encode_into(item, out)
    elif isinstance(value, StringAsciiCV):
        try:
            raw = value.value.encode("ascii")
        except UnicodeEncodeError:
            raise ClarityEncodeError("string-ascii holds non-ASCII characters") from None
        if _ASCII_BAD_RE.search(raw):
            raise ClarityEncodeError("string-ascii holds control characters")
        out.append(T_ASCII)
        out += len(raw).to_bytes(4, "big")
        out += raw
    elif isinstance(value, StringUtf8CV):
        try:
            raw = value.value.encode("utf-8")
        except UnicodeEncodeError:
            raise ClarityEncodeError("string-utf8 holds unpaired surrogates") from None
        out.append(T_UTF8)
        out += len(raw).to_bytes(4, "big")
        out += raw
    else:
        raise ClarityEncodeError(f"not a Clarity value: {type(value).__name__}")


def encode(value: ClarityValue) -> bytes:
    out = bytearray()
    _encode_into(value, out)
    if len(out) > MAX_VALUE_SIZE:
        raise ClarityEncodeError(f"serialized value of {len(out)} bytes exceeds 1 MB")
    if depth_of(value) > MAX_DEPTH:
        raise ClarityEncodeError(f"value nested deeper than {MAX_DEPTH}")
    return bytes(out)


def encode_hex(value: ClarityValue) -> str:
    return "0x" + encode(value).hex()


def depth_of(value: ClarityValue) -> int:
    if isinstance(value, OkCV | ErrCV | SomeCV):
        return 1 + depth_of(value.value)
    if isinstance(value, ListCV):
        return 1 + max((depth_of(v) for v in value.items), default=0)
    if isinstance(value, TupleCV):
        return 1 + max((depth_of(v) for _, v in value.fields), default=0)
    return 1


# ----------------------------------------------------------------------------------- JSON


def to_json(value: ClarityValue) -> dict[str, Any]:
    """Typed JSON: `{"type": T, "value": V}` with T one of int, uint (decimal strings), bool,
    buffer ("0x.."), string-ascii, string-utf8, principal ("ADDR[.name]"), none (no value),
    some / ok / err (nested), list (array), tuple (object with sorted keys)."""
    if isinstance(value, IntCV):
        return {"type": "int", "value": str(value.value)}
    if isinstance(value, UIntCV):
        return {"type": "uint", "value": str(value.value)}
    if isinstance(value, BoolCV):
        return {"type": "bool", "value": value.value}
    if isinstance(value, BufferCV):
        return {"type": "buffer", "value": "0x" + value.value.hex()}
    if isinstance(value, StringAsciiCV):
        return {"type": "string-ascii", "value": value.value}
    if isinstance(value, StringUtf8CV):
        return {"type": "string-utf8", "value": value.value}
    if isinstance(value, StandardPrincipalCV | ContractPrincipalCV):
        return {"type": "principal", "value": str(value)}
    if isinstance(value, NoneCV):
        return {"type": "none"}
    if isinstance(value, SomeCV):
        return {"type": "some", "value": to_json(value.value)}
    if isinstance(value, OkCV):
        return {"type": "ok", "value": to_json(value.value)}
    if isinstance(value, ErrCV):
        return {"type": "err", "value": to_json(value.value)}
    if isinstance(value, ListCV):
        return {"type": "list", "value": [to_json(v) for v in value.items]}
    if isinstance(value, TupleCV):
        return {"type": "tuple", "value": {k: to_json(v) for k, v in value.fields}}
    raise ClarityJsonError(f"not a Clarity value: {type(value).__name__}")


def _json_int(obj: Mapping[str, Any], kind: str) -> int:
    raw = obj.get("value")
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ClarityJsonError(f"{kind} value must be a decimal string")
    if isinstance(raw, str) and re.fullmatch(r"-?[0-9]+", raw) is None:
        raise ClarityJsonError(f"{kind} value must be a decimal string, got {raw!r}")
    n = int(raw)
    lo, hi = (0, _U128_MAX) if kind == "uint" else (_I128_MIN, _I128_MAX)
    if not lo <= n <= hi:
        raise ClarityJsonError(f"{kind} value out of range: {raw}")
    return n


def _json_str(obj: Mapping[str, Any], kind: str) -> str:
    raw = obj.get("value")
    if not isinstance(raw, str):
        raise ClarityJsonError(f"{kind} value must be a string")
    return raw


def from_json(obj: Any, _depth: int = 1) -> ClarityValue:
    """Inverse of `to_json`; raises ClarityJsonError on anything else."""
    if _depth > MAX_DEPTH:
        raise ClarityJsonError(f"value nested deeper than {MAX_DEPTH}")
    if not isinstance(obj, Mapping) or not isinstance(obj.get("type"), str):
        raise ClarityJsonError(f"expected an object with a 'type', got {obj!r:.80}")
    kind = obj["type"]
    if kind == "none":
        return NoneCV()
    if "value" not in obj:
        raise ClarityJsonError(f"{kind} needs a 'value'")
    raw = obj["value"]
    if kind == "uint":
        return UIntCV(_json_int(obj, kind))
    if kind == "int":
        return IntCV(_json_int(obj, kind))
    if kind == "bool":
        if not isinstance(raw, bool):
            raise ClarityJsonError("bool value must be true or false")
        return BoolCV(raw)
    if kind == "buffer":
        text = _json_str(obj, kind)
        if not text.startswith("0x"):
            raise ClarityJsonError("buffer value must be 0x-prefixed hex")
        try:
            return BufferCV(bytes.fromhex(text[2:]))
        except ValueError:
            raise ClarityJsonError(f"buffer value is not hex: {text[:40]!r}") from None
    if kind == "string-ascii":
        text = _json_str(obj, kind)
        if any(ord(c) not in _ASCII_OK for c in text):
            raise ClarityJsonError("string-ascii holds characters outside printable ASCII")
        return StringAsciiCV(text)
    if kind == "string-utf8":
        return StringUtf8CV(_json_str(obj, kind))
    if kind == "principal":
        try:
            return principal_cv(_json_str(obj, kind))
        except AddressError as exc:
            raise ClarityJsonError(f"bad principal: {exc}") from None
    if kind in ("some", "ok", "err"):
        inner = from_json(raw, _depth + 1)
        return SomeCV(inner) if kind == "some" else OkCV(inner) if kind == "ok" else ErrCV(inner)
    if kind == "list":
        if not isinstance(raw, list):
            raise ClarityJsonError("list value must be an array")
        return ListCV(tuple(from_json(v, _depth + 1) for v in raw))
    if kind == "tuple":
        if not isinstance(raw, Mapping):
            raise ClarityJsonError("tuple value must be an object")
        for name in raw:
            if (
                not isinstance(name, str)
                or len(name) > CLARITY_NAME_MAX
                or _CLARITY_NAME_RE.fullmatch(name) is None
            ):
                raise ClarityJsonError(f"invalid tuple field name {name!r}")
        return TupleCV.of({k: from_json(v, _depth + 1) for k, v in raw.items()})
    raise ClarityJsonError(f"unknown Clarity type {kind!r}")


# ----------------------------------------------------------------------------------- plain Python


def to_python(value: ClarityValue) -> Any:
    if isinstance(value, IntCV | UIntCV | BoolCV | StringAsciiCV | StringUtf8CV | BufferCV):
        return value.value
    if isinstance(value, StandardPrincipalCV | ContractPrincipalCV):
        return str(value)
    if isinstance(value, NoneCV):
        return None
    if isinstance(value, SomeCV):
        return to_python(value.value)
    if isinstance(value, OkCV):
        return Ok(to_python(value.value))
    if isinstance(value, ErrCV):
        return Err(to_python(value.value))
    if isinstance(value, ListCV):
        return [to_python(v) for v in value.items]
    if isinstance(value, TupleCV):
        return {k: to_python(v) for k, v in value.fields}
    raise TypeError(f"not a Clarity value: {type(value).__name__}")


# Hot-path caches keyed by raw wire bytes. Events repeat a few principals and status strings, and
# c32check (two SHA-256 and a base-32 conversion) dominates a principal's cost. Only validated
# entries are stored, so a hit needs no further checks; a full cache is emptied rather than
# frozen so a long-running indexer re-warms it with the principals it currently sees.
_PRINCIPAL_CACHE: dict[bytes, str] = {}
_PRINCIPAL_CACHE_MAX = 65536
_ASCII_CACHE: dict[bytes, str] = {}
_ASCII_CACHE_MAX = 4096
# Statuses, kinds and topics repeat; longer text (token URIs) is mostly unique and not worth a slot.
_ASCII_CACHE_ITEM_MAX = 32


def _fast_name(data: bytes, pos: int) -> str:
    name, _ = _read_name(data, pos)
    return name


def _fast_principal(data: bytes, pos: int) -> str:
    # Cache miss: full validation, then remember the result under the type byte and every byte
    # of the principal. A stored contract key carries its own name length, so a key cut short by
    # the end of the input never matches one.
    contract = data[pos - 1] == T_CONTRACT_PRINCIPAL
    version, h, cname, end = _read_principal(data, pos, contract)
    address = address_from_hash160(version, h)
    text = address if cname is None else f"{address}.{cname}"
    if len(_PRINCIPAL_CACHE) >= _PRINCIPAL_CACHE_MAX:
        _PRINCIPAL_CACHE.clear()
    _PRINCIPAL_CACHE[data[pos - 1 : end]] = text
    return text


def _fast_ascii(raw: bytes) -> str:
    # A byte over 0x7f fails the decode; the four whitespace controls Clarity allows are the only
    # non-printable characters that need the full check.
    text = raw.decode("ascii")
    if not text.isprintable() and _ASCII_BAD_RE.search(raw) is not None:
        raise NonAsciiError("string-ascii holds a control byte", 0)
    if len(raw) <= _ASCII_CACHE_ITEM_MAX:
        if len(_ASCII_CACHE) >= _ASCII_CACHE_MAX:
            _ASCII_CACHE.clear()
        _ASCII_CACHE[raw] = text
    return text


# The plain-Python decoder trusts the input's lengths: it skips the bounds checks that `_decode`
# makes before every read and lets a short input surface as an IndexError, or as an end offset
# past the input (a slice past the end is only shorter, and offsets never move backwards). It
# still rejects every well-bounded value `_decode` rejects (names, principals, strings, type
# bytes, depth, repeated fields), so whenever it fails or ends in the wrong place, re-running
# `_decode` reports the exact typed error and offset. Lengths over the 1 MB limit either run
# past the input or past MAX_VALUE_SIZE, and every loop step reads a byte, so no count can make
# it loop longer than the input.
def _fast(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise TooDeepError(f"value nested deeper than {MAX_DEPTH}", pos)
    t = data[pos]
    pos += 1
    # Branches ordered by how often event payloads use each type.
    if t == T_UINT:
        high, low = _U128_PARTS(data, pos)
        return (high << 64 | low if high else low), pos + 16
    if t == T_TUPLE:
        return _fast_tuple(data, pos, depth + 1)
    if t == T_STD_PRINCIPAL:
        end = pos + 21
        text = _PRINCIPAL_CACHE.get(data[pos - 1 : end])
        return (_fast_principal(data, pos) if text is None else text), end
    if t == T_ASCII:
        start = pos + 4
        end = start + int.from_bytes(data[pos:start], "big")
        raw = data[start:end]
        text = _ASCII_CACHE.get(raw)
        return (_fast_ascii(raw) if text is None else text), end
    if t == T_CONTRACT_PRINCIPAL:
        end = pos + 22 + data[pos + 21]
        text = _PRINCIPAL_CACHE.get(data[pos - 1 : end])
        return (_fast_principal(data, pos) if text is None else text), end
    if t == T_NONE:
        return None, pos
    if t == T_SOME:
        return _fast(data, pos, depth + 1)
    if t == T_UTF8:
        start = pos + 4
        end = start + int.from_bytes(data[pos:start], "big")
        return data[start:end].decode("utf-8"), end
    if t == T_BUFFER:
        start = pos + 4
        end = start + int.from_bytes(data[pos:start], "big")
        return data[start:end], end
    if t == T_TRUE:
        return True, pos
    if t == T_FALSE:
        return False, pos
    if t == T_INT:
        end = pos + 16
        return int.from_bytes(data[pos:end], "big", signed=True), end
    if t == T_OK:
        inner, pos = _fast(data, pos, depth + 1)
        return Ok(inner), pos
    if t == T_ERR:
        inner, pos = _fast(data, pos, depth + 1)
        return Err(inner), pos
    if t == T_LIST:
        start = pos + 4
        count = int.from_bytes(data[pos:start], "big")
        pos = start
        items = []
        for _ in range(count):
            item, pos = _fast(data, pos, depth + 1)
            items.append(item)
        return items, pos
    raise BadTypeByteError(f"unknown Clarity type byte 0x{t:02x}", pos - 1)


def _fast_tuple(data: bytes, pos: int, depth: int) -> tuple[dict[str, Any], int]:
    # `depth` is that of the fields. Their common leaf types are inlined to save a call each.
    names = _NAME_CACHE
    principals = _PRINCIPAL_CACHE
    strings = _ASCII_CACHE
    unpack_u128 = _U128_PARTS
    start = pos + 4
    count = int.from_bytes(data[pos:start], "big")
    pos = start
    if depth > MAX_DEPTH and count:
        raise TooDeepError("tuple field nested too deeply", pos)
    out: dict[str, Any] = {}
    value: Any
    for _ in range(count):
        start = pos + 1
        end = start + data[pos]
        name = names.get(data[start:end])
        if name is None:
            name = _fast_name(data, pos)
        t = data[end]
        if t == T_UINT:
            pos = end + 17
            high, value = unpack_u128(data, end + 1)
            if high:
                value |= high << 64
        elif t == T_STD_PRINCIPAL:
            pos = end + 22
            value = principals.get(data[end:pos])
            if value is None:
                value = _fast_principal(data, end + 1)
        elif t == T_ASCII:
            start = end + 5
            pos = start + int.from_bytes(data[end + 1 : start], "big")
            raw = data[start:pos]
            value = strings.get(raw)
            if value is None:
                value = _fast_ascii(raw)
        elif t == T_NONE:
            pos = end + 1
            value = None
        else:
            value, pos = _fast(data, end, depth)
        out[name] = value
    # A repeated name leaves fewer entries than fields; the checked decoder says where.
    if len(out) != count:
        raise BadNameError("tuple field repeated", pos)
    return out, pos


def _strict_to_python(data: bytes) -> Any:
    # Raises the typed error the fast path ran into; the result is only ever reached if the two
    # decoders disagree, and then the checked one wins.
    return to_python(decode(data))


def decode_to_python(data: bytes | bytearray | memoryview) -> Any:
    buf = data if isinstance(data, bytes) else bytes(data)
    try:
        value, end = _fast(buf, 0, 1)
    except (IndexError, ValueError, struct.error):
        return _strict_to_python(buf)
    if end != len(buf) or end > MAX_VALUE_SIZE:
        return _strict_to_python(buf)
    return value


def decode_hex_to_python(text: str) -> Any:
    """`0x`-prefixed (or bare) hex straight to plain Python, skipping the typed objects."""
    buf = _hex_to_bytes(text)
    try:
        value, end = _fast(buf, 0, 1)
    except (IndexError, ValueError, struct.error):
        return _strict_to_python(buf)
    if end != len(buf) or end > MAX_VALUE_SIZE:
        return _strict_to_python(buf)
    return value
