"""`recchain replay` is a writer like the indexer: it refuses to run while an indexer leads the
same database (their blocks would interleave), and runs as the leader, fenced, once it is the
only one. Real processes: an `recchain index --source observer` leader and the replay command."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ops.bench.faults import demo_requests, index_process
from tests.clirun import error_lines, recchain_env, run
from tests.indexer.helpers import query, snapshot
from tests.indexer.test_holds import write_archive


async def test_replay_refuses_while_an_indexer_leads_and_runs_once_it_is_gone(
    db_url: str, tmp_path: Path
) -> None:
    tsv = tmp_path / "chain.tsv"
    write_archive(tsv, demo_requests()[:40])
    env = recchain_env(DATABASE_URL=db_url)
    async with index_process(db_url, tmp_path) as leader:
        refused = await asyncio.to_thread(run, "replay", "--quiet", str(tsv), env=env)
        assert await leader.status("/readyz") == 200  # the leader kept its lock
    assert refused.returncode == 2, refused.stderr
    lines = error_lines(refused.stderr)
    assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "an indexer is writing to this database" in lines[0], lines
    assert "recchain-leader:indexer" in lines[0], lines  # the holder, as pg_stat_activity names it
    assert query(db_url, "SELECT count(*) FROM raw_requests") == [(0,)]
    empty = snapshot(db_url)

    done = await asyncio.to_thread(run, "replay", "--quiet", str(tsv), env=env)
    assert done.returncode == 0, done.stderr
    assert query(db_url, "SELECT count(*) FROM raw_requests") == [(40,)]
    assert snapshot(db_url) != empty
    # It led while it wrote: its takeover bumped the epoch past the indexer's.
    assert query(db_url, "SELECT epoch FROM leader_epochs WHERE name = 'indexer'") == [(2,)]
