"""The `api` source against a local server speaking the Stacks Blockchain API shapes: backfill,
websocket-driven follow, a reorg at the source, 429/Retry-After, the API key, pacing, that only
what touches the watched contracts is asked for, and that its transactions carry the sender,
contract, function, fee and nonce the observer path decodes from the same chain's bytes."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, cast

import pytest
from pydantic import SecretStr

from db.session import create_engine
from indexer.api_source import ApiSource
from indexer.errors import SourceError
from indexer.pipeline import Indexer
from indexer.tsv import read_requests
from infra.config import PROJECT_ROOT, IndexerSettings, Settings
from ops.bench.chaingen import Chain, new_block
from ops.bench.fake_stacks_api import FakeApi, serve
from stacks.hashing import sha512_256
from stacks.transactions import (
    AUTH_SPONSORED,
    CHAIN_ID_TESTNET,
    KEY_COMPRESSED,
    TX_VERSION_TESTNET,
    Authorization,
    HashMode,
    SingleSigCondition,
    SmartContractPayload,
    Transaction,
    encode_transaction,
)
from tests.indexer.conftest_db import fresh_db
from tests.indexer.helpers import query, run_requests, snapshot
from tests.indexer.test_forks import to_requests

DEMO = PROJECT_ROOT / "tests" / "fixtures" / "demo"
# What analysts query of each stored transaction, whichever source filled it.
TX_FIELDS = (
    "SELECT index_block_hash, txid, sender, contract_id, function_name, fee, nonce"
    " FROM transactions WHERE canonical"
)


def tx_fields(db_url: str) -> list[tuple[Any, ...]]:
    return sorted(query(db_url, TX_FIELDS))


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
        assert tx_fields(db_url) == tx_fields(clean)
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
        by_observer = tx_fields(clean)
    assert tx_fields(db_url) == by_observer
    assert all(None not in row[:4] for row in by_observer), "generated calls: nothing NULL"
    stored = {t for (t,) in query(db_url, "SELECT txid FROM transactions")}
    assert stored == watched, "every watched transaction, none of the others"

    # At the tip: one more quiet block costs the header page and one page per route.
    fake.set_chain(chain + quiet_blocks(chain[-1], 1))
    before = fake.requests
    source, fetched = await _follow(db_url, fake)
    assert fetched == 1
    assert fake.requests - before == 1 + 2 * contracts
    assert fake.by_route["tx multiple"] == -(-len(watched) // 20), "nothing new to detail"


def canonical_demo_chain() -> list[dict[str, Any]]:
    """The demo recording's canonical blocks (real simnet transactions calling our contracts),
    genesis first, as the API would serve them: the tip's ancestors."""
    reqs = read_requests(DEMO / "chain.tsv")
    blocks = [json.loads(r.payload) for r in reqs if r.path == "/new_block"]
    by_hash = {b["index_block_hash"]: b for b in blocks if b["block_height"] > 0}
    tip = max(blocks, key=lambda b: b["block_height"])
    chain = [tip]
    while (parent := by_hash.get(chain[-1]["parent_index_block_hash"])) is not None:
        chain.append(parent)
    chain.reverse()
    assert [b["block_height"] for b in chain] == list(range(1, len(chain) + 1))
    return chain


async def test_demo_chain_has_the_observer_paths_transaction_fields(
    db_url: str, server_url: str
) -> None:
    chain = canonical_demo_chain()
    _, fetched = await _follow(db_url, FakeApi(chain))
    assert fetched == len(chain)
    with fresh_db(server_url) as clean:
        outcomes = await run_requests(clean, [to_requests(chain)])
        assert all(o.ok for o in outcomes)
        by_observer = tx_fields(clean)
        decoded = query(clean, "SELECT count(*) FROM transactions WHERE raw_tx IS NOT NULL")
    assert tx_fields(db_url) == by_observer
    assert decoded == [(len(by_observer),)], "the observer's values come from the bytes"
    assert query(db_url, "SELECT count(*) FROM transactions WHERE raw_tx IS NULL") == [
        (len(by_observer),)
    ], "the API's come from its JSON"
    assert all(None not in row for row in by_observer), "calls of our contracts: none NULL"
    assert len({r[2] for r in by_observer}) > 1 and len({r[4] for r in by_observer}) > 3


