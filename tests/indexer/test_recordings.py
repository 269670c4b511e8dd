"""Every real event-observer recording (tests/recordings.py) replays, through `recchain replay`'s
pipeline and through the observer server over loopback HTTP, into a real PostgreSQL; the
canonical chain the indexer ends with is the one the recording implies, every block is stored,
and no request is refused. Once with the project's own contracts watched (all of it is foreign),
once watching every contract the recording's events name (each of their events decoded)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from db.session import create_engine, engine_scope
from indexer.observer import create_app
from indexer.pipeline import Indexer
from indexer.replay import replay_file
from indexer.tsv import write_requests
from infra.config import IndexerSettings, Settings
from ops.bench.fake_stacks_api import serve
from tests import recordings
from tests.indexer.helpers import query, tx_fields


def watched_in(reqs: list[tuple[str, str]]) -> list[str]:
    """Every contract an event of the recording names (prints, assets, STX to contracts)."""
    found: set[str] = set()
    for path, payload in reqs:
        if path != "/new_block":
            continue
        for e in json.loads(payload)["events"]:
            body = e.get(e.get("type"), {})
            if not isinstance(body, dict):
                continue
            for key in ("contract_identifier", "asset_identifier", "sender", "recipient"):
                value = body.get(key)
                if isinstance(value, str) and "." in value:
                    found.add(value.split("::", 1)[0])
    return sorted(found)


def settings_for(db_url: str, path: Path, reqs: list[tuple[str, str]], watch_all: bool) -> Settings:
    extra: dict[str, object] = {}
    if watch_all:
        contracts = watched_in(reqs)
        # A mainnet recording's contracts are watched on mainnet (addresses must match it).
        mainnet = any(c.startswith(("SP", "SM")) for c in contracts)
        extra = {"contracts": contracts, "network": "mainnet" if mainnet else "testnet"}
    return Settings(
        database_url=SecretStr(db_url),
        indexer=IndexerSettings(start_height=recordings.start_height(path)),
        **extra,
    )


def canonical(db_url: str) -> list[str]:
    rows = query(
        db_url, "SELECT index_block_hash FROM blocks WHERE canonical ORDER BY block_height"
    )
    return [r[0] for r in rows]


def check(db_url: str, path: Path, reqs: list[tuple[str, str]]) -> None:
    implied = recordings.implied_canonical(reqs, recordings.start_height(path))
    assert implied.canonical, "the recording implies a chain"
    assert canonical(db_url) == implied.canonical
    assert query(db_url, "SELECT count(*) FROM blocks") == [(implied.blocks,)]
    assert query(db_url, "SELECT count(*) FROM blocks WHERE orphan") == [(0,)]
    assert query(db_url, "SELECT id, error FROM raw_requests WHERE error IS NOT NULL") == []
    tip = implied.canonical[-1]
    assert query(db_url, "SELECT index_block_hash FROM checkpoints") == [(tip,)]
    rows = query(db_url, "SELECT raw_tx, sender, contract_id, function_name, fee, nonce FROM "
                 "transactions")  # fmt: skip
    for raw, *fields in rows:  # decoded at ingest (burnchain operations have no bytes)
        assert tuple(fields) == (tx_fields(bytes(raw)) if raw != b"\x00" else (None,) * 5)


def cases() -> list[object]:
    """(recording, watch_all) pairs."""
    out: list[object] = []
    for param in recordings.params():
        (path,) = param.values
        for watch_all in (False, True):
            label = "watch-all" if watch_all else "own-contracts"
            out.append(pytest.param(path, watch_all, id=f"{param.id}-{label}", marks=param.marks))
    return out


@pytest.mark.parametrize(("path", "watch_all"), cases())
async def test_replay(db_url: str, tmp_path: Path, path: Path, watch_all: bool) -> None:
    reqs = list(recordings.requests(path))
    source = path
    if path.suffix == ".json":  # a lone payload: as the one line of an archive
        source = tmp_path / "one.tsv"
        with source.open("w") as out:
            write_requests(out, [(1, "2026-01-01 00:00:00+00", p, b) for p, b in reqs])
    settings = settings_for(db_url, path, reqs, watch_all)
    async with engine_scope(db_url, pool_size=1) as engine:
        stats = await replay_file(engine, settings, source, progress=False, batch_size=7)
    assert stats.rejected == 0
    assert stats.requests == len(reqs)
    check(db_url, path, reqs)


@pytest.mark.parametrize(("path", "watch_all"), cases())
async def test_observer(db_url: str, path: Path, watch_all: bool) -> None:
    reqs = list(recordings.requests(path))
    settings = settings_for(db_url, path, reqs, watch_all)
    engine = create_engine(db_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            indexer = Indexer(conn, settings)
            await indexer.start()
            server, port, task = await serve(create_app(indexer, max_body_bytes=64 << 20))
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                    for event_path, payload in reqs:
                        r = await client.post(
                            event_path,
                            content=payload.encode(),
                            headers={"content-type": "application/json"},
                            timeout=60,
                        )
                        assert r.status_code == 200, (event_path, r.text)
            finally:
                server.should_exit = True
                await task
    finally:
        await engine.dispose()
    check(db_url, path, reqs)


@pytest.mark.parametrize(
    ("name", "start"), [("mainnet-reorg-scenario2.tsv", 2), ("mainnet-reorg-scenario1.tsv", 30)]
)
async def test_replay_from_a_forked_start_height(db_url: str, name: str, start: int) -> None:
    """Ordinary 1-block forks at the root height: replaying from there commits the chain."""
    path = recordings.RECORDINGS / name
    if not path.is_file():
        pytest.skip(recordings.ABSENT)
    reqs = list(recordings.requests(path))
    settings = Settings(database_url=SecretStr(db_url), indexer=IndexerSettings(start_height=start))
    async with engine_scope(db_url, pool_size=1) as engine:
        stats = await replay_file(engine, settings, path, progress=False, batch_size=7)
    assert stats.rejected == 0
    implied = recordings.implied_canonical(reqs, start)
    assert canonical(db_url) == implied.canonical
