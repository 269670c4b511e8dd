"""Blocks made with the benchmark's market model (ops.bench.chaingen) and indexed through the
real indexer pipeline, one block per commit: for tests that watch the API follow a live chain."""

from __future__ import annotations

import random
from typing import Any

from ops.bench.chaingen import GENESIS, Market, new_block, to_requests
from tests.indexer.helpers import run_requests


class LiveChain:
    def __init__(self, db_url: str, label: str = "live", seed: int = 3) -> None:
        self.db_url = db_url
        self.label = label
        self.market = Market(seed=seed)
        self.rng = random.Random(seed)
        self.height = 0
        self.tip = GENESIS
        self.blocks: list[dict[str, Any]] = []

    def fork(self, parent: dict[str, Any], label: str) -> None:
        """Build further blocks on `parent` (an earlier block), named by `label`: a competing
        branch, which wins once it is longer. Its blocks should carry no market operations
        (the market model follows one branch only)."""
        self.height = int(parent["block_height"])
        self.tip = parent["index_block_hash"]
        self.label = label

    def make(self, txs: list[list[dict[str, Any]]]) -> dict[str, Any]:
        """The next block on the tip carrying `txs` (each a list of events), not yet indexed."""
        block = new_block(self.height + 1, self.tip, self.label, txs)
        self.height += 1
        self.tip = block["index_block_hash"]
        self.blocks.append(block)
        return block

    async def index(self, *blocks: dict[str, Any]) -> None:
        """Through the pipeline, in one run (each block its own commit and NOTIFY)."""
        outcomes = await run_requests(self.db_url, [to_requests(list(blocks))])
        assert [o.status for o in outcomes] == ["applied"] * len(blocks), outcomes

    async def add(self, txs: list[list[dict[str, Any]]]) -> dict[str, Any]:
        block = self.make(txs)
        await self.index(block)
        return block

    # Market operations, each one transaction's events.
    def setup_and_mint(self, tokens: int = 1) -> list[list[dict[str, Any]]]:
        txs = self.market.setup()
        txs += [self.market.mint(self.rng, self.height + 1) for _ in range(tokens)]
        return txs

    def list_token(self, token_id: int) -> list[dict[str, Any]]:
        return self.market.list_fixed(self.rng, token_id, self.height + 1)

    def buy(self, listing_id: int) -> list[dict[str, Any]]:
        return self.market.buy(self.rng, listing_id, retire=False)

    def transfer(self, token_id: int) -> list[dict[str, Any]]:
        return self.market.transfer(self.rng, token_id)


async def caught_up(hub: Any, chain: LiveChain) -> None:
    """Until the API's hub has dispatched the notification of the chain's tip, so that a
    subscription made now gets only later blocks live (a notification still on its way would
    otherwise be pushed to it, correctly but not as the test expects)."""
    from tests.graphql_api.wsclient import wait_for

    await wait_for(lambda: hub.notified_hash == chain.tip, "the hub to dispatch the tip")
