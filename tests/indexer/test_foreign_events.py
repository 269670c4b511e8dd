"""Events the handlers do not understand (a watched foreign contract's prints and NFTs, a new
event kind or a changed field of a future contract version) are stored and skipped with a
warning and a metric; they never refuse their block, so no descendant is orphaned."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
from pydantic import SecretStr

from indexer import metrics, requests
from infra.config import DEFAULT_DEPLOYER, Settings
from ops.bench.chaingen import Chain, print_tuple, to_requests
from stacks.clarity import StringAsciiCV, UIntCV, encode_hex
from tests.indexer.conftest_db import fresh_db
from tests.indexer.helpers import query, run_requests, snapshot

FOREIGN = "ST3FBR2AGK5H9QBDH3EEN6DF8EK8JY7RX8NQXMNRQ.foreign-market"
CONTRACTS = ["verification", "rec-nft", "marketplace", "sbtc-token", FOREIGN]


def _print(contract: str, raw_value: str) -> dict[str, Any]:
    body = {"contract_identifier": contract, "topic": "print", "raw_value": raw_value}
    return {"type": "contract_event", "contract_event": body}


# What a deployment meets: each is valid Clarity that the handlers cannot apply.
NOISE = [
    _print(FOREIGN, encode_hex(UIntCV(7))),  # a print that is not a tuple
    _print(FOREIGN, print_tuple({"topic": "listed", "amount": 5})),  # no `event` field
    {  # an NFT of a foreign asset whose id is not a uint
        "type": "nft_mint_event",
        "nft_mint_event": {
            "asset_identifier": f"{FOREIGN}::item",
            "recipient": DEFAULT_DEPLOYER,
            "raw_value": encode_hex(StringAsciiCV("item-1")),
        },
    },
    # A new kind, and a known kind whose field changed type, in a future version of ours.
    _print(
        f"{DEFAULT_DEPLOYER}.verification",
        print_tuple({"event": "facility-renamed", "facility-id": 1, "name": "x"}),
    ),
    _print(
        f"{DEFAULT_DEPLOYER}.rec-nft",
        print_tuple({"event": "certificate-transferred", "token-id": "one"}),
    ),
]


def _with_noise(block: dict[str, Any]) -> dict[str, Any]:
    noisy = copy.deepcopy(block)
    txid = noisy["transactions"][0]["txid"]
    start = 1 + max((e["event_index"] for e in noisy["events"] if e["txid"] == txid), default=0)
    for i, ev in enumerate(NOISE):
        noisy["events"].append({"txid": txid, "event_index": start + i, "committed": True, **ev})
    return noisy


def _skipped() -> float:
    return sum(
        metrics.SKIPPED_EVENTS.labels(c)._value.get()
        for c in (FOREIGN, f"{DEFAULT_DEPLOYER}.verification", f"{DEFAULT_DEPLOYER}.rec-nft")
    )


@pytest.mark.parametrize("ahead", [False, True], ids=["tip", "catch-up"])
async def test_foreign_shapes_are_stored_and_skipped_never_refused(
    db_url: str,
    server_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    ahead: bool,
) -> None:
    monkeypatch.setattr(requests, "_warned", set())  # warnings are once per process
    chain = Chain(seed=70)
    main = chain.grow(None, 8, "main")
    side = chain.grow(main[3]["index_block_hash"], 6, "side")  # wins: re-applies stored blocks
    noisy_at = {main[5]["index_block_hash"], side[1]["index_block_hash"]}
    delivered = [_with_noise(b) if b["index_block_hash"] in noisy_at else b for b in main + side]
    settings = Settings(database_url=SecretStr(db_url), contracts=CONTRACTS)
    before = _skipped()
    with caplog.at_level(logging.WARNING, logger="recchain.indexer"):
        batches = [to_requests(delivered)] if ahead else [[r] for r in to_requests(delivered)]
        outcomes = await run_requests(db_url, batches, settings=settings, ahead=ahead)
    assert {o.status for o in outcomes} <= {"applied"}, outcomes
    assert _skipped() - before == len(NOISE) * len(noisy_at)
    warnings = [r.getMessage() for r in caplog.records if "not applied" in r.getMessage()]
    assert len(warnings) == len(NOISE), warnings  # once per contract and reason, not per event
    assert any("not a tuple" in w for w in warnings)
    assert any("facility-renamed" in w for w in warnings)

    canonical = main[:4] + side
    assert query(db_url, "SELECT count(*) FROM blocks WHERE canonical") == [(len(canonical),)]
    assert query(db_url, "SELECT count(*) FROM blocks WHERE orphan") == [(0,)]
    # Stored for analysts and a later reindex, with the raw value as received.
    stored = query(
        db_url,
        "SELECT count(*) FROM events WHERE index_block_hash = ANY(%s) AND "
        "(contract_id LIKE %s OR kind IN ('facility-renamed') OR kind IS NULL AND type = "
        "'contract_event')",
        list(noisy_at),
        f"{FOREIGN}%",
    )
    assert stored == [(len(NOISE) * len(noisy_at),)]
    with fresh_db(server_url) as clean:
        plain = Settings(database_url=SecretStr(clean), contracts=CONTRACTS)
        await run_requests(clean, [to_requests(canonical)], settings=plain)
        assert snapshot(db_url) == snapshot(clean)
