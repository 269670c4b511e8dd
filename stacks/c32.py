"""Crockford-style base-32 (c32), c32check and Stacks addresses / principal strings.

c32 treats the input as one big-endian number written in base 32, then writes one `0` per
leading zero byte (the same convention as base58check), so round trips keep leading zeros.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from stacks.hashing import sha256

C32_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_C32_INDEX = {ch: i for i, ch in enumerate(C32_ALPHABET)}

# Stacks address versions (c32 character in brackets).
MAINNET_SINGLE_SIG = 22  # SP
MAINNET_MULTI_SIG = 20  # SM
TESTNET_SINGLE_SIG = 26  # ST
TESTNET_MULTI_SIG = 21  # SN
ADDRESS_VERSIONS = frozenset(
    {MAINNET_SINGLE_SIG, MAINNET_MULTI_SIG, TESTNET_SINGLE_SIG, TESTNET_MULTI_SIG}
)
MAINNET_VERSIONS = frozenset({MAINNET_SINGLE_SIG, MAINNET_MULTI_SIG})

# Clarity contract names: a letter, then letters, digits, `-` or `_`. New deployments are capped
# at 40 characters, but principals with names up to 128 bytes are valid values on chain (older
# nodes accepted them), so parsing accepts 128. `__transient` is a reserved internal name.
CONTRACT_NAME_MAX = 128
_CONTRACT_NAME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9_-]{0,127}|__transient")


class AddressError(ValueError):
    """A c32 string, address, or contract principal string is malformed."""


def c32_encode(data: bytes) -> str:
    leading = len(data) - len(data.lstrip(b"\x00"))
    number = int.from_bytes(data, "big")
    digits: list[str] = []
    while number:
        number, rem = divmod(number, 32)
        digits.append(C32_ALPHABET[rem])
    return "0" * leading + "".join(reversed(digits))


def _normalize(text: str) -> str:
    # Crockford's decoding tolerance, as c32check does: O->0, L/I->1, any case.
    return text.upper().replace("O", "0").replace("L", "1").replace("I", "1")


def c32_decode(text: str) -> bytes:
    norm = _normalize(text)
    number = 0
    for ch in norm:
        digit = _C32_INDEX.get(ch)
        if digit is None:
            raise AddressError(f"invalid c32 character {ch!r} in {text!r}")
        number = number * 32 + digit
    leading = len(norm) - len(norm.lstrip("0"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\x00" * leading + body


def _checksum(version: int, data: bytes) -> bytes:
    return sha256(sha256(bytes([version]) + data))[:4]


def c32check_encode(version: int, data: bytes) -> str:
    if not 0 <= version < 32:
        raise AddressError(f"c32check version must be 0..31, got {version}")
    return C32_ALPHABET[version] + c32_encode(data + _checksum(version, data))


def c32check_decode(text: str) -> tuple[int, bytes]:
    if len(text) < 2:
        raise AddressError(f"c32check string too short: {text!r}")
    norm = _normalize(text)
    version = _C32_INDEX.get(norm[0])
    if version is None:
        raise AddressError(f"invalid c32 version character {text[0]!r}")
    raw = c32_decode(norm[1:])
    if len(raw) < 4:
        raise AddressError(f"c32check string too short: {text!r}")
    data, checksum = raw[:-4], raw[-4:]
    if _checksum(version, data) != checksum:
        raise AddressError(f"bad c32check checksum in {text!r}")
    return version, data


@lru_cache(maxsize=65536)
def address_from_hash160(version: int, hash160: bytes) -> str:
    """The `S...` string of a (version, hash160) pair; cached because indexers see few
    distinct principals many times."""
    if len(hash160) != 20:
        raise AddressError(f"hash160 must be 20 bytes, got {len(hash160)}")
    return "S" + c32check_encode(version, hash160)


def address_to_hash160(address: str) -> tuple[int, bytes]:
    """Parse and validate a Stacks address. Any version 0..31 is accepted (Clarity allows all
    of them); use `ADDRESS_VERSIONS` to restrict to the four in use."""
    if not isinstance(address, str) or not address.startswith("S"):
        raise AddressError(f"a Stacks address starts with 'S': {address!r}")
    version, data = c32check_decode(address[1:])
    if len(data) != 20:
        raise AddressError(f"address payload must be 20 bytes, got {len(data)}: {address!r}")
    # Reject non-canonical spellings (extra leading zeros, lower case) so an address has one form.
    if address_from_hash160(version, data) != address:
        raise AddressError(f"non-canonical address spelling {address!r}")
    return version, data


def is_valid_address(address: str) -> bool:
    try:
        address_to_hash160(address)
    except AddressError:
        return False
    return True


def validate_contract_name(name: str) -> str:
    if not isinstance(name, str) or _CONTRACT_NAME_RE.fullmatch(name) is None:
        raise AddressError(f"invalid contract name {name!r}")
    return name


@dataclass(frozen=True, slots=True)
class PrincipalString:
    """A parsed `ADDR` or `ADDR.contract-name` principal."""

    version: int
    hash160: bytes
    contract_name: str | None = None

    @property
    def address(self) -> str:
        return address_from_hash160(self.version, self.hash160)

    def __str__(self) -> str:
        if self.contract_name is None:
            return self.address
        return f"{self.address}.{self.contract_name}"


def parse_principal(text: str) -> PrincipalString:
    if not isinstance(text, str):
        raise AddressError(f"principal must be a string, got {type(text).__name__}")
    address, dot, name = text.partition(".")
    version, hash160 = address_to_hash160(address)
    if not dot:
        return PrincipalString(version, hash160)
    return PrincipalString(version, hash160, validate_contract_name(name))
