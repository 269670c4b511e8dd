"""Stored transaction bytes must be the transaction their txid names: a truncated or altered
`raw_tx` (still valid hex) is refused before anything is stored, and the genuine block arriving
later is applied with its descendants, as if the bad copy had never come."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from db.session import create_engine
from indexer.block import BURNCHAIN_OP_RAW_TX, Tx, check_raw_tx
from indexer.errors import PayloadError
from indexer.observer import create_app
from indexer.pipeline import Indexer
from indexer.tsv import read_requests
from infra.config import PROJECT_ROOT, Settings
from stacks.hashing import sha512_256
from tests import recordings
from tests.indexer.conftest_db import fresh_db
from tests.indexer.helpers import query, run_requests, snapshot

DEMO = PROJECT_ROOT / "tests" / "fixtures" / "demo" / "chain.tsv"


def _demo() -> list[tuple[str, str]]:
    return [(r.path, r.payload) for r in read_requests(DEMO)]


def _first_block_with_stored_tx(reqs: list[tuple[str, str]]) -> int:
    """Index of the first `/new_block` whose events make the indexer store a transaction that
    has real bytes (derived from the fixture, which is regenerated from time to time)."""
    for i, (path, body) in enumerate(reqs):
        if path != "/new_block":
            continue
        block = json.loads(body)
        with_events = {e["txid"] for e in block["events"] if e.get("type") == "contract_event"}
        if any(
            t["txid"] in with_events and t["raw_tx"] != BURNCHAIN_OP_RAW_TX
            for t in block["transactions"]
        ):
            return i
    raise AssertionError("the demo chain has no block with a stored transaction")


def _corrupt(body: str, how: str) -> str:
    block = json.loads(body)
    with_events = {e["txid"] for e in block["events"]}
    tx = next(t for t in block["transactions"] if t["txid"] in with_events)
    raw = tx["raw_tx"]
    if how == "truncated":
        tx["raw_tx"] = raw[:-4]  # two bytes short: still valid hex
    elif how == "one byte altered":
        flipped = int(raw[-2:], 16) ^ 0x01
        tx["raw_tx"] = f"{raw[:-2]}{flipped:02x}"
    else:  # bytes that are not a transaction, with a txid that is their hash
        junk = bytes.fromhex(raw[2:])[:-3]
        tx["raw_tx"] = "0x" + junk.hex()
        old, tx["txid"] = tx["txid"], "0x" + sha512_256(junk).hex()
        for ev in block["events"]:
            if ev["txid"] == old:
                ev["txid"] = tx["txid"]
    return json.dumps(block)


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    engine = create_engine(db_url, pool_size=1)
    async with engine.connect() as conn:
        indexer = Indexer(conn, Settings(database_url=SecretStr(db_url)))
        await indexer.start()
        app = create_app(indexer, max_body_bytes=16 * 1024 * 1024)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://observer") as c:
            yield c
    await engine.dispose()


@pytest.mark.parametrize("how", ["truncated", "one byte altered", "not a transaction"])
async def test_corrupt_raw_tx_is_refused_and_the_genuine_block_repairs_the_chain(
    client: httpx.AsyncClient, db_url: str, server_url: str, how: str
) -> None:
    reqs = _demo()
    k = _first_block_with_stored_tx(reqs)
    for path, body in reqs[:k]:
        assert (await client.post(path, content=body)).status_code == 200
    before = snapshot(db_url)
    counts = "SELECT (SELECT count(*) FROM blocks), (SELECT count(*) FROM transactions)"
    stored = query(db_url, counts)

    r = await client.post("/new_block", content=_corrupt(reqs[k][1], how))
    assert r.status_code == 400, r.text
    reason = r.json()["error"]
    assert "raw_tx" in reason and ("txid" in reason or "not a Stacks transaction" in reason)
    assert snapshot(db_url) == before
    assert query(db_url, counts) == stored
    refused = "SELECT count(*) FROM raw_requests WHERE strpos(error, 'raw_tx') > 0"
    assert query(db_url, refused) == [(1,)]

    # The chain goes on; the genuine copy arrives after some of its descendants.
    later = reqs[k + 1 : k + 6]
    for path, body in later:
        assert (await client.post(path, content=body)).status_code == 200
    r = await client.post("/new_block", content=reqs[k][1])
    assert (r.status_code, r.json()["result"]) == (200, "applied")
    for path, body in reqs[k + 6 :]:
        assert (await client.post(path, content=body)).status_code == 200

    assert query(db_url, "SELECT count(*) FROM blocks WHERE orphan") == [(0,)]
    with fresh_db(server_url) as clean:
        await run_requests(clean, [reqs])
        assert snapshot(db_url) == snapshot(clean)
        same = "SELECT index_block_hash, canonical FROM blocks ORDER BY 1"
        assert query(db_url, same) == query(clean, same)
        tx_rows = "SELECT index_block_hash, txid, raw_tx FROM transactions ORDER BY 1, 2"
        assert query(db_url, tx_rows) == query(clean, tx_rows)


def _tx(txid: str, raw: str) -> Tx:
    return Tx(txid=txid, tx_index=0, status="success", raw_tx=raw)


def test_burnchain_operations_have_no_bytes_to_check() -> None:
    check_raw_tx(_tx("0x" + "ab" * 32, BURNCHAIN_OP_RAW_TX), "transactions[0]")
    with pytest.raises(PayloadError, match="hash"):
        check_raw_tx(_tx("0x" + "ab" * 32, "0x0000"), "transactions[0]")


def _recorded_transactions() -> list[tuple[str, dict[str, Any]]]:
    found = recordings.files()
    if not found:
        pytest.skip(recordings.ABSENT)
    out: list[tuple[str, dict[str, Any]]] = []
    for path in found:
        for event_path, payload in recordings.requests(path):
            if event_path == "/new_block":
                out += [(path.name, t) for t in json.loads(payload)["transactions"]]
    return out


def test_every_real_recorded_transaction_passes_the_check() -> None:
    txs = _recorded_transactions()
    assert len(txs) > 1000
    burn = 0
    for where, t in txs:
        check_raw_tx(_tx(t["txid"], t["raw_tx"]), where)
        burn += t["raw_tx"] == BURNCHAIN_OP_RAW_TX
    assert burn > 0, "the recordings include burnchain operations"
    for path, body in _demo():
        if path == "/new_block":
            for t in json.loads(body)["transactions"]:
                check_raw_tx(_tx(t["txid"], t["raw_tx"]), "demo")
