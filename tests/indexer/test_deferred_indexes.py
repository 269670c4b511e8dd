"""Secondary indexes deferred by a catch-up replay into an empty database (`db.indexes`): built
at its end, by the next indexer start or by `recchain migrate` after a kill, never deferred when
something is indexed already, and the data is the same as with the indexes maintained."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from db import indexes
from db.migrate import upgrade
from db.session import create_engine
from indexer.pipeline import Indexer
from indexer.replay import replay_file
from indexer.tsv import write_requests
from infra.config import Settings
from ops.bench.chaingen import GENESIS, Chain, to_requests
from ops.bench.skip import foreign_block
from tests.indexer.conftest_db import fresh_db
from tests.indexer.helpers import query, snapshot

INDEXES = "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"


def _tsv(tmp_path: Path, blocks: list[dict[str, object]]) -> Path:
    tsv = tmp_path / "chain.tsv"
    with tsv.open("w") as out:
        rows = [
            (i + 1, "2026-01-01 00:00:00+00", p, b) for i, (p, b) in enumerate(to_requests(blocks))
        ]
        write_requests(out, rows)
    return tsv


async def _replay(db_url: str, tsv: Path, defer_from: int) -> None:
    engine = create_engine(db_url, pool_size=2)
    try:
        await replay_file(
            engine,
            Settings(database_url=SecretStr(db_url)),
            tsv,
            progress=False,
            batch_size=8,
            defer_indexes_from=defer_from,
        )
    finally:
        await engine.dispose()


async def _indexer_call(db_url: str, method: str, **start: bool) -> int:
    engine = create_engine(db_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            indexer = Indexer(conn, Settings(database_url=SecretStr(db_url)))
            await indexer.start(**start)
            return int(await getattr(indexer, method)())
    finally:
        await engine.dispose()


def _index_names(db_url: str) -> set[str]:
    return {name for _, name, _ in query(db_url, INDEXES)}


def _blocks() -> list[dict[str, object]]:
    chain = Chain(seed=41, txs_per_block=4)
    main = chain.grow(None, 50, "main")
    side = chain.grow(main[30]["index_block_hash"], 6, "side")  # a fork: a rollback mid-replay
    return main[:40] + side + main[40:]


async def test_a_replay_from_empty_builds_what_it_deferred_and_stores_the_same(
    db_url: str, server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tsv = _tsv(tmp_path, _blocks())
    schema = set(query(db_url, INDEXES))
    dropped: list[int] = []
    defer = indexes.defer

    async def spy(pg: Any) -> int:
        dropped.append(await defer(pg))
        return dropped[-1]

    monkeypatch.setattr(indexes, "defer", spy)
    await _replay(db_url, tsv, defer_from=0)
    assert dropped and dropped[0] > 10
    assert set(query(db_url, INDEXES)) == schema  # same names, same definitions
    assert query(db_url, "SELECT count(*) FROM deferred_indexes") == [(0,)]
    with fresh_db(server_url) as maintained:
        await _replay(maintained, tsv, defer_from=10**9)
        assert snapshot(db_url) == snapshot(maintained)
        same = "SELECT index_block_hash, block_height, canonical FROM blocks ORDER BY 1"
        assert query(db_url, same) == query(maintained, same)
        events = "SELECT index_block_hash, txid, event_index, kind, canonical FROM events"
        assert sorted(query(db_url, events)) == sorted(query(maintained, events))


def _after_foreign(blocks: list[dict[str, Any]], foreign: int) -> list[dict[str, Any]]:
    """`foreign` blocks of others' traffic, then `blocks` (their chain) on top of them."""
    rng = random.Random(foreign)
    made, parent = [], GENESIS
    for height in range(1, foreign + 1):
        made.append(foreign_block(height, parent, 3, rng))
        parent = made[-1]["index_block_hash"]
    for block in blocks:
        moved = dict(block)
        moved["block_height"] = block["block_height"] + foreign
        moved["burn_block_height"] = block["burn_block_height"] + foreign
        if block["parent_index_block_hash"] == GENESIS:
            moved["parent_index_block_hash"] = parent
        made.append(moved)
    return made