def make_sponsored_deploy(block: dict[str, Any]) -> tuple[Any, ...]:
    """Turn the block's first transaction into a sponsored deploy (its events stay): the fee is
    the sponsor's, the nonce the origin's, the contract `sender.name` and no function. Returns
    those fields."""
    origin = SingleSigCondition(HashMode.P2PKH, b"\x11" * 20, 7, 0, KEY_COMPRESSED, bytes(65))
    sponsor = SingleSigCondition(HashMode.P2PKH, b"\x22" * 20, 3, 4321, KEY_COMPRESSED, bytes(65))
    tx = Transaction(
        TX_VERSION_TESTNET,
        CHAIN_ID_TESTNET,
        Authorization(AUTH_SPONSORED, origin, sponsor),
        3,
        2,
        (),
        SmartContractPayload("audit-log", "(define-read-only (f) u1)", 2),
    )
    raw = encode_transaction(tx)
    old, txid = block["transactions"][0]["txid"], "0x" + sha512_256(raw).hex()
    block["transactions"][0].update(txid=txid, raw_tx="0x" + raw.hex())
    for ev in block["events"]:
        if ev["txid"] == old:
            ev["txid"] = txid
    sender = tx.sender_address
    return (block["index_block_hash"], txid, sender, f"{sender}.audit-log", None, 4321, 7)


async def test_a_sponsored_deploy_has_the_observer_paths_fields(
    db_url: str, server_url: str
) -> None:
    chain = Chain(seed=45).grow(None, 3, "main")
    expected = make_sponsored_deploy(chain[1])
    await _follow(db_url, FakeApi(chain))
    with fresh_db(server_url) as clean:
        await run_requests(clean, [to_requests(chain)])
        by_observer = tx_fields(clean)
    assert expected in by_observer
    assert tx_fields(db_url) == by_observer


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("fee_rate", "12.5", r"summary\.fee: '12\.5' is not a decimal integer"),
        ("fee_rate", str(2**63), r"summary\.fee: 9223372036854775808 is out of range"),
        ("fee_rate", "9" * 30, r"summary\.fee: 9{30} is out of range"),
        ("fee_rate", None, r"summary\.fee: expected integer or string, got null"),
        ("nonce", True, r"summary\.nonce: expected integer or string, got boolean"),
        ("nonce", -1, r"summary\.nonce: -1 is out of range"),
        ("sender_address", "SP-nobody", r"summary\.sender: not a Stacks address"),
        (
            "contract_call",
            {"contract_id": "marketplace", "function_name": "buy"},
            r"summary\.contract_id: not a contract id: 'marketplace'",
        ),
    ],
)
async def test_a_bad_transaction_field_refuses_its_block(
    db_url: str, field: str, value: Any, reason: str
) -> None:
    chain = Chain(seed=44).grow(None, 3, "main")
    fake = FakeApi(chain)
    fake.tx_overrides[chain[1]["transactions"][0]["txid"]] = {field: value}
    with pytest.raises(SourceError, match=r"block 2 from the API was refused: transactions\[0\]\."
                       + reason):  # fmt: skip
        await _follow(db_url, fake)
    assert committed_height(db_url) == 1, "the blocks before it are kept"
    assert query(db_url, "SELECT count(*) FROM transactions WHERE block_height >= 2") == [(0,)]
    (error,) = query(db_url, "SELECT error FROM raw_requests WHERE error IS NOT NULL")
    assert "summary" in error[0], "the refused payload is recorded with its reason"


async def test_a_contract_call_without_its_object_stops_the_source(db_url: str) -> None:
    chain = Chain(seed=46).grow(None, 2, "main")
    fake = FakeApi(chain)
    fake.tx_overrides[chain[1]["transactions"][0]["txid"]] = {"contract_call": None}
    with pytest.raises(SourceError, match="a contract_call without its contract_call object"):
        await _follow(db_url, fake)
    assert query(db_url, "SELECT count(*) FROM transactions WHERE block_height = 2") == [(0,)]


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
