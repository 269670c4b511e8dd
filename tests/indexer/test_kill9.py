"""kill -9 a real `recchain replay` subprocess at many points; after a restart the database must
equal an uninterrupted run (nothing lost, nothing duplicated).

Each run is killed a random moment after it has committed its first batch, so the kills land
while batches are being applied, staged and written (not during interpreter start-up), however
fast the machine replays."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
from sqlalchemy import make_url

from db.session import to_libpq_url
from indexer.tsv import write_requests
from infra.config import PROJECT_ROOT
from ops.bench.chaingen import Chain, to_requests
from tests.indexer.conftest_db import fresh_db
from tests.indexer.helpers import query, run_requests, snapshot

KILL_POINTS = 20
REPLAY = [sys.executable, "-m", "recchain.cli", "replay"]


def _replay(db_url: str, tsv: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": make_url(db_url).render_as_string(hide_password=False)}
    return subprocess.Popen(
        # Its secondary indexes deferred (`db.indexes`), as a large replay into an empty
        # database has them: kills land before, during and after their build too.
        [*REPLAY, str(tsv), "--quiet", "--batch", "2", "--defer-indexes-from", "0"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_kill9_at_random_points_loses_and_duplicates_nothing(
    db_url: str, server_url: str, tmp_path: Path
) -> None:
    chain = Chain(seed=30, txs_per_block=4)
    main = chain.grow(None, 60, "main")
    side = chain.grow(main[30]["index_block_hash"], 12, "side")  # a 9-block fork midway
    blocks = main[:35] + side + main[35:]
    tsv = tmp_path / "chain.tsv"
    with tsv.open("w") as out:
        write_requests(out, [(i + 1, "2026-01-01 00:00:00+00", p, b)
                             for i, (p, b) in enumerate(to_requests(blocks))])  # fmt: skip
    rng = random.Random(7)
    kills = 0
    with psycopg.connect(to_libpq_url(db_url), autocommit=True) as watch:

        def position() -> int | None:
            row = watch.execute("SELECT max(position) FROM replay_positions").fetchone()
            return None if row is None else row[0]

        for _ in range(KILL_POINTS):
            before = position()
            proc = _replay(db_url, tsv)
            for _ in range(12_000):  # a minute at most
                if proc.poll() is not None or position() != before:
                    break
                await asyncio.sleep(0.005)
            await asyncio.sleep(rng.uniform(0.0, 0.03))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
    final = _replay(db_url, tsv)
    assert final.wait(timeout=120) == 0
    assert kills >= KILL_POINTS // 2, "most runs must actually have been killed"
    with fresh_db(server_url) as clean:
        await run_requests(clean, [to_requests(blocks)])
        assert snapshot(db_url) == snapshot(clean)
        same = "SELECT index_block_hash, block_height, canonical FROM blocks ORDER BY 1"
        assert query(db_url, same) == query(clean, same)
        schema = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        assert sorted(query(db_url, schema)) == sorted(query(clean, schema))
        assert query(db_url, "SELECT count(*) FROM deferred_indexes") == [(0,)]
    assert query(db_url, "SELECT count(*) FROM raw_requests") == [(len(blocks),)]
