"""Forks: after any sequence of forks (and out-of-order delivery), the domain tables equal a
replay of the final canonical chain alone (docs/stacks.md, "Forks and finality")."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from infra.config import IndexerSettings, Settings
from ops.bench.chaingen import Chain, to_requests
from tests.indexer.conftest_db import fresh_db
from tests.indexer.helpers import query, run_requests, snapshot


def canonical_chain(delivered: list[dict[str, Any]], tip: str) -> list[dict[str, Any]]:
    by_hash = {b["index_block_hash"]: b for b in delivered}
    chain = []
    while tip in by_hash:
        chain.append(by_hash[tip])
        tip = by_hash[tip]["parent_index_block_hash"]
    return chain[::-1]


async def assert_equals_canonical_replay(
    db_url: str, server_url: str, delivered: list[dict[str, Any]]
) -> None:
    (tip,) = query(db_url, "SELECT index_block_hash FROM checkpoints")[0]
    canonical = canonical_chain(delivered, tip)
    assert len(canonical) == max(b["block_height"] for b in delivered), "longest chain wins"
    assert query(db_url, "SELECT count(*) FROM blocks WHERE canonical") == [(len(canonical),)]
    with fresh_db(server_url) as clean:
        await run_requests(clean, [to_requests(canonical)])
        assert snapshot(db_url) == snapshot(clean)


async def test_one_block_fork(db_url: str, server_url: str) -> None:
    chain = Chain(seed=10)
    main = chain.grow(None, 6, "main")
    # a sibling of block 6 arrives (no reorg), then its child makes that branch win
    side = chain.grow(main[4]["index_block_hash"], 2, "side")
    await run_requests(db_url, [[r] for r in to_requests(main + side)])
    assert query(db_url, "SELECT count(*) FROM blocks WHERE NOT canonical") == [(1,)]
    before_rows = snapshot(db_url)
    await assert_equals_canonical_replay(db_url, server_url, main + side)
    assert before_rows["certificates"], "the chain produced certificates"


async def test_three_block_fork_and_back(db_url: str, server_url: str) -> None:
    chain = Chain(seed=11)
    main = chain.grow(None, 8, "main")
    side = chain.grow(main[4]["index_block_hash"], 4, "side")  # heights 6..9 beat 8
    back = chain.grow(main[-1]["index_block_hash"], 2, "back")  # heights 9..10: main wins again
    delivered = main + side + back
    await run_requests(db_url, [[r] for r in to_requests(delivered)])
    await assert_equals_canonical_replay(db_url, server_url, delivered)
    (tip,) = query(db_url, "SELECT index_block_hash FROM checkpoints")[0]
    assert tip == back[-1]["index_block_hash"]


async def test_catch_up_pipeline_across_forks_and_orphans(db_url: str, server_url: str) -> None:
    """Batches in flight on the writer while later ones fork, arrive out of order or repeat."""
    chain = Chain(seed=14)
    main = chain.grow(None, 12, "main")
    side = chain.grow(main[6]["index_block_hash"], 8, "side")  # beats main from height 8
    # 6 before its parent 5 (an orphan); after the fork, main from 7 on: 7 and 8 again
    # (duplicates), then 9..11 (a losing branch, stored)
    delivered = [*main[:5], main[6], main[5], *main[7:9], *side, *main[7:]]
    reqs = to_requests(delivered)
    await run_requests(db_url, [reqs[i : i + 2] for i in range(0, len(reqs), 2)], ahead=True)
    await assert_equals_canonical_replay(db_url, server_url, main + side)
    (tip,) = query(db_url, "SELECT index_block_hash FROM checkpoints")[0]
    assert tip == side[-1]["index_block_hash"]


async def test_fork_inside_one_catch_up_batch(db_url: str, server_url: str) -> None:
    chain = Chain(seed=12)
    main = chain.grow(None, 5, "main")
    side = chain.grow(main[1]["index_block_hash"], 5, "side")
    delivered = main + side
    await run_requests(db_url, [to_requests(delivered)])
    await assert_equals_canonical_replay(db_url, server_url, delivered)


@pytest.mark.parametrize("ahead", [False, True], ids=["tip", "catch-up"])
async def test_fork_beyond_finality_is_held_until_the_horizon_allows_it(
    db_url: str, server_url: str, ahead: bool
) -> None:
    chain = Chain(seed=13)
    main = chain.grow(None, 6, "main")
    side = chain.grow(main[0]["index_block_hash"], 7, "side")  # heights 2..8, wins at 7
    await run_requests(db_url, [to_requests(main)])
    before = snapshot(db_url)
    strict = Settings(database_url=SecretStr(db_url), indexer=IndexerSettings(finality_depth=3))
    outcomes = await run_requests(db_url, [to_requests(side)], settings=strict, ahead=ahead)
    # The siblings at or below the tip are kept; the one that would roll 5 blocks back is held,
    # and nothing after it is processed.
    assert [o.status for o in outcomes] == ["applied"] * 5 + ["held", "held"]
    assert "finality horizon" in (outcomes[5].reason or "")
    assert snapshot(db_url) == before
    holds = "SELECT kind, index_block_hash, attempts, resolved_at IS NULL FROM chain_holds"
    assert query(db_url, holds) == [("deep_fork", side[5]["index_block_hash"], 1, True)]
    # The node retries: still held, counted, recorded once.
    again = await run_requests(db_url, [to_requests(side[5:6])], settings=strict)
    assert [o.status for o in again] == ["held"]
    assert query(db_url, holds) == [("deep_fork", side[5]["index_block_hash"], 2, True)]
    stored = "SELECT count(*) FROM raw_requests WHERE strpos(error, 'held:') = 1"
    assert query(db_url, stored) == [(1,)]
    # The operator raises the horizon: the retry applies the fork and resolves the hold.
    wide = Settings(database_url=SecretStr(db_url), indexer=IndexerSettings(finality_depth=10))
    done = await run_requests(db_url, [to_requests(side[5:])], settings=wide)
    assert [o.status for o in done] == ["applied", "applied"]
    assert query(db_url, "SELECT count(*) FROM chain_holds WHERE resolved_at IS NULL") == [(0,)]
    assert query(db_url, "SELECT count(*) FROM raw_requests WHERE error IS NOT NULL") == [(0,)]
    await assert_equals_canonical_replay(db_url, server_url, main + side)


@st.composite
def fork_plans(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]], bool, int, bool]:
    seed = draw(st.integers(0, 10_000))
    forks = draw(st.lists(st.tuples(st.integers(0, 6), st.integers(1, 5)), min_size=1, max_size=4))
    shuffle = draw(st.booleans())
    batch = draw(st.sampled_from([1, 3, 50]))
    ahead = draw(st.booleans())  # the pipelined catch-up path, or one batch at a time
    return seed, forks, shuffle, batch, ahead


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(plan=fork_plans())
async def test_random_fork_sequences(server_url: str, template_db: str, plan: Any) -> None:
    seed, forks, shuffle, batch, ahead = plan
    chain = Chain(seed=seed, txs_per_block=2)
    delivered = chain.grow(None, 5, "main")
    tips = [b["index_block_hash"] for b in delivered]
    for i, (back, length) in enumerate(forks):
        # fork off a block `back` below the newest one delivered so far
        base = tips[max(0, len(tips) - 1 - back)]
        branch = chain.grow(base, length, f"f{i}")
        delivered += branch
        tips += [b["index_block_hash"] for b in branch]
    order = list(delivered)
    if shuffle:
        random.Random(seed).shuffle(order)
    reqs = to_requests(order)
    with fresh_db(server_url) as db_url:
        batches = [reqs[i : i + batch] for i in range(0, len(reqs), batch)]
        await run_requests(db_url, batches, ahead=ahead)
        await assert_equals_canonical_replay(db_url, server_url, delivered)


def test_plan_helper_is_deterministic() -> None:
    a = Chain(seed=5).grow(None, 3, "main")
    b = Chain(seed=5).grow(None, 3, "main")
    assert json.dumps(a) == json.dumps(b)
