"""CIDs (v0 and v1, any multibase) and verification of blocks against their multihash."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from indexer.metadata.errors import CidError, UnsupportedError, VerificationError

RAW = 0x55
DAG_PB = 0x70
IDENTITY = 0x00

# Multihash codes we can verify with hashlib alone; anything else is refused rather than trusted.
_HASHERS: dict[int, Callable[[bytes], bytes]] = {
    0x12: lambda b: hashlib.sha256(b).digest(),
    0x13: lambda b: hashlib.sha512(b).digest(),
    0x16: lambda b: hashlib.sha3_256(b).digest(),
    0x14: lambda b: hashlib.sha3_512(b).digest(),
    0xB220: lambda b: hashlib.blake2b(b, digest_size=32).digest(),
}
# An identity "hash" embeds the content in the CID itself; cap it so a URI cannot smuggle a
# large document past the size limits.
MAX_IDENTITY_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Cid:
    """A parsed CID; ``key`` is its canonical CIDv1 base32 form, used for caching."""

    version: int
    codec: int
    hash_code: int
    digest: bytes
    key: str
    text: str

    @property
    def is_raw(self) -> bool:
        return self.codec == RAW

    @property
    def is_dag_pb(self) -> bool:
        return self.codec == DAG_PB

    def __str__(self) -> str:
        return self.text


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        n = n * 58 + _B58_INDEX[ch]
    pad = len(text) - len(text.lstrip("1"))
    return b"\x00" * pad + n.to_bytes((n.bit_length() + 7) // 8, "big")


def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    pad = len(data) - len(data.lstrip(b"\x00"))
    return "1" * pad + "".join(reversed(out))


def _b36decode(text: str) -> bytes:
    n = int(text.lower(), 36)
    pad = len(text) - len(text.lstrip("0"))
    return b"\x00" * pad + n.to_bytes((n.bit_length() + 7) // 8, "big")


def _multibase_decode(text: str) -> bytes:
    """The multibases CIDs are written in; stdlib only (this is on the enqueue hot path)."""
    prefix, body = text[0], text[1:]
    if prefix in "bB":
        body = body.upper()
        return base64.b32decode(body + "=" * (-len(body) % 8))
    if prefix == "z":
        return _b58decode(body)
    if prefix in "fF":
        return bytes.fromhex(body)
    if prefix in "kK":
        return _b36decode(body)
    if prefix == "m":
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    if prefix == "u":
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    raise ValueError(f"unsupported multibase prefix {prefix!r}")


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    for _ in range(9):
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
    raise ValueError("varint too long")


def _decode_binary(raw: bytes) -> tuple[int, int, int, bytes]:
    """(version, codec, multihash code, digest) from a binary CID."""
    if len(raw) == 34 and raw[0] == 0x12 and raw[1] == 0x20:
        return 0, DAG_PB, 0x12, raw[2:]
    version, pos = _uvarint(raw, 0)
    if version != 1:
        raise ValueError(f"CID version {version}")
    codec, pos = _uvarint(raw, pos)
    hash_code, pos = _uvarint(raw, pos)
    length, pos = _uvarint(raw, pos)
    digest = raw[pos:]
    if len(digest) != length:
        raise ValueError("multihash length does not match its digest")
    return 1, codec, hash_code, digest


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _binary_v1(codec: int, hash_code: int, digest: bytes) -> bytes:
    return (
        b"\x01"
        + _varint_bytes(codec)
        + _varint_bytes(hash_code)
        + _varint_bytes(len(digest))
        + digest
    )


def _key(codec: int, hash_code: int, digest: bytes) -> str:
    return "b" + base64.b32encode(_binary_v1(codec, hash_code, digest)).decode().lower().rstrip("=")


def parse_cid(value: str | bytes) -> Cid:
    """Parse a CID from text (any multibase, or a bare base58 CIDv0) or binary form."""
    if isinstance(value, str) and (not value or len(value) > 512):
        raise CidError(f"not a CID: {value[:64]!r}")
    try:
        if isinstance(value, bytes):
            raw = value
        elif len(value) == 46 and value.startswith("Qm"):
            raw = _b58decode(value)
        else:
            raw = _multibase_decode(value)
        version, codec, hash_code, digest = _decode_binary(raw)
    except (ValueError, KeyError, binascii.Error) as exc:
        shown = value[:64] if isinstance(value, str) else value[:32].hex()
        raise CidError(f"not a CID: {shown!r} ({exc})") from None
    if codec not in (RAW, DAG_PB):
        raise UnsupportedError(f"CID codec 0x{codec:x} is not supported")
    if hash_code == IDENTITY:
        if len(digest) > MAX_IDENTITY_BYTES:
            raise CidError("identity CID too large")
    elif hash_code not in _HASHERS:
        raise UnsupportedError(f"multihash 0x{hash_code:x} cannot be verified")
    elif hash_code == 0x12 and len(digest) != 32:
        raise CidError("sha2-256 digest must be 32 bytes")
    key = _key(codec, hash_code, digest)
    text = value if isinstance(value, str) else key
    return Cid(version, codec, hash_code, digest, key, text)


def verify_block(cid: Cid, data: bytes) -> None:
    """Raise :class:`VerificationError` unless ``data`` hashes to ``cid``'s multihash."""
    if cid.hash_code == IDENTITY:
        ok = data == cid.digest
    else:
        ok = _HASHERS[cid.hash_code](data) == cid.digest
    if not ok:
        raise VerificationError(f"block does not match {cid.key}")


def raw_cid(data: bytes) -> Cid:
    """The CIDv1 (raw, sha2-256) of some bytes: the content key of anything we fetched."""
    return cid_for(data, RAW)


def cid_for(data: bytes, codec: int, version: int = 1) -> Cid:
    digest = hashlib.sha256(data).digest()
    if version == 0:
        if codec != DAG_PB:
            raise CidError("CIDv0 is dag-pb only")
        text = _b58encode(b"\x12\x20" + digest)
        return Cid(0, DAG_PB, 0x12, digest, _key(DAG_PB, 0x12, digest), text)
    key = _key(codec, 0x12, digest)
    return Cid(1, codec, 0x12, digest, key, key)


def cid_bytes(cid: Cid) -> bytes:
    """Binary CID as used in dag-pb links (CIDv0 is the bare multihash)."""
    if cid.version == 0:
        return bytes([cid.hash_code, len(cid.digest)]) + cid.digest
    return _binary_v1(cid.codec, cid.hash_code, cid.digest)


def identity_content(cid: Cid) -> bytes | None:
    return cid.digest if cid.hash_code == IDENTITY else None
