"""CIDs (v0 and v1, any multibase) and verification of blocks against their multihash."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from multiformats import CID, multihash

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


def parse_cid(value: str | bytes) -> Cid:
    """Parse a CID from text (any multibase, or a bare base58 CIDv0) or binary form."""
    if isinstance(value, str) and (not value or len(value) > 512):
        raise CidError(f"not a CID: {value[:64]!r}")
    try:
        cid = CID.decode(value)
    except Exception as exc:  # the library raises several unrelated types
        shown = value[:64] if isinstance(value, str) else value[:32].hex()
        raise CidError(f"not a CID: {shown!r} ({exc})") from None
    codec = cid.codec.code
    if codec not in (RAW, DAG_PB):
        raise UnsupportedError(f"CID codec {cid.codec.name} (0x{codec:x}) is not supported")
    hash_code = cid.hashfun.code
    digest = bytes(cid.raw_digest)
    if hash_code == IDENTITY:
        if len(digest) > MAX_IDENTITY_BYTES:
            raise CidError("identity CID too large")
    elif hash_code not in _HASHERS:
        raise UnsupportedError(f"multihash {cid.hashfun.name} cannot be verified")
    key = str(cid.set(version=1, base="base32")) if cid.version == 0 else cid.encode("base32")
    text = value if isinstance(value, str) else key
    return Cid(cid.version, codec, hash_code, digest, key, text)


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
    mh = multihash.digest(data, "sha2-256")
    if version == 0:
        return parse_cid(str(CID("base58btc", 0, "dag-pb", mh)))
    name = "raw" if codec == RAW else "dag-pb"
    return parse_cid(CID("base32", 1, name, mh).encode("base32"))


def cid_bytes(cid: Cid) -> bytes:
    """Binary CID as used in dag-pb links (CIDv0 is the bare multihash)."""
    return (
        bytes(CID.decode(cid.key).set(version=cid.version))
        if cid.version
        else bytes(CID.decode(cid.key).digest)
    )


def identity_content(cid: Cid) -> bytes | None:
    return cid.digest if cid.hash_code == IDENTITY else None
