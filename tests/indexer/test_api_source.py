"""The `api` source against a local server speaking the Stacks Blockchain API shapes: backfill,
websocket-driven follow, a reorg at the source, and 429/Retry-After."""

from __future__ import annotations

import asyncio

from pydantic import SecretStr

from db.session import create_engine
from indexer.api_source import ApiSource
from indexer.pipeline import Indexer
from infra.config import Settings
from ops.bench.chaingen import Chain
from tests.indexer.conftest_db import fresh_db
from tests.indexer.fake_stacks_api import FakeApi, serve
from tests.indexer.helpers import query, run_requests, snapshot
from tests.indexer.test_forks import to_requests


def committed_height(db_url: str) -> int:
    rows = query(db_url, "SELECT block_height FROM checkpoints")
    return int(rows[0][0]) if rows else 0


async def _wait_for(predicate, seconds: float = 20.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_backfill_follow_reorg_and_rate_limit(db_url: str, server_url: str) -> None:
    chain = Chain(seed=40)
    main = chain.grow(None, 6, "main")
    fake = FakeApi(main)
    fake.rate_limit_next = 2
    server, port, task = await serve(fake.app())
    engine = create_engine(db_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            indexer = Indexer(conn, Settings(database_url=SecretStr(db_url)))
            await indexer.start()
            source = ApiSource(indexer, f"http://127.0.0.1:{port}")
            runner = asyncio.create_task(source.run(poll_interval=60))
            await _wait_for(lambda: committed_height(db_url) == 6)
            await _wait_for(lambda: bool(fake.sockets))
            # the source reorganises: blocks 4..6 replaced by a longer branch 4..8
            side = chain.grow(main[2]["index_block_hash"], 5, "side")
            fake.set_chain(main[:3] + side)
            await fake.notify()
            await _wait_for(lambda: committed_height(db_url) == 8)
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            await source.client.aclose()
    finally:
        await engine.dispose()
        server.should_exit = True
        await task
    assert fake.rate_limit_next == 0, "the 429 answers were consumed and retried"
    assert query(db_url, "SELECT index_block_hash FROM checkpoints") == [
        (side[-1]["index_block_hash"],)
    ]
    with fresh_db(server_url) as clean:
        await run_requests(clean, [to_requests(main[:3] + side)])
        assert snapshot(db_url) == snapshot(clean)
    assert sum(len(v) for v in snapshot(db_url).values()) > 10
