"""The outbox feed through the real indexer pipeline on a real PostgreSQL: events commit with
their blocks, numbered per endpoint in chain order; a fork retracts what it orphaned; delivery at
finality gets each final block once and never a rollback."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from infra.config import IndexerSettings, Settings
from ops.bench.chaingen import Chain, to_requests
from tests.indexer.conftest_db import fresh_db
from tests.indexer.helpers import query, run_requests
from tests.webhooks.helpers import add_endpoint, events


def _canonical(db_url: str) -> list[tuple[int, str]]:
    return query(
        db_url,
        "SELECT block_height, index_block_hash FROM blocks WHERE canonical ORDER BY 1",
    )


async def test_no_endpoint_no_events(db_url: str) -> None:
    chain = Chain(seed=1)
    await run_requests(db_url, [[r] for r in to_requests(chain.grow(None, 4, "main"))])
    assert query(db_url, "SELECT count(*) FROM webhook_events") == [(0,)]
    assert len(_canonical(db_url)) == 4


async def test_events_follow_the_chain_in_order(db_url: str) -> None:
    blocks_ep = await add_endpoint(db_url, ["block"])
    listings_ep = await add_endpoint(
        db_url, [{"kind": "listing", "where": {"status": "active"}}, "retirement"]
    )
    chain = Chain(seed=2, txs_per_block=4)
    await run_requests(db_url, [[r] for r in to_requests(chain.grow(None, 12, "main"))])

    got = events(db_url, blocks_ep)
    assert [e["seq"] for e in got] == list(range(1, len(got) + 1))
    assert [(e["block_height"], e["index_block_hash"]) for e in got] == _canonical(db_url)
    assert all(e["type"] == "block" and e["status"] == "pending" for e in got)
    assert got[0]["payload"]["block"]["height"] == 1

    mine = events(db_url, listings_ep)
    assert [e["seq"] for e in mine] == list(range(1, len(mine) + 1))
    heights = [e["block_height"] for e in mine]
    assert heights == sorted(heights)
    # Exactly the active listing versions and the retirements the tables hold.
    want_listings = query(
        db_url, "SELECT listing_id, block_from FROM listings WHERE status = 'active' ORDER BY 2, 1"
    )
    want_retirements = query(db_url, "SELECT id FROM retirements ORDER BY block_height, id")
    assert want_listings and want_retirements, "the chain made listings and retirements"
    listing_events = [e for e in mine if e["type"] == "listing"]
    assert [(e["payload"]["listingId"], e["payload"]["blockHeight"]) for e in listing_events] == [
        tuple(r) for r in want_listings
    ]
    assert all(e["payload"]["listing"]["status"] == "active" for e in listing_events)
    assert {e["payload"]["kind"] for e in listing_events} <= {
        "created", "bid", "priceChanged", "updated"
    }  # fmt: skip
    created = next(e for e in listing_events if e["payload"]["kind"] == "created")
    cert = created["payload"]["listing"]["certificate"]
    assert cert["tokenId"] == created["payload"]["listing"]["tokenId"]
    assert cert["facility"]["facilityId"] == cert["facilityId"]
    assert len([e for e in mine if e["type"] == "retirement"]) == len(want_retirements)


async def test_fork_retracts_what_it_orphaned(db_url: str) -> None:
    ep = await add_endpoint(db_url, ["block", "certificate"])
    chain = Chain(seed=3, txs_per_block=3)
    main = chain.grow(None, 8, "main")
    side = chain.grow(main[3]["index_block_hash"], 6, "side")  # heights 5..10 beat 8
    await run_requests(db_url, [[r] for r in to_requests(main)])
    before = {e["event_id"]: e for e in events(db_url, ep)}
    orphaned = {b["index_block_hash"] for b in main[4:]}
    doomed = [e["event_id"] for e in before.values() if e["index_block_hash"] in orphaned]
    assert doomed
    last_seq = max(e["seq"] for e in before.values())

    await run_requests(db_url, [[r] for r in to_requests(side)])
    after = events(db_url, ep)
    assert [e["seq"] for e in after] == list(range(1, len(after) + 1))
    rollbacks = [e for e in after if e["type"] == "rollback"]
    assert len(rollbacks) == 1
    rb = rollbacks[0]
    # The side branch's first block (height 5) arrived alone: nothing was re-applied before
    # the fork, so the rollback comes right after the old branch's events.
    assert rb["seq"] == last_seq + 1
    assert rb["block_height"] == 4 and rb["index_block_hash"] == main[3]["index_block_hash"]
    assert rb["payload"]["forkHeight"] == 4
    assert rb["payload"]["retracts"] == doomed
    assert set(rb["payload"]["rolledBack"]) == orphaned
    for e in after:
        if e["event_id"] in doomed:
            assert e["status"] == "retracted" and e["retracted_by"] == rb["event_id"]
    # After the rollback: the new branch, in order, and nothing of the orphaned blocks.
    newer = [e for e in after if e["seq"] > rb["seq"]]
    assert newer and not {e["index_block_hash"] for e in newer} & orphaned
    blocks = [(e["block_height"], e["index_block_hash"]) for e in after if e["type"] == "block"]
    live = [b for b in blocks if b[1] not in orphaned]
    assert live == _canonical(db_url)


async def test_fork_and_back_gives_new_ids(db_url: str) -> None:
    ep = await add_endpoint(db_url, ["block"])
    chain = Chain(seed=4)
    main = chain.grow(None, 6, "main")
    side = chain.grow(main[2]["index_block_hash"], 4, "side")  # 4..7 beat 6
    back = chain.grow(main[-1]["index_block_hash"], 2, "back")  # 7..8: main wins again
    await run_requests(db_url, [[r] for r in to_requests(main + side + back)])
    got = events(db_url, ep)
    rollbacks = [e for e in got if e["type"] == "rollback"]
    assert len(rollbacks) == 2
    # main's blocks 4..6 were given twice: retracted the first time, new ids the second.
    by_hash: dict[str, list[dict[str, Any]]] = {}
    for e in got:
        if e["type"] == "block":
            by_hash.setdefault(e["index_block_hash"], []).append(e)
    again = by_hash[main[4]["index_block_hash"]]
    assert len(again) == 2 and again[0]["event_id"] != again[1]["event_id"]
    assert again[0]["retracted_by"] == rollbacks[0]["event_id"]
    assert again[1]["retracted_by"] is None
    assert set(rollbacks[1]["payload"]["retracts"]) == {
        e["event_id"] for e in got if e["index_block_hash"] in {b["index_block_hash"] for b in side}
    }


async def test_delivery_at_finality(db_url: str) -> None:
    settings = Settings(database_url=SecretStr(db_url), indexer=IndexerSettings(finality_depth=3))
    tip_ep = await add_endpoint(db_url, ["block"])
    final_ep = await add_endpoint(db_url, ["block"], delivery="final")
    chain = Chain(seed=5)
    main = chain.grow(None, 10, "main")
    side = chain.grow(main[7]["index_block_hash"], 3, "side")  # 9..11 beat 10: depth 2
    await run_requests(db_url, [[r] for r in to_requests(main + side)], settings=settings)
    canonical = _canonical(db_url)
    final = [e for e in events(db_url, final_ep)]
    # Tip 11, depth 3: heights 1..8 are final, each delivered once, all canonical.
    assert [(e["block_height"], e["index_block_hash"]) for e in final] == canonical[:8]
    assert [e["seq"] for e in final] == list(range(1, 9))
    assert len([e for e in events(db_url, tip_ep) if e["type"] == "rollback"]) == 1


async def test_catch_up_batches_feed_the_same_events(db_url: str, server_url: str) -> None:
    chain = Chain(seed=6, txs_per_block=3)
    main = chain.grow(None, 20, "main")
    side = chain.grow(main[9]["index_block_hash"], 12, "side")
    reqs = to_requests(main + side)
    specs: list[Any] = ["block", "listing", "certificate", "retirement"]

    def shape(db: str, ep: int) -> list[tuple[Any, ...]]:
        out = []
        for e in events(db, ep):
            if e["type"] == "rollback" or e["status"] == "retracted":
                continue
            out.append((e["type"], e["block_height"], e["index_block_hash"], str(e["payload"])))
        return out

    ep = await add_endpoint(db_url, specs)
    await run_requests(db_url, [reqs[i : i + 7] for i in range(0, len(reqs), 7)], ahead=True)
    with fresh_db(server_url) as other:
        ep2 = await add_endpoint(other, specs)
        await run_requests(other, [[r] for r in reqs])
        # Batched or not, the live events describe the same canonical chain.
        assert shape(db_url, ep) == shape(other, ep2)
    assert len(shape(db_url, ep)) > 20
