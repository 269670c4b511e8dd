"""The event-observer server over HTTP (ASGI transport) and a real database: 200 only after
commit, duplicates are no-ops, bad input gets a 400 with a reason, is stored, and changes
nothing. (Valid Clarity the handlers do not understand is not bad input: test_foreign_events.)"""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import SecretStr

from db.session import create_engine
from indexer import metrics
from indexer.observer import create_app
from indexer.pipeline import Indexer
from infra.config import Settings
from ops.bench.chaingen import Chain
from tests.indexer.helpers import query, snapshot


@pytest.fixture
async def client(db_url: str):
    engine = create_engine(db_url, pool_size=1)
    async with engine.connect() as conn:
        indexer = Indexer(conn, Settings(database_url=SecretStr(db_url)))
        await indexer.start()
        app = create_app(indexer, max_body_bytes=1024 * 1024)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://observer") as c:
            yield c
    await engine.dispose()


async def test_blocks_and_every_observer_path(client: httpx.AsyncClient, db_url: str) -> None:
    blocks = Chain(seed=20).grow(None, 3, "main")
    for b in blocks:
        r = await client.post("/new_block", content=json.dumps(b))
        assert r.status_code == 200, r.text
    r = await client.post("/new_block", content=json.dumps(blocks[0]))
    assert (r.status_code, r.json()["result"]) == (200, "duplicate")
    others = {
        "/new_burn_block": {"burn_block_hash": "0x01", "burn_block_height": 5},
        "/new_mempool_tx": ["0x0102", "0x0304"],
        "/drop_mempool_tx": {"dropped_txids": ["0xaa"], "reason": "ReplaceByFee", "new_txid": None},
        "/attachments/new": [],
        "/new_microblocks": {"transactions": [], "events": []},
        "/stackerdb_chunks": {"contract_id": {}, "modified_slots": []},
        "/proposal_response": {"result": "Accepted"},
    }
    for path, body in others.items():
        r = await client.post(path, content=json.dumps(body))
        assert r.status_code == 200, (path, r.text)
    assert query(db_url, "SELECT count(*) FROM blocks WHERE canonical") == [(3,)]
    assert query(db_url, "SELECT status FROM mempool_txs ORDER BY status") == [
        ("dropped",),
        ("pending",),
        ("pending",),
    ]


def _bad_payloads() -> dict[str, tuple[str, str, str]]:
    chain = Chain(seed=21)
    good = chain.grow(None, 2, "main")
    base = good[1]

    def mutate(fn) -> str:
        b = json.loads(json.dumps(base))
        fn(b)
        return json.dumps(b)

    return {
        "not json": ("/new_block", "{nope", "malformed JSON"),
        "missing field": ("/new_block", mutate(lambda b: b.pop("block_height")), "missing"),
        "wrong type": ("/new_block", mutate(lambda b: b.update(block_height="7")), "expected"),
        "bad hex": ("/new_block", mutate(lambda b: b.update(index_block_hash="0xzz")), "hex"),
        # Numbers beyond the columns were a 500 on every retry (PostgreSQL refused the COPY).
        "burn height out of range": (
            "/new_block",
            mutate(lambda b: b.update(burn_block_height=2**40)),
            "out of range",
        ),
        "block time out of range": (
            "/new_block",
            mutate(lambda b: b.update(block_time=2**64)),
            "out of range",
        ),
        "tx index out of range": (
            "/new_block",
            mutate(lambda b: b["transactions"][0].update(tx_index=2**31)),
            "out of range",
        ),
        "duplicate event key": (  # PostgreSQL refuses it: never a 500 on every retry
            "/new_block",
            mutate(lambda b: b["events"].append(b["events"][0])),
            "cannot be stored",
        ),
        "negative event index": (
            "/new_block",
            mutate(lambda b: b["events"][0].update(event_index=-1)),
            "out of range",
        ),
        "bad clarity": (
            "/new_block",
            mutate(lambda b: b["events"][0]["contract_event"].update(raw_value="0x0c0000")),
            "Clarity",
        ),
        "unknown txid": (
            "/new_block",
            mutate(lambda b: b["events"][0].update(txid="0x" + "ab" * 32)),
            "not a transaction",
        ),
        "mempool not array": ("/new_mempool_tx", '{"a": 1}', "array"),
    }


@pytest.mark.parametrize("case", sorted(_bad_payloads()))
async def test_bad_input_is_refused_and_stored(
    client: httpx.AsyncClient, db_url: str, case: str
) -> None:
    path, body, reason = _bad_payloads()[case]
    good = Chain(seed=21).grow(None, 1, "main")[0]
    assert (await client.post("/new_block", content=json.dumps(good))).status_code == 200
    before = snapshot(db_url)
    blocks_before = query(db_url, "SELECT count(*) FROM blocks")
    r = await client.post(path, content=body)
    assert r.status_code == 400
    assert reason in r.json()["error"]
    assert snapshot(db_url) == before
    assert query(db_url, "SELECT count(*) FROM blocks") == blocks_before
    stored = query(db_url, "SELECT error FROM raw_requests WHERE error IS NOT NULL")
    assert len(stored) == 1 and reason in stored[0][0]


def _answers(path: str, status: int) -> float:
    return metrics.OBSERVER_REQUESTS.labels(path, str(status))._value.get()


async def test_oversized_body_is_refused(client: httpx.AsyncClient, db_url: str) -> None:
    before = _answers("/new_block", 413)
    r = await client.post("/new_block", content=b"x" * (1024 * 1024 + 1))
    assert r.status_code == 413
    # The failing-observer-acks alert counts these answers.
    assert _answers("/new_block", 413) == before + 1
    assert query(db_url, "SELECT count(*) FROM raw_requests") == [(0,)]
