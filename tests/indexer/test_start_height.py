"""`indexer.start_height`: an empty database takes the block at that height as its root; lower
blocks are stored raw and ignored, forks above the root work, and a sibling of the root (its
parent below the root as well) replaces it when its branch wins, within the finality horizon."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from db.session import create_engine, engine_scope
from indexer.api_source import ApiSource
from indexer.pipeline import Indexer
from indexer.replay import replay_file
from indexer.tsv import write_requests
from infra.config import IndexerSettings, Settings
from ops.bench.chaingen import Chain, to_requests
from ops.bench.fake_stacks_api import FakeApi, serve
from tests.indexer.conftest_db import fresh_db
from tests.indexer.helpers import query, run_requests, snapshot

START = 5


def from_start(db_url: str, start: int = START) -> Settings:
    return Settings(database_url=SecretStr(db_url), indexer=IndexerSettings(start_height=start))


async def test_replay_from_start_height(db_url: str, server_url: str, tmp_path: Path) -> None:
    blocks = Chain(seed=50).grow(None, 12, "main")
    reqs = to_requests(blocks)
    tsv = tmp_path / "chain.tsv"
    with tsv.open("w") as out:
        write_requests(out, [(i + 1, "2026-01-01 00:00:00+00", p, b) for i, (p, b) in
                             enumerate(reqs)])  # fmt: skip
    async with engine_scope(db_url, pool_size=1) as engine:
        stats = await replay_file(engine, from_start(db_url), tsv, progress=False, batch_size=3)
    assert stats.blocks == 12 - (START - 1)
    assert stats.rejected == 0
    # every request is kept raw, but only blocks from the root on are indexed
    assert query(db_url, "SELECT count(*) FROM raw_requests WHERE error IS NULL") == [(12,)]
    assert query(db_url, "SELECT min(block_height), count(*) FROM blocks WHERE canonical") == [
        (START, 12 - (START - 1))
    ]
    assert query(db_url, "SELECT count(*) FROM blocks WHERE NOT canonical OR orphan") == [(0,)]
    assert query(db_url, "SELECT block_height FROM checkpoints") == [(12,)]
    replayed = snapshot(db_url)
    assert sum(len(rows) for rows in replayed.values()) > 10
    with fresh_db(server_url) as alone:
        outcomes = await run_requests(alone, [reqs[START - 1 :]], settings=from_start(alone))
        assert {o.status for o in outcomes} == {"applied"}
        assert snapshot(alone) == replayed


async def test_blocks_below_start_are_ignored_not_orphaned(db_url: str) -> None:
    blocks = Chain(seed=51).grow(None, 7, "main")
    reqs = to_requests(blocks)
    # out of order: a block above the root waits for it; blocks below it never count
    outcomes = await run_requests(
        db_url, [[reqs[5]], reqs[:4], [reqs[4]], [reqs[6]]], settings=from_start(db_url)
    )
    assert [o.status for o in outcomes] == ["orphan"] + ["ignored"] * 4 + ["applied"] * 2
    assert query(db_url, "SELECT count(*) FROM blocks WHERE canonical") == [(3,)]
    assert query(db_url, "SELECT count(*) FROM blocks WHERE orphan") == [(0,)]


async def test_fork_above_the_root(db_url: str, server_url: str) -> None:
    chain = Chain(seed=52)
    main = chain.grow(None, 10, "main")
    side = chain.grow(main[6]["index_block_hash"], 5, "side")  # heights 8..12 beat 10
    await run_requests(db_url, [[r] for r in to_requests(main + side)], settings=from_start(db_url))
    canonical = main[START - 1 : 7] + side
    assert query(db_url, "SELECT index_block_hash FROM checkpoints") == [
        (side[-1]["index_block_hash"],)
    ]
    assert query(db_url, "SELECT count(*) FROM blocks WHERE canonical") == [(len(canonical),)]
    assert query(db_url, "SELECT count(*) FROM blocks WHERE NOT canonical") == [(3,)]
    with fresh_db(server_url) as clean:
        await run_requests(clean, [to_requests(canonical)], settings=from_start(clean))
        assert snapshot(db_url) == snapshot(clean)


@pytest.mark.parametrize("root_first", [True, False])
async def test_a_sibling_of_the_root_replaces_it_when_its_branch_wins(
    db_url: str, server_url: str, root_first: bool
) -> None:
    chain = Chain(seed=53)
    main = chain.grow(None, 8, "main")
    side = chain.grow(main[2]["index_block_hash"], 7, "side")  # heights 4..10: needs block 4
    await run_requests(db_url, [to_requests(main)], settings=from_start(db_url))
    # side[1] is at the root's height and its parent is below the root: a root of its own
    order = side if root_first else side[2:] + side[:2]
    outcomes = await run_requests(
        db_url, [[r] for r in to_requests(order)], settings=from_start(db_url)
    )
    assert "rejected" not in {o.status for o in outcomes}
    canonical = side[1:]
    assert query(db_url, "SELECT index_block_hash FROM checkpoints") == [
        (side[-1]["index_block_hash"],)
    ]
    assert query(db_url, "SELECT count(*) FROM blocks WHERE canonical") == [(len(canonical),)]
    assert query(db_url, "SELECT count(*) FROM blocks WHERE orphan") == [(0,)]
    with fresh_db(server_url) as clean:
        await run_requests(clean, [to_requests(side)], settings=from_start(clean))
        assert snapshot(db_url) == snapshot(clean)
        same = "SELECT index_block_hash, block_height FROM blocks WHERE canonical ORDER BY 2"
        assert query(db_url, same) == query(clean, same)


async def test_a_fork_at_the_root_beyond_the_horizon_is_held(db_url: str) -> None:
    chain = Chain(seed=55)
    main = chain.grow(None, 8, "main")
    side = chain.grow(main[3]["index_block_hash"], 6, "side")  # its root at 5, tip 10
    strict = Settings(
        database_url=SecretStr(db_url),
        indexer=IndexerSettings(start_height=START, finality_depth=3),
    )
    await run_requests(db_url, [to_requests(main)], settings=strict)
    before = snapshot(db_url)
    outcomes = await run_requests(db_url, [to_requests(side)], settings=strict)
    held = [o for o in outcomes if o.status == "held"]
    assert held and "finality horizon" in (held[0].reason or "")
    assert snapshot(db_url) == before
    assert query(db_url, "SELECT kind FROM chain_holds WHERE resolved_at IS NULL") == [
        ("deep_fork",)
    ]


async def test_api_source_backfills_from_start_height(db_url: str, server_url: str) -> None:
    main = Chain(seed=54).grow(None, 7, "main")
    server, port, task = await serve(FakeApi(main).app())
    engine = create_engine(db_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            indexer = Indexer(conn, from_start(db_url, 3))
            await indexer.start()
            source = ApiSource(indexer, f"http://127.0.0.1:{port}")
            assert await source.reconcile() == 5
            assert await source.reconcile() == 0  # the walk back stops at agreement
            await source.client.aclose()
    finally:
        await engine.dispose()
        server.should_exit = True
        await task
    # blocks 1 and 2 were never fetched: not even their raw requests exist
    assert query(db_url, "SELECT count(*) FROM raw_requests") == [(5,)]
    assert query(db_url, "SELECT min(block_height), max(block_height) FROM blocks") == [(3, 7)]
    with fresh_db(server_url) as clean:
        await run_requests(clean, [to_requests(main[2:])], settings=from_start(clean, 3))
        assert snapshot(db_url) == snapshot(clean)
