"""Nakamoto blocks: what they carry for finality and audit is stored (the real Nakamoto
recording's tenure heights, consensus hashes, signer signature hashes and counts), and
finality follows the Nakamoto rule of db/finality.py: a signed block is final once its burn
block is `indexer.nakamoto_burn_confirmations` deep, with the depth rule as the floor; a fork
that would undo a final block is held like one beyond the depth horizon."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr

from db.finality import final_height, finalized_height
from db.session import create_engine
from infra.config import IndexerSettings, Settings
from ops.bench.chaingen import Chain, to_requests
from tests import recordings
from tests.indexer.helpers import query, run_requests

NAKAMOTO = recordings.RECORDINGS / "fuzzed-transactions-1.tsv"
SIGNATURE = "01" + "ab" * 64  # 65 bytes, as stacks-node writes them (no 0x)


def signed(blocks: list[dict[str, Any]], signers: int = 3) -> list[dict[str, Any]]:
    """The blocks as Nakamoto blocks signed by `signers` signers (one tenure per block)."""
    for b in blocks:
        b["tenure_height"] = b["block_height"]
        b["consensus_hash"] = "0x" + b["burn_block_hash"][2:42]
        b["signer_signature_hash"] = "0x" + b["block_hash"][2:]
        b["signer_signature"] = [SIGNATURE] * signers
    return blocks


@pytest.mark.skipif(not NAKAMOTO.exists(), reason=recordings.ABSENT)
async def test_the_real_nakamoto_recording_is_stored_for_audit(db_url: str) -> None:
    reqs = list(recordings.requests(NAKAMOTO))
    expected = {}
    for path, payload in reqs:
        if path == "/new_block" and json.loads(payload)["block_height"] >= 1:  # the start height
            b = json.loads(payload)
            sigs = b.get("signer_signature")
            expected[b["index_block_hash"]] = (
                b.get("tenure_height"), b.get("consensus_hash"), b.get("signer_signature_hash"),
                None if sigs is None else len(sigs),
            )  # fmt: skip
    await run_requests(db_url, [[r] for r in reqs])
    rows = query(
        db_url,
        "SELECT index_block_hash, tenure_height, consensus_hash, signer_signature_hash, "
        "signer_count FROM blocks",
    )
    assert {r[0]: tuple(r[1:]) for r in rows} == expected
    assert any(c and c > 0 for *_, c in expected.values()), "the recording has signed blocks"


def test_the_rule_takes_the_higher_of_depth_and_signed() -> None:
    s = Settings(indexer=IndexerSettings(finality_depth=10))
    assert finalized_height(None, s) == 0
    assert finalized_height(50, s) == 40
    assert finalized_height(50, s, signed_final=47) == 47
    assert finalized_height(50, s, signed_final=12) == 40
    assert finalized_height(50, s, signed_final=60) == 50


async def _final(db_url: str, settings: Settings) -> int:
    engine = create_engine(db_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            pg = raw.driver_connection
            assert pg is not None
            (tip,) = query(db_url, "SELECT max(block_height) FROM blocks WHERE canonical")[0]
            return await final_height(pg, tip, settings)
    finally:
        await engine.dispose()


async def test_signed_blocks_are_final_once_their_burn_block_is_buried(db_url: str) -> None:
    settings = Settings(
        database_url=SecretStr(db_url),
        indexer=IndexerSettings(finality_depth=1000, nakamoto_burn_confirmations=6),
    )
    chain = Chain(seed=61)
    blocks = signed(chain.grow(None, 20, "main"))  # burn height = height + 100
    await run_requests(db_url, [to_requests(blocks)], settings)
    assert await _final(db_url, settings) == 14  # burn 114 is 6 below the tip's 120

    # Unsigned (pre-Nakamoto) blocks: the depth rule alone.
    query(db_url, "UPDATE blocks SET signer_count = NULL RETURNING 1")
    assert await _final(db_url, settings) == 0
    query(db_url, "UPDATE blocks SET signer_count = 3 RETURNING 1")

    # A fork that keeps block 14 is applied; one that would undo it is held.
    above = signed(chain.grow(blocks[15]["index_block_hash"], 6, "above"))  # from 16: 17..22
    await run_requests(db_url, [to_requests(above)], settings)
    (tip,) = query(db_url, "SELECT index_block_hash FROM checkpoints")[0]
    assert tip == above[-1]["index_block_hash"]
    below = signed(chain.grow(blocks[11]["index_block_hash"], 12, "below"))  # from 12: 13..24
    outcomes = await run_requests(db_url, [[r] for r in to_requests(below)], settings)
    held = [o for o in outcomes if o.status == "held"]
    assert held and "final by the Nakamoto rule" in (held[0].reason or "")
    (tip,) = query(db_url, "SELECT index_block_hash FROM checkpoints")[0]
    assert tip == above[-1]["index_block_hash"], "the final chain stays"
    assert query(db_url, "SELECT kind FROM chain_holds WHERE resolved_at IS NULL") == [
        ("deep_fork",)
    ]


async def test_a_malformed_signature_list_is_refused(db_url: str) -> None:
    block = signed(Chain(seed=63).grow(None, 1, "main"))[0]
    block["signer_signature"] = ["zz"]
    (outcome,) = await run_requests(db_url, [[("/new_block", json.dumps(block))]])
    assert outcome.status == "rejected" and "signer_signature[0]" in (outcome.reason or "")
    assert query(db_url, "SELECT count(*) FROM blocks") == [(0,)]