def _spy_on_defer(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """(indexes dropped, blocks and events committed before) of each `indexes.defer` call."""
    calls: list[tuple[int, int, int]] = []
    defer = indexes.defer

    async def spy(pg: Any) -> int:
        cur = await pg.execute("SELECT (SELECT count(*) FROM blocks), count(*) FROM events")
        blocks, events = await cur.fetchone()
        calls.append((await defer(pg), blocks, events))
        return calls[-1][0]

    monkeypatch.setattr(indexes, "defer", spy)
    return calls


async def test_an_archive_of_others_traffic_drops_and_builds_none(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = set(query(db_url, INDEXES))
    calls = _spy_on_defer(monkeypatch)
    await _replay(db_url, _tsv(tmp_path, _after_foreign([], 40)), defer_from=0)
    assert query(db_url, "SELECT count(*) FROM blocks WHERE canonical") == [(40,)]
    assert calls == []
    assert set(query(db_url, INDEXES)) == schema
    assert query(db_url, "SELECT count(*) FROM deferred_indexes") == [(0,)]


async def test_indexes_are_dropped_when_the_first_watched_events_come(
    db_url: str, server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tsv = _tsv(tmp_path, _after_foreign(_blocks(), 30))
    schema = set(query(db_url, INDEXES))
    calls = _spy_on_defer(monkeypatch)
    await _replay(db_url, tsv, defer_from=0)
    # Once, after foreign blocks went in with every index in place, before the first event.
    assert len(calls) == 1 and calls[0][0] > 10
    _, blocks, events = calls[0]
    assert 0 < blocks <= 30 and events == 0
    assert set(query(db_url, INDEXES)) == schema
    assert query(db_url, "SELECT count(*) FROM deferred_indexes") == [(0,)]
    with fresh_db(server_url) as maintained:
        await _replay(maintained, tsv, defer_from=10**9)
        assert snapshot(db_url) == snapshot(maintained)
        events = "SELECT index_block_hash, txid, event_index, kind, canonical FROM events"
        assert sorted(query(db_url, events)) == sorted(query(maintained, events))


async def test_deferred_are_the_random_key_secondary_indexes_only(db_url: str) -> None:
    before = {(t, n): d for t, n, d in query(db_url, INDEXES)}
    assert await _indexer_call(db_url, "defer_indexes", keep_deferred=True) > 0
    after = {(t, n) for t, n, _ in query(db_url, INDEXES)}
    dropped = set(before) - after
    recorded = query(db_url, "SELECT table_name, name, definition FROM deferred_indexes")
    assert {(t, n) for t, n, _ in recorded} == dropped
    assert {(t, n): d for t, n, d in recorded} == {k: before[k] for k in dropped}
    assert ("events", "ix_events_txid") in dropped
    assert ("certificates", "ix_certificates_owner_current") in dropped
    for table, name in dropped:
        assert table in indexes.DEFERRABLE_TABLES
        assert "UNIQUE" not in before[(table, name)]
    # Kept: the unique ones, those led by a height, and every table the indexer looks up by.
    for kept in (
        "uq_certificates_current",
        "pk_events",
        "ix_events_height",
        "ix_certificates_block_to",
        "uq_raw_requests_payload_hash",
        "ix_blocks_parent",
    ):
        assert kept in {n for _, n in after}  # fmt: skip


async def test_an_interrupted_replay_leaves_them_to_the_next_start(db_url: str) -> None:
    full = _index_names(db_url)
    deferred = await _indexer_call(db_url, "defer_indexes", keep_deferred=True)
    assert len(_index_names(db_url)) == len(full) - deferred
    # A resumed replay keeps them deferred (it builds them at its end) ...
    assert await _indexer_call(db_url, "defer_indexes", keep_deferred=True) == deferred
    assert len(_index_names(db_url)) == len(full) - deferred
    # ... any other start builds them first.
    assert await _indexer_call(db_url, "build_deferred_indexes") == 0
    assert _index_names(db_url) == full
    assert query(db_url, "SELECT count(*) FROM deferred_indexes") == [(0,)]


async def test_migrate_builds_deferred_indexes_first(db_url: str) -> None:
    full = _index_names(db_url)
    assert await _indexer_call(db_url, "defer_indexes", keep_deferred=True) > 0
    upgrade(db_url)
    assert _index_names(db_url) == full
    assert query(db_url, "SELECT count(*) FROM deferred_indexes") == [(0,)]


async def test_nothing_is_deferred_once_something_is_indexed(db_url: str, tmp_path: Path) -> None:
    blocks = _blocks()
    await _replay(db_url, _tsv(tmp_path, blocks[:10]), defer_from=10**9)
    full = _index_names(db_url)
    assert await _indexer_call(db_url, "defer_indexes", keep_deferred=True) == 0
    assert _index_names(db_url) == full
