"""The block pipeline end to end on a real PostgreSQL: raw requests, blocks, checkpoint, domain
rows, duplicates, orphans."""

from __future__ import annotations

from ops.bench.chaingen import Chain, to_requests
from tests.indexer.helpers import query, run_requests, snapshot


async def test_chain_is_stored_and_checkpointed(db_url: str) -> None:
    chain = Chain(seed=1)
    blocks = chain.grow(None, 6, "main")
    outcomes = await run_requests(db_url, [to_requests(blocks)])
    assert [o.status for o in outcomes] == ["applied"] * 6
    assert query(db_url, "SELECT count(*) FROM raw_requests WHERE error IS NULL") == [(6,)]
    assert query(db_url, "SELECT count(*) FROM blocks WHERE canonical") == [(6,)]
    tip = blocks[-1]["index_block_hash"]
    assert query(db_url, "SELECT index_block_hash, block_height FROM checkpoints") == [(tip, 6)]
    # one current version per certificate, and every mint has a transfer row
    minted = query(db_url, "SELECT count(*) FROM transfers WHERE kind = 'mint'")[0][0]
    assert minted > 0
    assert query(db_url, "SELECT count(DISTINCT token_id) FROM certificates") == query(
        db_url, "SELECT count(*) FROM certificates WHERE block_to IS NULL"
    )
    assert query(db_url, "SELECT status FROM facilities WHERE block_to IS NULL") == [("active",)]
    assert query(db_url, "SELECT count(*) FROM verifiers") == [(1,)]


async def test_batch_and_tip_modes_write_the_same_rows(db_url: str, server_url: str) -> None:
    chain = Chain(seed=2)
    blocks = chain.grow(None, 8, "main")
    await run_requests(db_url, [[r] for r in to_requests(blocks)])
    one_by_one = snapshot(db_url)
    assert sum(len(v) for v in one_by_one.values()) > 20
    from tests.indexer.conftest_db import fresh_db

    with fresh_db(server_url) as other:
        await run_requests(other, [to_requests(blocks)])
        assert snapshot(other) == one_by_one


async def test_duplicates_are_no_ops(db_url: str) -> None:
    blocks = Chain(seed=3).grow(None, 3, "main")
    reqs = to_requests(blocks)
    await run_requests(db_url, [reqs])
    before = snapshot(db_url)
    outcomes = await run_requests(db_url, [reqs, reqs[:1]])
    assert {o.status for o in outcomes} == {"duplicate"}
    assert snapshot(db_url) == before
    assert query(db_url, "SELECT count(*) FROM raw_requests") == [(3,)]


async def test_block_with_unknown_parent_waits_for_it(db_url: str, server_url: str) -> None:
    blocks = Chain(seed=4).grow(None, 5, "main")
    reqs = to_requests(blocks)
    # 1, 2, then 4 and 5 before 3
    outcomes = await run_requests(db_url, [reqs[:2], [reqs[3]], [reqs[4]], [reqs[2]]])
    assert [o.status for o in outcomes] == ["applied", "applied", "orphan", "orphan", "applied"]
    assert query(db_url, "SELECT count(*) FROM blocks WHERE canonical") == [(5,)]
    assert query(db_url, "SELECT count(*) FROM blocks WHERE orphan") == [(0,)]
    from tests.indexer.conftest_db import fresh_db

    with fresh_db(server_url) as other:
        await run_requests(other, [reqs])
        assert snapshot(other) == snapshot(db_url)


async def test_replay_with_parse_workers_matches(db_url: str, server_url: str, tmp_path) -> None:
    from pathlib import Path

    from pydantic import SecretStr

    from db.session import engine_scope
    from indexer.replay import replay_file
    from indexer.tsv import write_requests
    from infra.config import Settings

    chain = Chain(seed=5)
    main = chain.grow(None, 12, "main")
    side = chain.grow(main[7]["index_block_hash"], 6, "side")
    reqs = to_requests(main + side)
    tsv = Path(tmp_path) / "chain.tsv"
    with tsv.open("w") as out:
        write_requests(out, [(i + 1, "2026-01-01 00:00:00+00", p, b) for i, (p, b) in
                             enumerate(reqs)])  # fmt: skip
    async with engine_scope(db_url, pool_size=1) as engine:
        stats = await replay_file(
            engine,
            Settings(database_url=SecretStr(db_url)),
            tsv,
            progress=False,
            batch_size=4,
            parse_workers=1,
        )
    assert stats.blocks == len(reqs)
    from tests.indexer.conftest_db import fresh_db

    with fresh_db(server_url) as other:
        await run_requests(other, [[r] for r in reqs])
        assert snapshot(other) == snapshot(db_url)
