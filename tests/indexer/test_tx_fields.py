"""`transactions.sender`, `contract_id`, `function_name`, `fee`, `nonce`: written at ingest from
`raw_tx` (the demo chain's real simnet transactions, on a real PostgreSQL), equal to what the
full decoder's JSON view says of the same bytes, readable by analysts through
`analytics.transactions`; a transaction whose fee or nonce cannot be stored refuses its block."""

from __future__ import annotations

import json

import psycopg

from db.session import to_libpq_url
from indexer.tsv import read_requests
from infra.config import PROJECT_ROOT
from ops.bench.chaingen import Chain, to_requests
from tests.indexer.helpers import query, run_requests, tx_fields
from tests.stacks.vectors import load

DEMO = PROJECT_ROOT / "tests" / "fixtures" / "demo"


async def test_demo_chain_transactions_carry_their_fields(db_url: str) -> None:
    reqs = [(r.path, r.payload) for r in read_requests(DEMO / "chain.tsv")]
    outcomes = await run_requests(db_url, [reqs[i : i + 9] for i in range(0, len(reqs), 9)])
    assert all(o.ok for o in outcomes)
    rows = query(
        db_url,
        "SELECT raw_tx, sender, contract_id, function_name, fee, nonce FROM transactions",
    )
    manifest = json.loads((DEMO / "manifest.json").read_text())
    contracts = set(manifest["contracts"].values())
    calls = 0
    for raw, *fields in rows:
        assert tuple(fields) == tx_fields(bytes(raw))
        assert fields[1] in contracts  # every stored transaction calls or deploys ours
        calls += fields[2] is not None
    assert calls > len(rows) // 2, "most stored transactions are contract calls"
    canonical = query(db_url, "SELECT count(*) FROM transactions WHERE canonical")[0][0]
    with psycopg.connect(to_libpq_url(db_url)) as conn:
        conn.execute("SET ROLE recchain_analyst")
        got = conn.execute(
            "SELECT count(*), count(sender), count(fee), count(block_time) "
            "FROM analytics.transactions"
        ).fetchone()
        assert got == (canonical, canonical, canonical, canonical)
        by_function = conn.execute(
            "SELECT function_name, count(*) FROM analytics.transactions "
            "WHERE function_name IS NOT NULL GROUP BY 1"
        ).fetchall()
        assert len(by_function) > 3
        assert (
            conn.execute("SELECT obj_description('analytics.transactions'::regclass)")
            .fetchone()[0]
            .startswith("Canonical transactions")
        )  # type: ignore[index]


async def test_a_nonce_beyond_bigint_refuses_the_block(db_url: str) -> None:
    (huge,) = [v for v in load("transactions") if v["name"] == "contract call no args max nonce"]
    block = Chain(seed=70).grow(None, 1, "main")[0]
    old = block["transactions"][0]["txid"]
    block["transactions"][0].update(txid="0x" + huge["txid"], raw_tx="0x" + huge["hex"])
    for ev in block["events"]:
        if ev["txid"] == old:
            ev["txid"] = "0x" + huge["txid"]
    (outcome,) = await run_requests(db_url, [to_requests([block])])
    assert outcome.status == "rejected"
    assert outcome.reason is not None and "fee or nonce beyond" in outcome.reason
    assert query(db_url, "SELECT count(*) FROM blocks") == [(0,)]
    assert query(db_url, "SELECT count(*) FROM transactions") == [(0,)]
