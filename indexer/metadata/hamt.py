"""UnixFS HAMT-sharded directories (what Kubo makes of large directories, e.g. a collection's
10,000 ``N.json`` files): lookup of one name, and a builder for tests and the dev gateway.

Per the UnixFS spec: a name is hashed with murmur3-x64-64 (the first 64-bit half of
MurmurHash3_x64_128, seed 0, serialised big-endian); each level consumes log2(fanout) bits of
that hash, most significant first; a link named with just the upper-case hex index is a
sub-shard, a link named index + name is the entry itself.
"""

from __future__ import annotations

from indexer.metadata.cid import DAG_PB, Cid, cid_for
from indexer.metadata.dagpb import PbLink, PbNode, UnixFsData, UnixFsType, encode_node
from indexer.metadata.dagpb import encode_unixfs as _encode_unixfs
from indexer.metadata.errors import DagPbError, UnsupportedError

MURMUR3_X64_64 = 0x22
MAX_FANOUT = 1024
_M64 = (1 << 64) - 1
_C1 = 0x87C37B91114253D5
_C2 = 0x4CF5AD432745937F


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _fmix(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _M64
    k ^= k >> 33
    return k


def murmur3_x64_128(data: bytes, seed: int = 0) -> tuple[int, int]:
    """MurmurHash3_x64_128 as (h1, h2)."""
    h1 = h2 = seed & _M64
    n = len(data)
    nblocks = n // 16
    for i in range(nblocks):
        k1 = int.from_bytes(data[i * 16 : i * 16 + 8], "little")
        k2 = int.from_bytes(data[i * 16 + 8 : i * 16 + 16], "little")
        k1 = (_rotl((k1 * _C1) & _M64, 31) * _C2) & _M64
        h1 ^= k1
        h1 = ((_rotl(h1, 27) + h2) * 5 + 0x52DCE729) & _M64
        k2 = (_rotl((k2 * _C2) & _M64, 33) * _C1) & _M64
        h2 ^= k2
        h2 = ((_rotl(h2, 31) + h1) * 5 + 0x38495AB5) & _M64
    tail = data[nblocks * 16 :]
    k1 = k2 = 0
    if len(tail) > 8:
        k2 = int.from_bytes(tail[8:], "little")
        k2 = (_rotl((k2 * _C2) & _M64, 33) * _C1) & _M64
        h2 ^= k2
    if tail:
        k1 = int.from_bytes(tail[:8], "little")
        k1 = (_rotl((k1 * _C1) & _M64, 31) * _C2) & _M64
        h1 ^= k1
    h1 ^= n
    h2 ^= n
    h1 = (h1 + h2) & _M64
    h2 = (h2 + h1) & _M64
    h1 = _fmix(h1)
    h2 = _fmix(h2)
    h1 = (h1 + h2) & _M64
    h2 = (h2 + h1) & _M64
    return h1, h2


def hamt_hash(name: str) -> bytes:
    return murmur3_x64_128(name.encode())[0].to_bytes(8, "big")


def _bits_per_level(fanout: int | None) -> int:
    if fanout is None or fanout < 2 or fanout > MAX_FANOUT or fanout & (fanout - 1):
        raise DagPbError(f"HAMT fanout {fanout} is not a power of two up to {MAX_FANOUT}")
    return fanout.bit_length() - 1


def _index(digest: bytes, level: int, bits: int) -> int:
    total = len(digest) * 8
    start = level * bits
    if start + bits > total:
        raise UnsupportedError("HAMT deeper than one 64-bit hash")
    value = int.from_bytes(digest, "big")
    return (value >> (total - start - bits)) & ((1 << bits) - 1)


def _prefix(index: int, fanout: int) -> str:
    width = len(f"{fanout - 1:X}")
    return f"{index:0{width}X}"


def shard_step(node: PbNode, fs: UnixFsData, name: str, level: int) -> tuple[Cid, bool] | None:
    """One level of a lookup: (child, is the entry itself) or None when the name is absent."""
    if fs.hash_type != MURMUR3_X64_64:
        raise UnsupportedError(f"HAMT hash function 0x{fs.hash_type or 0:x}")
    bits = _bits_per_level(fs.fanout)
    assert fs.fanout is not None
    prefix = _prefix(_index(hamt_hash(name), level, bits), fs.fanout)
    for link in node.links:
        link_name = link.name or ""
        if not link_name.startswith(prefix):
            continue
        if link_name == prefix:
            return link.cid, False
        if link_name[len(prefix) :] == name:
            return link.cid, True
    return None


def build_sharded_directory(
    entries: dict[str, tuple[Cid, int]], *, fanout: int = 256, cid_version: int = 1
) -> tuple[Cid, dict[str, bytes]]:
    """A HAMT directory of ``entries`` (name -> (cid, size)); returns root and its blocks."""
    bits = _bits_per_level(fanout)
    blocks: dict[str, bytes] = {}

    def build(items: dict[str, tuple[Cid, int]], level: int) -> tuple[Cid, int]:
        buckets: dict[int, dict[str, tuple[Cid, int]]] = {}
        for name, value in items.items():
            buckets.setdefault(_index(hamt_hash(name), level, bits), {})[name] = value
        links: list[PbLink] = []
        for idx in sorted(buckets):
            bucket = buckets[idx]
            if len(bucket) == 1:
                ((name, (cid, size)),) = bucket.items()
                links.append(PbLink(cid, _prefix(idx, fanout) + name, size))
            else:
                sub, size = build(bucket, level + 1)
                links.append(PbLink(sub, _prefix(idx, fanout), size))
        bitfield = sum(1 << i for i in buckets).to_bytes(fanout // 8, "big")
        data = UnixFsData(UnixFsType.HAMT_SHARD, bitfield, hash_type=MURMUR3_X64_64, fanout=fanout)
        block = encode_node(links, _encode_unixfs(data))
        cid = cid_for(block, DAG_PB, cid_version)
        blocks[cid.key] = block
        return cid, len(block) + sum(link.tsize or 0 for link in links)

    root, _ = build(entries, 0)
    return root, blocks
