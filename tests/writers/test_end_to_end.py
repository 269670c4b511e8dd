"""The whole write path, each role its own process on loopback (ops/bench/e2e.py): a devnet
wallet signs a purchase, the relay accepts and broadcasts it, the devnet node mines it and pushes
the block to the indexer, and a `relayStatus` subscriber of the GraphQL API sees it `mined`; the
sale and the new owner are then queryable. Skipped only when Node.js is not installed."""

from __future__ import annotations

import shutil

import pytest

from ops.bench.e2e import NODE_SCRIPT, Stack


@pytest.fixture(autouse=True)
def _needs_node() -> None:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed: the devnet node and the signer need it")
    assert NODE_SCRIPT.exists()


async def test_a_signed_purchase_is_relayed_mined_indexed_and_pushed(db_url: str) -> None:
    async with Stack(db_url) as stack:
        start_height = await stack.wait_in_sync()
        listings = await stack.active_listings()
        assert listings, "the demo chain leaves fixed-price listings open"
        listing = listings[0]
        assert await stack.owner_of(listing.token_id) is not None
        assert await stack.sale_of(listing.listing_id) == []

        purchase = await stack.sign_purchase(listing)
        seen = await stack.relay_and_watch(purchase)

        assert seen.submit_http_status == 202, seen.submit_answer
        assert seen.submit_answer == {"txid": purchase.txid, "status": "received"}
        # Pushes carry the row as it is when the notification is handled, so a step the next
        # one overtook may be skipped; none may come out of order or repeat.
        lifecycle = ["received", "broadcast", "mempool", "mined"]
        statuses = [s["status"] for s in seen.statuses]
        assert statuses == [s for s in lifecycle if s in statuses], statuses
        final = seen.statuses[-1]
        assert final["status"] == "mined", (seen.statuses, stack.logs())
        assert final["txid"] == purchase.txid
        assert final["txStatus"] == "success"
        assert final["blockHeight"] is not None and final["blockHeight"] > start_height
        # The subscription only reports what the database says, and the relay rows, the sale
        # and custody come from the same indexed block.
        assert (await stack.indexed_tip() or (0, ""))[0] >= final["blockHeight"]
        sales = await stack.sale_of(listing.listing_id)
        assert [(s["txid"], s["buyer"], s["tokenId"], int(s["price"])) for s in sales] == [
            (purchase.txid, purchase.buyer, listing.token_id, listing.price)
        ]
        assert sales[0]["blockHeight"] == final["blockHeight"]
        assert await stack.owner_of(listing.token_id) == purchase.buyer
