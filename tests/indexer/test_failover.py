"""Indexer failover as deployed: two `recchain index --source observer` processes behind the
bundled nginx (ops/nginx/nginx.conf, its observer server), a node emulator pushing the demo chain
to nginx's one address and retrying until 200 as stacks-node does; kill -9 of the leader in the
middle of the stream. Nothing is lost or duplicated (the tables equal an uninterrupted replay),
nothing is answered 500, and the standby takes over."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from ops.bench.faults import NodeEmulator, demo_requests, free_port, index_process
from tests.indexer.conftest_db import fresh_db
from tests.indexer.helpers import query, run_requests, snapshot
from tests.nginxproxy import NginxProxy, require_nginx


async def test_kill_9_of_the_leader_behind_nginx_loses_and_duplicates_nothing(
    db_url: str, server_url: str, tmp_path: Path
) -> None:
    require_nginx()
    requests = demo_requests()
    async with (
        index_process(db_url, tmp_path) as a,
        index_process(db_url, tmp_path, ready=False) as b,
    ):
        proxy = NginxProxy(api=[free_port()], indexer=[a.port, b.port]).start()
        try:
            node = NodeEmulator([proxy.observer_url], requests)
            pushing = asyncio.create_task(node.push())
            while node.delivered < len(requests) // 3:
                assert not pushing.done(), pushing
                await asyncio.sleep(0.01)
            a.signal(signal.SIGKILL)
            killed_at = time.monotonic()
            await asyncio.wait_for(pushing, 600)
        finally:
            proxy.stop()
        assert await b.status("/readyz") == 200
    first = next(x for x in node.answers if x.at > killed_at and x.status == 200)
    takeover = first.at - killed_at
    assert takeover < 15, takeover
    # The standby's 503s went to the leader while it lived, and the node never saw a 500.
    assert 500 not in node.statuses(), node.answers
    with fresh_db(server_url) as clean:
        await run_requests(clean, [requests])
        assert snapshot(db_url) == snapshot(clean)
        same = "SELECT index_block_hash, block_height, canonical FROM blocks ORDER BY 1"
        assert query(db_url, same) == query(clean, same)
    assert query(db_url, "SELECT count(*) FROM raw_requests") == [(len(requests),)]
