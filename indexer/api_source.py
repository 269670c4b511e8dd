"""Follow a Stacks Blockchain API (STACKS.md §3) when there is no node of our own.

Shapes used (hirosystems/stacks-blockchain-api, `@stacks/stacks-blockchain-api-types`):
- `GET /extended/v2/blocks?limit=1` -> `{results: [block]}` (the tip);
- `GET /extended/v2/blocks/{height}` -> block `{height, hash, index_block_hash,
  parent_index_block_hash, parent_block_hash, block_time, burn_block_*, tx_count}`;
- `GET /extended/v2/blocks/{height}/transactions?limit&offset` -> `{total, results: [tx]}` with
  `tx_id, tx_index, tx_status, tx_result {hex}, event_count`;
- `GET /extended/v1/tx/events?tx_id&limit&offset` -> `{events: [...]}` with `event_type`
  `smart_contract_log {contract_log {contract_id, topic, value {hex}}}`,
  `non_fungible_token_asset` / `fungible_token_asset` / `stx_asset {asset {asset_event_type,
  asset_id, sender, recipient, value {hex} | amount}}`;
- websocket `/extended/v1/ws`, JSON-RPC `subscribe {event: "block"}` -> `block` notifications.

Each block is rebuilt in the observer's `/new_block` shape and goes through the same pipeline.
Missed websocket messages are never replayed by the API, so every (re)connect and every
notification triggers a reconciliation by height from our tip: walk back while our block at a
height differs from the API's (a reorg happened), then fetch forward to the API's tip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import httpx
import tenacity
import websockets

from indexer import metrics
from indexer.errors import SourceError
from indexer.pipeline import Indexer, Request

log = logging.getLogger("recchain.indexer.api")
PAGE = 50  # the API caps pages at 50-200 depending on the route


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited; retry after {retry_after}s")
        self.retry_after = retry_after


class Retryable(Exception):
    pass


def _wait(state: tenacity.RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, RateLimited):
        return min(exc.retry_after, 300.0)
    return float(tenacity.wait_exponential_jitter(initial=0.5, max=30)(state))


class ApiSource:
    def __init__(
        self, indexer: Indexer, base_url: str, client: httpx.AsyncClient | None = None
    ) -> None:
        self.indexer = indexer
        self.base_url = base_url.rstrip("/")
        self.client = client or httpx.AsyncClient(base_url=self.base_url, timeout=30)
        self.wake = asyncio.Event()

    async def _get(self, path: str, **params: Any) -> Any:
        async for attempt in tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type((RateLimited, Retryable, httpx.TransportError)),
            wait=_wait,
            stop=tenacity.stop_after_attempt(12),
            reraise=True,
        ):
            with attempt:
                r = await self.client.get(path, params=params or None)
                if r.status_code == 429:
                    after = r.headers.get("retry-after", "1")
                    raise RateLimited(float(after) if after.replace(".", "").isdigit() else 1.0)
                if r.status_code == 404:
                    return None
                if r.status_code >= 500:
                    raise Retryable(f"{path}: HTTP {r.status_code}")
                if r.status_code != 200:
                    raise SourceError(f"{path}: HTTP {r.status_code}: {r.text[:200]}")
                return r.json()
        raise AssertionError("unreachable")

    async def tip_height(self) -> int:
        page = await self._get("/extended/v2/blocks", limit=1)
        results = (page or {}).get("results") or []
        return int(results[0]["height"]) if results else 0

    async def block_payload(self, height: int) -> dict[str, Any] | None:
        block = await self._get(f"/extended/v2/blocks/{height}")
        if block is None:
            return None
        txs: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = await self._get(
                f"/extended/v2/blocks/{height}/transactions", limit=PAGE, offset=offset
            )
            results = page["results"]
            txs += results
            offset += len(results)
            if not results or offset >= page.get("total", 0):
                break
        events: list[dict[str, Any]] = []
        transactions = []
        for tx in txs:
            transactions.append(
                {
                    "txid": tx["tx_id"],
                    "tx_index": tx["tx_index"],
                    "status": tx["tx_status"],
                    "raw_result": (tx.get("tx_result") or {}).get("hex"),
                }
            )
            if not tx.get("event_count"):
                continue
            offset = 0
            while offset < tx["event_count"]:
                page = await self._get(
                    "/extended/v1/tx/events", tx_id=tx["tx_id"], limit=PAGE, offset=offset
                )
                got = page["events"]
                if not got:
                    break
                offset += len(got)
                events += [e for e in map(_observer_event, got) if e is not None]
        return {
            "block_hash": block["hash"],
            "block_height": block["height"],
            "index_block_hash": block["index_block_hash"],
            "parent_index_block_hash": block["parent_index_block_hash"],
            "parent_block_hash": block.get("parent_block_hash"),
            "burn_block_hash": block.get("burn_block_hash"),
            "burn_block_height": block.get("burn_block_height"),
            "burn_block_time": block.get("burn_block_time"),
            "block_time": block.get("block_time"),
            "transactions": transactions,
            "events": events,
        }

    async def _our_hash(self, height: int) -> str | None:
        cur = await self.indexer.pg.execute(
            "SELECT index_block_hash FROM blocks WHERE canonical AND block_height = %s", (height,)
        )
        row = await cur.fetchone()
        await self.indexer.conn.commit()
        return None if row is None else str(row[0])

    async def reconcile(self) -> int:
        """Bring the database to the API's tip; returns the number of blocks fetched."""
        api_tip = await self.tip_height()
        ours = self.indexer.tip[1] if self.indexer.tip else 0
        metrics.LAG.set(max(api_tip - ours, 0))
        # Nothing below the root is indexed: an empty database backfills from the root, and the
        # walk back stops there (a disagreement at the root is refused by the pipeline).
        floor = self.indexer.settings.indexer.start_height - 1
        height = max(min(ours, api_tip), floor)
        while height > floor:  # find the highest height where both agree
            theirs = await self._get(f"/extended/v2/blocks/{height}")
            if theirs is not None and theirs["index_block_hash"] == await self._our_hash(height):
                break
            height -= 1
        fetched = 0
        for h in range(height + 1, api_tip + 1):
            payload = await self.block_payload(h)
            if payload is None:
                break
            (outcome,) = await self.indexer.process(
                [Request("/new_block", json.dumps(payload, separators=(",", ":")))]
            )
            if not outcome.ok:
                raise SourceError(f"block {h} from the API was refused: {outcome.reason}")
            fetched += 1
        metrics.LAG.set(0)
        return fetched

    async def _listen(self) -> None:
        ws_url = self.base_url.replace("http", "ws", 1) + "/extended/v1/ws"
        async for ws in websockets.connect(ws_url, open_timeout=10):
            try:
                subscribe = {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "subscribe",
                    "params": {"event": "block"},
                }
                await ws.send(json.dumps(subscribe))
                self.wake.set()  # reconcile after every (re)connect
                async for message in ws:
                    data = json.loads(message)
                    if data.get("method") == "block":
                        self.wake.set()
            except websockets.ConnectionClosed:
                log.warning("api websocket closed; reconnecting")
                continue

    async def run(self, poll_interval: float = 30.0) -> None:
        listener = asyncio.create_task(self._listen())
        try:
            while True:
                # polling is the safety net for a silent websocket
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=poll_interval)
                self.wake.clear()
                await self.reconcile()
        finally:
            listener.cancel()


def _observer_event(e: dict[str, Any]) -> dict[str, Any] | None:
    base = {"txid": e["tx_id"], "event_index": e["event_index"], "committed": True}
    kind = e.get("event_type")
    if kind == "smart_contract_log":
        log_ = e["contract_log"]
        body = {
            "contract_identifier": log_["contract_id"],
            "topic": log_["topic"],
            "raw_value": log_["value"]["hex"],
        }
        return {**base, "type": "contract_event", "contract_event": body}
    asset = e.get("asset")
    if asset is None:
        return None
    action = asset["asset_event_type"]
    body = {k: asset[k] for k in ("sender", "recipient") if asset.get(k)}
    if kind == "non_fungible_token_asset":
        body.update(asset_identifier=asset["asset_id"], raw_value=asset["value"]["hex"])
        t = f"nft_{action}_event"
    elif kind == "fungible_token_asset":
        body.update(asset_identifier=asset["asset_id"], amount=asset["amount"])
        t = f"ft_{action}_event"
    elif kind == "stx_asset":
        body.update(amount=asset["amount"])
        t = f"stx_{action}_event"
    else:
        return None
    return {**base, "type": t, t: body}
