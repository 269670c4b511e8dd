"""Real mainnet forks at `indexer.start_height`: the root's siblings are handled (the recorded
fork replaces the root when its branch grows higher), through `recchain replay` (a rerun changes
nothing) and through the event observer (every request answered 200)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import make_url

from db.session import create_engine
from indexer.observer import create_app
from indexer.pipeline import Indexer
from infra.config import PROJECT_ROOT, IndexerSettings, Settings
from tests import recordings
from tests.indexer.helpers import query

CASES = [("mainnet-reorg-scenario2.tsv", 2), ("mainnet-reorg-scenario1.tsv", 30)]
CANONICAL = "SELECT index_block_hash, block_height FROM blocks WHERE canonical ORDER BY 2"


def _recording(name: str) -> Path:
    path = recordings.RECORDINGS / name
    if not path.is_file():
        pytest.skip(recordings.ABSENT)
    return path


def _implied_canonical(path: Path, start: int) -> list[tuple[str, int]]:
    """The chain the recording implies: a block becomes the tip when it is higher than the
    tip; the tip's ancestors down to the start height are canonical."""
    parents: dict[str, tuple[str, int]] = {}
    tip: tuple[str, int] | None = None
    for event_path, payload in recordings.requests(path):
        if event_path != "/new_block":
            continue
        block = json.loads(payload)
        height = block["block_height"]
        if height < start:
            continue
        parents[block["index_block_hash"]] = (block["parent_index_block_hash"], height)
        if tip is None or height > tip[1]:
            tip = (block["index_block_hash"], height)
    assert tip is not None
    chain = []
    cursor: str | None = tip[0]
    while cursor in parents:
        parent, height = parents[cursor]
        chain.append((cursor, height))
        cursor = parent
    return sorted(chain, key=lambda c: c[1])


def _heights(path: Path) -> list[int]:
    return [
        json.loads(payload)["block_height"]
        for event_path, payload in recordings.requests(path)
        if event_path == "/new_block"
    ]


def _replay(db_url: str, path: Path, start: int) -> dict[str, int]:
    env = {
        **os.environ,
        "DATABASE_URL": make_url(db_url).render_as_string(hide_password=False),
        "RECCHAIN_INDEXER__START_HEIGHT": str(start),
    }
    done = subprocess.run(
        [sys.executable, "-m", "recchain.cli", "replay", str(path), "--quiet"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return json.loads(done.stderr.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize(("name", "start"), CASES)
def test_replay_of_a_real_fork_at_the_start_height(db_url: str, name: str, start: int) -> None:
    path = _recording(name)
    expected = _implied_canonical(path, start)
    forks_at_root = [h for h in _heights(path) if h == start]
    assert len(forks_at_root) > 1, "the recording has a fork at the start height"
    summary = _replay(db_url, path, start)
    assert summary["rejected"] == 0, summary
    assert query(db_url, CANONICAL) == expected
    assert query(db_url, "SELECT count(*) FROM blocks WHERE orphan") == [(0,)]
    tables = "SELECT (SELECT count(*) FROM raw_requests), (SELECT count(*) FROM blocks)"
    counts = query(db_url, tables)
    assert _replay(db_url, path, start)["rejected"] == 0  # a rerun changes nothing
    assert query(db_url, CANONICAL) == expected
    assert query(db_url, tables) == counts


@pytest.mark.parametrize(("name", "start"), CASES)
async def test_observer_answers_every_request_of_a_real_fork_at_the_start_height(
    db_url: str, name: str, start: int
) -> None:
    path = _recording(name)
    settings = Settings(database_url=SecretStr(db_url), indexer=IndexerSettings(start_height=start))
    engine = create_engine(db_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            indexer = Indexer(conn, settings)
            await indexer.start()
            app = create_app(indexer, max_body_bytes=settings.indexer.max_body_bytes)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://observer") as c:
                for event_path, payload in recordings.requests(path):
                    answer = await c.post(event_path, content=payload)
                    assert answer.status_code == 200, (event_path, answer.text)
    finally:
        await engine.dispose()
    assert query(db_url, CANONICAL) == _implied_canonical(path, start)
