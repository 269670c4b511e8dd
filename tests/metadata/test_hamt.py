"""HAMT-sharded directories: the hash against SMHasher's published check value, and lookups
through a real gateway in a 3,000-entry collection (sub-shards at two levels)."""

from __future__ import annotations

import pytest

from indexer.metadata.cid import Cid
from indexer.metadata.devgateway import RunningGateway
from indexer.metadata.errors import ResolutionFailed
from indexer.metadata.hamt import build_sharded_directory, murmur3_x64_128
from indexer.metadata.resolver import Resolver
from tests.metadata.conftest import Store, fast_settings


def test_murmur3_x64_128_matches_smhasher_verification_value() -> None:
    # SMHasher's VerificationTest: hash keys {0..i-1} with seed 256-i, hash the concatenated
    # results with seed 0, read the first four bytes little-endian. Published: 0x6384BA69.
    out = b""
    for i in range(256):
        h1, h2 = murmur3_x64_128(bytes(range(i)), 256 - i)
        out += h1.to_bytes(8, "little") + h2.to_bytes(8, "little")
    h1, _ = murmur3_x64_128(out, 0)
    assert int.from_bytes(h1.to_bytes(8, "little")[:4], "little") == 0x6384BA69


async def test_lookup_in_a_sharded_collection(store: Store, gw: RunningGateway) -> None:
    entries: dict[str, tuple[Cid, int]] = {}
    for i in range(3000):
        name = f"{i}.json"
        if i in (7, 1234, 2999):
            entries[name] = (store.doc(name=f"token {i}"), 40)
        else:  # the other entries need no content: the lookup never visits them
            entries[name] = (store.raw(b"{}" + str(i).encode()), 4)
    root, blocks = build_sharded_directory(entries)
    for key, block in blocks.items():
        (store.root / key).write_bytes(block)
    assert len(blocks) > 256  # buckets with several names became sub-shards
    resolver = Resolver.create(fast_settings(gw.url))
    try:
        for i in (7, 1234, 2999):
            res = await resolver.resolve(f"ipfs://{root}/{i}.json")
            assert res.document["name"] == f"token {i}"
        hits_before = sum(gw.gateway.hits.values())
        with pytest.raises(ResolutionFailed) as err:
            await resolver.resolve(f"ipfs://{root}/3000.json")
        assert err.value.reason == "not_found" and err.value.permanent
        assert sum(gw.gateway.hits.values()) - hits_before <= 3  # a path, not a scan
    finally:
        await resolver.aclose()
