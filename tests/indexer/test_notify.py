"""NOTIFY recchain_blocks: delivered only after commit, naming the new tip and what changed; a
fork sends an explicit rollback notification too."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from db.channels import BLOCKS
from db.session import to_libpq_url
from ops.bench.chaingen import Chain, to_requests
from tests.indexer.helpers import run_requests


def _drain(conn: psycopg.Connection[tuple[object, ...]]) -> list[dict[str, Any]]:
    return [json.loads(n.payload) for n in conn.notifies(timeout=0.5, stop_after=50)]


async def test_block_and_rollback_notifications(db_url: str) -> None:
    chain = Chain(seed=60)
    main = chain.grow(None, 3, "main")
    side = chain.grow(main[0]["index_block_hash"], 3, "side")
    with psycopg.connect(to_libpq_url(db_url), autocommit=True) as listener:
        listener.execute(f"LISTEN {BLOCKS}")
        await run_requests(db_url, [to_requests(main)])
        (tip,) = _drain(listener)
        assert (tip["height"], tip["hash"]) == (3, main[-1]["index_block_hash"])
        assert tip["changes"]["certificates"], "minted certificates are named"
        assert tip["rolled_back"] == []
        await run_requests(db_url, [to_requests(side)])
        notes = _drain(listener)
    rollback = [n for n in notes if "fork_height" in n]
    assert len(rollback) == 1 and rollback[0]["fork_height"] == 1
    assert set(rollback[0]["rolled_back"]) == {b["index_block_hash"] for b in main[1:]}
    assert notes[-1]["hash"] == side[-1]["index_block_hash"]
