"""Clarity codec: malformed input per error class, limits, JSON validation, properties."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stacks import clarity
from stacks.clarity import (
    BadHexError,
    BadNameError,
    BadPrincipalError,
    BadTypeByteError,
    BadUtf8Error,
    BoolCV,
    BufferCV,
    ClarityDecodeError,
    ClarityEncodeError,
    ClarityJsonError,
    ContractPrincipalCV,
    Err,
    ErrCV,
    IntCV,
    ListCV,
    NonAsciiError,
    NoneCV,
    Ok,
    OkCV,
    OversizedLengthError,
    SomeCV,
    StandardPrincipalCV,
    StringAsciiCV,
    StringUtf8CV,
    TooDeepError,
    TrailingBytesError,
    TruncatedError,
    TupleCV,
    UIntCV,
)

U = bytes([0x01]) + (5).to_bytes(16, "big")  # u5


def _tuple(*fields: tuple[bytes, bytes]) -> bytes:
    out = bytes([0x0C]) + len(fields).to_bytes(4, "big")
    for name, value in fields:
        out += bytes([len(name)]) + name + value
    return out


MALFORMED: list[tuple[str, bytes, type[ClarityDecodeError]]] = [
    ("empty", b"", TruncatedError),
    ("short uint", bytes([0x01]) + bytes(15), TruncatedError),
    ("bad type byte", bytes([0x0F]), BadTypeByteError),
    ("type byte 0xff", bytes([0xFF, 0, 0]), BadTypeByteError),
    ("buffer longer than input", bytes([0x02, 0, 0, 0, 9, 1, 2]), TruncatedError),
    ("buffer over 1 MB", bytes([0x02]) + (2**20 + 1).to_bytes(4, "big"), OversizedLengthError),
    ("list count huge", bytes([0x0B, 0xFF, 0xFF, 0xFF, 0xFF]), OversizedLengthError),
    ("list count beyond input", bytes([0x0B, 0, 0x0F, 0, 0, 0x03]), OversizedLengthError),
    ("tuple count beyond input", bytes([0x0C, 0, 0, 0, 2, 1, 0x61, 0x03]), OversizedLengthError),
    ("bad utf8", bytes([0x0E, 0, 0, 0, 2, 0xC3, 0x28]), BadUtf8Error),
    ("utf8 surrogate", bytes([0x0E, 0, 0, 0, 3, 0xED, 0xA0, 0x80]), BadUtf8Error),
    ("ascii high byte", bytes([0x0D, 0, 0, 0, 2, 0x41, 0xE9]), NonAsciiError),
    ("ascii control byte", bytes([0x0D, 0, 0, 0, 1, 0x00]), NonAsciiError),
    ("principal version 32", bytes([0x05, 32]) + bytes(20), BadPrincipalError),
    ("principal truncated", bytes([0x05, 22]) + bytes(10), TruncatedError),
    ("contract name empty", bytes([0x06, 22]) + bytes(20) + bytes([0]), BadPrincipalError),
    ("contract name digit", bytes([0x06, 22]) + bytes(20) + b"\x021a", BadPrincipalError),
    ("contract name dot", bytes([0x06, 22]) + bytes(20) + b"\x03a.b", BadPrincipalError),
    ("contract name 129", bytes([0x06, 22]) + bytes(20) + b"\x81" + b"a" * 129, BadPrincipalError),
    ("tuple bad field name", _tuple((b"1x", U)), BadNameError),
    ("tuple empty field name", _tuple((b"", U)), BadNameError),
    ("tuple duplicate name", _tuple((b"a", U), (b"a", U)), BadNameError),
    ("trailing byte", U + b"\x00", TrailingBytesError),
    ("too deep", bytes([0x0A]) * 32 + U, TooDeepError),
    ("too deep lists", bytes([0x0B, 0, 0, 0, 1]) * 40 + U, TooDeepError),
    ("some truncated", bytes([0x0A]), TruncatedError),
]


@pytest.mark.parametrize(
    ("data", "error"), [(d, e) for _, d, e in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_malformed_input_raises_typed_error(data: bytes, error: type[ClarityDecodeError]) -> None:
    with pytest.raises(error) as info:
        clarity.decode(data)
    assert "at byte" in str(info.value)
    assert 0 <= info.value.offset <= len(data)
    with pytest.raises(error):
        clarity.decode_to_python(data)


def test_bad_hex_is_a_decode_error() -> None:
    with pytest.raises(BadHexError):
        clarity.decode_hex("0xzz")
    with pytest.raises(BadHexError):
        clarity.decode_hex_to_python("0x0")


def test_depth_limit_is_exactly_32() -> None:
    ok = bytes([0x0A]) * 31 + U
    assert clarity.depth_of(clarity.decode(ok)) == 32
    assert clarity.decode_to_python(ok) == 5
    with pytest.raises(ClarityEncodeError):
        deep: clarity.ClarityValue = UIntCV(1)
        for _ in range(32):
            deep = SomeCV(deep)
        clarity.encode(deep)


def test_unsorted_tuple_fields_decode_sorted_like_stacks_core() -> None:
    unsorted = _tuple((b"zeta", U), (b"alpha", bytes([0x03])))
    value = clarity.decode(unsorted)
    assert isinstance(value, TupleCV)
    assert [k for k, _ in value.fields] == ["alpha", "zeta"]
    # Re-encoding yields the canonical (sorted) bytes, not the input order.
    assert clarity.encode(value) == _tuple((b"alpha", bytes([0x03])), (b"zeta", U))
    assert clarity.decode_to_python(unsorted) == {"zeta": 5, "alpha": True}


def test_decode_prefix_reports_the_end_offset() -> None:
    data = b"\xaa" + U + bytes([0x03]) + b"rest"
    value, end = clarity.decode_prefix(data, 1)
    assert value == UIntCV(5)
    assert end == 18
    value, end = clarity.decode_prefix(data, end)
    assert value == BoolCV(True)
    assert data[end:] == b"rest"


def test_to_python_shapes() -> None:
    value = TupleCV.of(
        {
            "amount": UIntCV(10),
            "memo": SomeCV(StringUtf8CV("hi")),
            "none": NoneCV(),
            "result": OkCV(ListCV((IntCV(-1), BufferCV(b"\x01")))),
            "failure": ErrCV(UIntCV(3)),
            "who": ContractPrincipalCV(26, bytes(20), "rec-market"),
        }
    )
    plain = clarity.to_python(value)
    assert plain == {
        "amount": 10,
        "memo": "hi",
        "none": None,
        "result": Ok([-1, b"\x01"]),
        "failure": Err(3),
        "who": "ST000000000000000000002AMW42H.rec-market",
    }
    assert plain["result"] != Err([-1, b"\x01"])
    assert clarity.decode_to_python(clarity.encode(value)) == plain


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "uint", "value": "-1"},
        {"type": "uint", "value": str(2**128)},
        {"type": "int", "value": str(2**127)},
        {"type": "uint", "value": "1.5"},
        {"type": "uint", "value": True},
        {"type": "bool", "value": "true"},
        {"type": "buffer", "value": "abcd"},
        {"type": "buffer", "value": "0xabc"},
        {"type": "string-ascii", "value": "é"},
        {"type": "principal", "value": "SP000000000000000000002Q6VF78.1bad"},
        {"type": "principal", "value": "XP000000000000000000002Q6VF78"},
        {"type": "some"},
        {"type": "list", "value": {}},
        {"type": "tuple", "value": {"bad name": {"type": "none"}}},
        {"type": "tuple", "value": []},
        {"type": "float", "value": "1"},
        {"value": "1"},
        "uint",
    ],
)
def test_from_json_rejects_malformed(obj: Any) -> None:
    with pytest.raises(ClarityJsonError):
        clarity.from_json(obj)


def test_encode_rejects_out_of_range_values() -> None:
    for bad in (
        UIntCV(-1),
        UIntCV(2**128),
        IntCV(-(2**127) - 1),
        StandardPrincipalCV(32, bytes(20)),
        StandardPrincipalCV(22, bytes(19)),
        ContractPrincipalCV(22, bytes(20), "no.dots"),
        StringAsciiCV("naïve"),
        TupleCV((("a", NoneCV()), ("a", NoneCV()))),
        BufferCV(bytes(2**20)),
    ):
        with pytest.raises(ClarityEncodeError):
            clarity.encode(bad)


# ----------------------------------------------------------------------------------- properties

_names = st.from_regex(r"[a-z][a-z0-9\-]{0,12}", fullmatch=True)
_leaves = st.one_of(
    st.integers(min_value=-(2**127), max_value=2**127 - 1).map(IntCV),
    st.integers(min_value=0, max_value=2**128 - 1).map(UIntCV),
    st.binary(max_size=40).map(BufferCV),
    st.booleans().map(BoolCV),
    st.builds(StandardPrincipalCV, st.integers(0, 31), st.binary(min_size=20, max_size=20)),
    st.builds(
        ContractPrincipalCV,
        st.integers(0, 31),
        st.binary(min_size=20, max_size=20),
        st.from_regex(r"[a-zA-Z][a-zA-Z0-9_\-]{0,40}", fullmatch=True),
    ),
    st.just(NoneCV()),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30).map(
        StringAsciiCV
    ),
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20).map(StringUtf8CV),
)
values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        inner.map(SomeCV),
        inner.map(OkCV),
        inner.map(ErrCV),
        st.lists(inner, max_size=4).map(lambda xs: ListCV(tuple(xs))),
        st.dictionaries(_names, inner, max_size=4).map(TupleCV.of),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_round_trip(value: clarity.ClarityValue) -> None:
    data = clarity.encode(value)
    assert clarity.decode(data) == value
    assert clarity.from_json(clarity.to_json(value)) == value
    assert clarity.decode_to_python(data) == clarity.to_python(value)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_only_raise_decode_errors(data: bytes) -> None:
    for decoder in (clarity.decode, clarity.decode_to_python):
        with contextlib.suppress(ClarityDecodeError):
            decoder(data)


@settings(max_examples=500, deadline=None)
@given(values, st.data())
def test_corrupted_values_only_raise_decode_errors(value: clarity.ClarityValue, data: Any) -> None:
    raw = bytearray(clarity.encode(value))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        with contextlib.suppress(ClarityDecodeError):
            clarity.decode(candidate)


def _outcome(decode: Any, data: bytes) -> tuple[Any, ...]:
    try:
        return ("value", decode(data))
    except ClarityDecodeError as exc:
        return (type(exc), exc.offset, str(exc))


@settings(max_examples=500, deadline=None)
@given(values, st.data())
def test_fast_path_fails_exactly_like_the_typed_decoder(
    value: clarity.ClarityValue, data: Any
) -> None:
    raw = bytearray(clarity.encode(value))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut]), bytes(raw) + b"\x00"):
        typed = _outcome(lambda b: clarity.to_python(clarity.decode(b)), candidate)
        assert _outcome(clarity.decode_to_python, candidate) == typed


def test_cached_principals_and_strings_never_mask_a_short_input() -> None:
    std = clarity.encode(StandardPrincipalCV(22, bytes(range(20))))
    contract = clarity.encode(ContractPrincipalCV(22, bytes(range(20)), "marketplace"))
    status = clarity.encode(StringAsciiCV("active"))
    for full in (std, contract, status):
        clarity.decode_to_python(full)  # now cached
        for cut in range(len(full)):
            with pytest.raises(TruncatedError):
                clarity.decode_to_python(full[:cut])
            wrapped = _tuple((b"a", full[:cut]))
            with pytest.raises(ClarityDecodeError) as typed:
                clarity.decode(wrapped)
            with pytest.raises(type(typed.value)) as fast:
                clarity.decode_to_python(wrapped)
            assert fast.value.offset == typed.value.offset
    # A contract principal is not a standard one with trailing bytes, or the reverse.
    assert clarity.decode_to_python(contract).endswith(".marketplace")
    with pytest.raises(TrailingBytesError):
        clarity.decode_to_python(std + b"\x0bmarketplace")


def test_hot_path_caches_stay_bounded() -> None:
    for i in range(clarity._PRINCIPAL_CACHE_MAX + 10):
        clarity.decode_to_python(bytes([0x05, 26]) + i.to_bytes(20, "big"))
    assert 0 < len(clarity._PRINCIPAL_CACHE) <= clarity._PRINCIPAL_CACHE_MAX
    for i in range(clarity._ASCII_CACHE_MAX + 10):
        clarity.decode_to_python(clarity.encode(StringAsciiCV(f"s{i}")))
    assert 0 < len(clarity._ASCII_CACHE) <= clarity._ASCII_CACHE_MAX
    long_text = "ipfs://" + "b" * clarity._ASCII_CACHE_ITEM_MAX
    clarity.decode_to_python(clarity.encode(StringAsciiCV(long_text)))
    assert long_text.encode() not in clarity._ASCII_CACHE
