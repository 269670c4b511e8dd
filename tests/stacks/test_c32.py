"""c32 / c32check / principal strings, and the pure-Python hash fallbacks."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stacks import c32
from stacks.c32 import AddressError
from stacks.hashing import ripemd160_pure, sha512_256_pure

ZERO_SP = "SP000000000000000000002Q6VF78"


def test_leading_zero_bytes_become_zeros() -> None:
    assert c32.c32_encode(b"\x00\x00\x01") == "001"
    assert c32.c32_decode("001") == b"\x00\x00\x01"
    assert c32.c32_encode(b"") == ""


@given(st.binary(max_size=40))
def test_c32_round_trip(data: bytes) -> None:
    assert c32.c32_decode(c32.c32_encode(data)) == data


@given(st.integers(0, 31), st.binary(min_size=20, max_size=20))
def test_address_round_trip(version: int, h: bytes) -> None:
    address = c32.address_from_hash160(version, h)
    assert c32.address_to_hash160(address) == (version, h)
    assert c32.is_valid_address(address)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "S",
        "XP000000000000000000002Q6VF78",  # not an S address
        "SP000000000000000000002Q6VF79",  # checksum
        "SP00000000000000000002Q6VF78",  # payload too short
        "SPU00000000000000000002Q6VF78",  # U is not in the alphabet
        "sp000000000000000000002q6vf78",  # non-canonical case
    ],
)
def test_bad_addresses(bad: str) -> None:
    with pytest.raises(AddressError):
        c32.address_to_hash160(bad)
    assert not c32.is_valid_address(bad)


def test_principal_parsing() -> None:
    parsed = c32.parse_principal(f"{ZERO_SP}.rec-market_v2")
    assert (parsed.version, parsed.hash160, parsed.contract_name) == (
        22,
        bytes(20),
        "rec-market_v2",
    )
    assert str(parsed) == f"{ZERO_SP}.rec-market_v2"
    assert str(c32.parse_principal(ZERO_SP)) == ZERO_SP
    for bad in (f"{ZERO_SP}.", f"{ZERO_SP}.9lives", f"{ZERO_SP}.a.b", f"{ZERO_SP}.{'a' * 129}"):
        with pytest.raises(AddressError):
            c32.parse_principal(bad)


def test_version_out_of_range() -> None:
    with pytest.raises(AddressError):
        c32.c32check_encode(32, bytes(20))


@given(st.binary(max_size=300))
def test_pure_hash_fallbacks_match_hashlib(data: bytes) -> None:
    if "sha512_256" in hashlib.algorithms_available:
        assert sha512_256_pure(data) == hashlib.new("sha512_256", data).digest()
    if "ripemd160" in hashlib.algorithms_available:
        assert ripemd160_pure(data) == hashlib.new("ripemd160", data).digest()


def test_pure_hash_known_answers() -> None:
    # Published test vectors (FIPS 180-4 examples; RIPEMD-160 reference page).
    assert sha512_256_pure(b"abc").hex() == (
        "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
    )
    assert ripemd160_pure(b"abc").hex() == "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc"
