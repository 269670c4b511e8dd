"""The `api` source against a local server speaking the Stacks Blockchain API shapes: backfill,
websocket-driven follow, a reorg at the source, 429/Retry-After, the API key, pacing, and that
only what touches the watched contracts is asked for."""

from __future__ import annotations

import asyncio
import time
from typing import cast

import pytest
from pydantic import SecretStr

from db.session import create_engine
from indexer.api_source import ApiSource
from indexer.errors import SourceError
from indexer.pipeline import Indexer
from infra.config import IndexerSettings, Settings
from ops.bench.chaingen import Chain, new_block
from ops.bench.fake_stacks_api import FakeApi, serve
from tests.indexer.conftest_db import fresh_db
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


def quiet_blocks(after: dict, count: int, txs: int = 50) -> list[dict]:
    """Mainnet-like blocks without watched activity: `txs` transactions of others each."""
    out, parent, height = [], after["index_block_hash"], after["block_height"]
    for _ in range(count):
        height += 1
        block = new_block(height, parent, "quiet", [], extra_txs=txs)
        out.append(block)
        parent = block["index_block_hash"]
    return out


async def _follow(db_url: str, fake: FakeApi, **source_args) -> tuple[ApiSource, int]:
    server, port, task = await serve(fake.app())
    engine = create_engine(db_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            indexer = Indexer(conn, Settings(database_url=SecretStr(db_url)))
            await indexer.start()
            source = ApiSource(indexer, f"http://127.0.0.1:{port}", **source_args)
            try:
                fetched = await source.reconcile()
            finally:
                await source.client.aclose()
    finally:
        await engine.dispose()
        server.should_exit = True
        await task
    return source, fetched


async def test_asks_only_for_what_touches_the_watched_contracts(
    db_url: str, server_url: str
) -> None:
    active = Chain(seed=41).grow(None, 4, "main")
    quiet = quiet_blocks(active[-1], 40)
    chain = active + quiet
    fake = FakeApi(chain)
    source, fetched = await _follow(db_url, fake)
    assert fetched == len(chain)
    watched = {t["txid"] for b in active for t in b["transactions"]}
    # Headers 30 a page, two routes per watched contract, details 20 transactions a request.
    contracts = len(Settings().watched_contracts)
    assert fake.by_route["blocks"] == -(-len(chain) // 30)
    assert fake.by_route["contract logs"] + fake.by_route["principal transactions"] >= contracts
    assert fake.by_route["tx multiple"] == -(-len(watched) // 20)
    assert set(fake.by_route) == {"blocks", "contract logs", "principal transactions",
                                  "tx multiple"}  # fmt: skip
    assert source.requests == fake.requests
    with fresh_db(server_url) as clean:
        await run_requests(clean, [to_requests(chain)])
        assert snapshot(db_url) == snapshot(clean)
    stored = {t for (t,) in query(db_url, "SELECT txid FROM transactions")}
    assert stored == watched, "every watched transaction, none of the others"

    # At the tip: one more quiet block costs the header page and one page per route.
    fake.set_chain(chain + quiet_blocks(chain[-1], 1))
    before = fake.requests
    source, fetched = await _follow(db_url, fake)
    assert fetched == 1
    assert fake.requests - before == 1 + 2 * contracts
    assert fake.by_route["tx multiple"] == -(-len(watched) // 20), "nothing new to detail"


async def test_api_key_header_and_retry_after(db_url: str) -> None:
    chain = Chain(seed=42).grow(None, 3, "main")
    with pytest.raises(SourceError, match="HTTP 401"):
        await _follow(db_url, FakeApi(chain, api_key="k-123"))
    fake = FakeApi(chain, api_key="k-123")
    fake.rate_limit_next, fake.retry_after = 1, "1"
    started = time.monotonic()
    _, fetched = await _follow(db_url, fake, api_key="k-123")
    assert fetched == 3
    assert time.monotonic() - started >= 1.0, "waited for Retry-After"
    assert set(fake.keys_seen) == {"k-123"}


async def test_requests_are_paced_to_the_configured_rate(db_url: str) -> None:
    chain = Chain(seed=43).grow(None, 2, "main")
    fake = FakeApi(chain)
    started = time.monotonic()
    source, _ = await _follow(db_url, fake, requests_per_minute=600)  # one each 0.1 s
    assert time.monotonic() - started >= (source.requests - 1) * 0.1
    assert source.requests >= 5


def test_settings_reach_the_source() -> None:
    settings = Settings(
        indexer=IndexerSettings(api_key=SecretStr("key-7f3a9"), api_requests_per_minute=500)
    )
    source = ApiSource.from_settings(cast(Indexer, _FakeIndexer()), settings)
    assert source.client.headers["x-api-key"] == "key-7f3a9"
    assert source._gap == pytest.approx(0.12)
    assert "key-7f3a9" not in repr(settings)


class _FakeIndexer:
    watched = frozenset({"SP000000000000000000002Q6VF78.pox-4"})
