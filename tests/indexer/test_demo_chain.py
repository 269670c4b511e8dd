"""The recorded demo chain (tests/fixtures/demo): the thin path through the real CLI, its forks,
and equality with a replay of its final canonical chain alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from sqlalchemy import make_url

from indexer.tsv import read_requests
from infra.config import PROJECT_ROOT
from tests.indexer.conftest_db import fresh_db
from tests.indexer.helpers import query, run_requests, snapshot

DEMO = PROJECT_ROOT / "tests" / "fixtures" / "demo"


def _manifest() -> dict:
    return json.loads((DEMO / "manifest.json").read_text())


def test_replay_command_thin_path(db_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": make_url(db_url).render_as_string(hide_password=False)}
    done = subprocess.run(
        [sys.executable, "-m", "recchain.cli", "replay", str(DEMO / "chain.tsv"), "--batch", "7"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stderr.strip().splitlines()[-1])
    m = _manifest()
    assert summary["rejected"] == 0, summary
    assert summary["requests"] == m["counts"]["requests"], (summary, done.stderr[-3000:])
    assert query(db_url, "SELECT count(*) FROM raw_requests") == [(m["counts"]["requests"],)]
    assert query(db_url, "SELECT count(*) FROM blocks") == [(m["counts"]["blocks"],)]
    assert query(db_url, "SELECT count(*) FROM blocks WHERE canonical") == [
        (m["counts"]["canonical_blocks"],)
    ]
    tip = m["canonical_tip"]
    assert query(db_url, "SELECT index_block_hash, block_height FROM checkpoints") == [
        (tip["index_block_hash"], tip["height"])
    ]
    for fork in m["forks"]:
        orphaned = query(
            db_url,
            "SELECT count(*) FROM blocks WHERE NOT canonical AND index_block_hash = ANY(%s)",
            fork["orphaned"],
        )
        assert orphaned == [(len(fork["orphaned"]),)]
        gone = query(db_url, "SELECT count(*) FROM transfers WHERE txid = ANY(%s)",
                     fork["orphaned_txids"])  # fmt: skip
        # a txid orphaned by a fork may be re-mined on the winning branch; never twice
        assert gone[0][0] <= len(fork["orphaned_txids"]) * 4
    assert query(db_url, "SELECT count(*) FROM certificates WHERE block_to IS NULL")[0][0] > 0


async def test_demo_forks_equal_canonical_replay(db_url: str, server_url: str) -> None:
    requests = [(r.path, r.payload) for r in read_requests(DEMO / "chain.tsv")]
    # tip mode: one request per transaction, as the observer delivers them
    await run_requests(db_url, [[r] for r in requests])
    tip = _manifest()["canonical_tip"]["index_block_hash"]
    blocks = {
        (b := json.loads(p))["index_block_hash"]: (b, (path, p))
        for path, p in requests
        if path == "/new_block"
    }
    chain = []
    while tip in blocks:
        chain.append(blocks[tip][1])
        tip = blocks[tip][0]["parent_index_block_hash"]
    chain.reverse()
    with fresh_db(server_url) as clean:
        await run_requests(clean, [chain])
        expected = snapshot(clean)
    got = snapshot(db_url)
    assert sum(len(v) for v in expected.values()) > 100
    for table in expected:
        assert got[table] == expected[table], table
