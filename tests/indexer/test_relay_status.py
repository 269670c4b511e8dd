"""Relayed transactions (the writer's outbox) follow the chain: mined when their block becomes
canonical, back to broadcast when a fork removes it, mined again on the winning branch."""

from __future__ import annotations

from ops.bench.chaingen import Chain, new_block, to_requests
from tests.indexer.helpers import query, run_requests


def _outbox(db_url: str, txid: str) -> None:
    import psycopg

    from db.session import to_libpq_url

    with psycopg.connect(to_libpq_url(db_url)) as conn:
        conn.execute(
            "INSERT INTO relay_txs (txid, raw_tx, status, sender, nonce, fee, contract_id, "
            "function_name) VALUES (%s, '\\x00', 'broadcast', 'ST1', 0, 180, 'c', 'f')",
            (txid,),
        )


async def test_relayed_transaction_follows_forks(db_url: str) -> None:
    chain = Chain(seed=50)
    main = chain.grow(None, 3, "main")
    txid = main[2]["transactions"][0]["txid"]
    _outbox(db_url, txid)
    await run_requests(db_url, [to_requests(main)])
    assert query(db_url, "SELECT status, block_height FROM relay_txs") == [("mined", 3)]
    # a longer branch from block 2 without that transaction
    side = chain.grow(main[1]["index_block_hash"], 2, "side")
    await run_requests(db_url, [to_requests(side)])
    assert query(db_url, "SELECT status, block_height FROM relay_txs") == [("broadcast", None)]
    # re-mined (aborted this time) on top of the new tip
    again = new_block(5, side[-1]["index_block_hash"], "again", [[]])
    again["transactions"][0].update(txid=txid, status="abort_by_response", raw_result="0x0801")
    await run_requests(db_url, [to_requests([again])])
    assert query(db_url, "SELECT status, tx_status, result FROM relay_txs") == [
        ("failed", "abort_by_response", "0x0801")
    ]


async def test_the_chain_overrides_a_refusal_the_relay_recorded(db_url: str) -> None:
    """A resend of a transaction already mined comes back BadNonce; when the relay could not
    learn from the node that it holds the txid, the row says `rejected` until its block is
    indexed, and the block's record wins."""
    import psycopg

    from db.session import to_libpq_url

    chain = Chain(seed=51)
    main = chain.grow(None, 2, "main")
    txid = main[1]["transactions"][0]["txid"]
    _outbox(db_url, txid)
    with psycopg.connect(to_libpq_url(db_url)) as conn:
        conn.execute(
            "UPDATE relay_txs SET status = 'rejected', reason = 'BadNonce', "
            'reason_data = \'{"expected": 1, "actual": 0}\''
        )
    await run_requests(db_url, [to_requests(main)])
    assert query(db_url, "SELECT status, block_height, reason, reason_data FROM relay_txs") == [
        ("mined", 2, None, None)
    ]
