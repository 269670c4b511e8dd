"""The mempool table follows the chain: a transaction a canonical block carries leaves the
mempool (`mined`, with its block), returns to it (`pending`) when that block is rolled back, and
is mined again when a branch carrying it wins; a drop reported after it was mined does not
overrule the chain. Checked with generated forks and with the real recordings' mempool rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from infra.config import IndexerSettings, Settings
from ops.bench.chaingen import Chain, to_requests
from tests import recordings
from tests.indexer.helpers import query, run_requests


def _mempool(db_url: str) -> dict[str, tuple[str, str | None]]:
    rows = query(db_url, "SELECT txid, status, index_block_hash FROM mempool_txs")
    return {txid: (status, block) for txid, status, block in rows}


def _raw_txs(block: dict) -> list[str]:
    return [t["raw_tx"] for t in block["transactions"] if t["raw_tx"] != "0x00"]


@pytest.mark.parametrize("ahead", [False, True], ids=["tip", "catch-up"])
async def test_mined_leaves_and_orphaned_returns(db_url: str, ahead: bool) -> None:
    chain = Chain(seed=31)
    main = chain.grow(None, 4, "main")
    side = chain.grow(main[1]["index_block_hash"], 3, "side")  # heights 3..5 beat main's 4
    back = chain.grow(main[-1]["index_block_hash"], 2, "back")  # heights 5..6: main wins again
    block3 = main[2]
    mined = {t["txid"] for t in block3["transactions"]}
    never = _raw_txs(Chain(seed=33).grow(None, 3, "elsewhere")[2])[:1]  # in no delivered block
    announce = ("/new_mempool_tx", json.dumps(_raw_txs(block3) + never))
    blocks = to_requests(main + side + back)

    await run_requests(db_url, [blocks[:2], [announce], blocks[2:4]], ahead=ahead)
    pool = _mempool(db_url)
    assert {t for t, (s, _) in pool.items() if s == "mined"} == mined
    assert {b for s, b in pool.values() if s == "mined"} == {block3["index_block_hash"]}
    assert [s for t, (s, _) in pool.items() if t not in mined] == ["pending"]

    # A drop reported for a mined transaction: the chain has the last word.
    some = sorted(mined)[0]
    drop = json.dumps({"dropped_txids": [some], "reason": "ReplaceByFee", "new_txid": None})
    await run_requests(db_url, [[("/drop_mempool_tx", drop)]], ahead=ahead)
    assert _mempool(db_url)[some][0] == "mined"

    await run_requests(db_url, [blocks[4:7]], ahead=ahead)  # the side branch wins
    assert query(db_url, "SELECT block_height FROM checkpoints") == [(5,)]
    assert {s for s, _ in _mempool(db_url).values()} == {"pending"}, "all back in the mempool"

    await run_requests(db_url, [blocks[7:]], ahead=ahead)  # main (with block 3) wins again
    pool = _mempool(db_url)
    assert {t for t, (s, _) in pool.items() if s == "mined"} == mined
    assert {b for s, b in pool.values() if s == "mined"} == {block3["index_block_hash"]}


async def test_announced_after_its_block_is_mined(db_url: str) -> None:
    """A node replays its mempool after a restart: a transaction already in a canonical block
    (stored, since it touched a watched contract) is not pending."""
    main = Chain(seed=32).grow(None, 3, "main")
    late = ("/new_mempool_tx", json.dumps(_raw_txs(main[2])))
    await run_requests(db_url, [to_requests(main), [late]])
    pool = _mempool(db_url)
    assert pool and {b for _, b in pool.values()} == {main[2]["index_block_hash"]}
    assert {s for s, _ in pool.values()} == {"mined"}


def _mempool_recordings() -> list[object]:
    found = [
        p
        for p in recordings.files()
        if any(path == "/new_mempool_tx" for path, _ in recordings.requests(p))
    ]
    if not found:
        return [pytest.param(None, marks=pytest.mark.skip(reason=recordings.ABSENT))]
    return [pytest.param(p, id=p.name) for p in found]


@pytest.mark.parametrize("path", _mempool_recordings())
async def test_real_recordings(db_url: str, path: Path) -> None:
    """Every mempool transaction of a real recording is mined in the block the recording's
    canonical chain carries it in, else dropped if the node said so, else pending."""
    reqs = list(recordings.requests(path))
    start = recordings.start_height(path)
    implied = recordings.implied_canonical(reqs, start)
    canonical = set(implied.canonical)
    carried: dict[str, str] = {}
    dropped: set[str] = set()
    for p, payload in reqs:
        if p == "/drop_mempool_tx":
            dropped.update(json.loads(payload)["dropped_txids"])
        if p == "/new_block":
            b = json.loads(payload)
            if b["index_block_hash"] in canonical:
                for t in b["transactions"]:
                    carried[t["txid"]] = b["index_block_hash"]
    settings = Settings(database_url=SecretStr(db_url), indexer=IndexerSettings(start_height=start))
    await run_requests(db_url, [[r] for r in reqs], settings)
    pool = _mempool(db_url)
    assert pool, "the recording announces transactions"
    expected = {
        t: ("mined", carried[t])
        if t in carried
        else ("dropped", None)
        if t in dropped
        else ("pending", None)
        for t in pool
    }
    assert pool == expected
    assert any(s == "mined" for s, _ in pool.values()), "some announced transaction was mined"
