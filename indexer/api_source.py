"""Follow a Stacks Blockchain API when there is no node of our own (docs/stacks.md, "Stacks
Blockchain API").

It asks only about what touches the watched contracts, never for every transaction of every
block (hosted APIs allow 50 requests a minute without a key, 500 with one:
docs.hiro.so/resources/guides/rate-limits). Routes (hirosystems/stacks-blockchain-api
`openapi.yaml`, release 9.0.2), per reconciliation from our tip T to the API's tip:

- `GET /extended/v2/blocks?limit=30&offset=N`: block headers, newest first, 30 a request (the
  first page also names the API's tip); every block is needed, watched or not, so the chain is
  continuous and forks are seen;
- per watched contract C, newest first, only until the pages reach T:
  `GET /extended/v2/smart-contracts/C/logs` (every print of C, whoever called it: each
  state-changing call of our contracts prints one tuple, contracts/EVENTS.md; the page's
  `cursor`, `block_height:microblock_sequence:tx_index:event_index`, says how recent it is) and
  `GET /extended/v3/principals/C/transactions` (calls of C, failed ones included, and STX, FT and
  NFT movements to or from it, each with its block);
- `GET /extended/v1/tx/multiple?tx_id=...&event_limit=100` for the new transactions found, 20 a
  request, with their events (more pages of events by `event_offset` for a larger one).

So a block without watched activity costs 1/30 of a header page; every reconciliation costs
1 + 2 x (watched contracts) requests, plus one per 20 watched transactions. Reconciliations run
on each websocket `block` notification (JSON-RPC `subscribe {event: "block"}` on
`/extended/v1/ws`), or after `indexer.api_poll_s`, but never more often than
`indexer.api_requests_per_minute` allows: requests are paced to it, and a 429 waits its
`Retry-After`. `indexer.api_key` is sent as `x-api-key`.

Each block is rebuilt in the observer's `/new_block` shape (its watched transactions and their
events; `tx_count` from the header) and goes through the same pipeline. The API gives no
transaction bytes, so each transaction carries instead the `summary` the observer path decodes
from them (sender, called or deployed contract, function, fee, nonce), taken from the API's JSON.
Missed websocket messages are never replayed by the API, so every (re)connect triggers a
reconciliation by height from our tip: walk back while our block at a height differs from the
API's (a reorg happened), then fetch forward to the API's tip. A transaction whose block is not
the header's (the API reorganised between two requests) makes the reconciliation start again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import httpx
import tenacity
import websockets

from indexer import metrics
from indexer.errors import SourceError
from indexer.pipeline import Indexer
from indexer.requests import Request
from infra.config import Settings
from infra.netguard import parse_retry_after

log = logging.getLogger("recchain.indexer.api")
BLOCK_PAGE = 30  # the API's caps (src/api/pagination.ts): blocks 30, events 100, txs 50
LOG_PAGE = 100
TX_PAGE = 50
EVENT_PAGE = 100
TX_BATCH = 20  # txids per /tx/multiple (each is 66 characters of the URL)


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited; retry after {retry_after}s")
        self.retry_after = retry_after


class Retryable(Exception):
    pass


class _Moved(Exception):
    """The API's chain changed during a reconciliation: start it again."""


def _wait(state: tenacity.RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, RateLimited):
        return exc.retry_after
    return float(tenacity.wait_exponential_jitter(initial=0.5, max=30)(state))


def _height_of(cursor: Any) -> int | None:
    """The block height a cursor (`height:...`) names."""
    if not isinstance(cursor, str) or ":" not in cursor:
        return None
    head = cursor.split(":", 1)[0]
    return int(head) if head.isdigit() else None


class ApiSource:
    def __init__(
        self,
        indexer: Indexer,
        base_url: str,
        client: httpx.AsyncClient | None = None,
        *,
        api_key: str | None = None,
        requests_per_minute: float | None = None,
    ) -> None:
        self.indexer = indexer
        self.base_url = base_url.rstrip("/")
        headers = {"x-api-key": api_key} if api_key else None
        self.client = client or httpx.AsyncClient(
            base_url=self.base_url, timeout=30, headers=headers
        )
        self.wake = asyncio.Event()
        self.watched = sorted(indexer.watched)
        self._gap = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._next_at = 0.0
        self.requests = 0  # every HTTP request sent (the benchmark's measure)

    @classmethod
    def from_settings(cls, indexer: Indexer, settings: Settings) -> ApiSource:
        s = settings.indexer
        key = s.api_key.get_secret_value() if s.api_key is not None else None
        return cls(indexer, s.api_url, api_key=key, requests_per_minute=s.api_requests_per_minute)

    async def _pace(self) -> None:
        """Space requests to the configured rate, so that the API's limit is not reached."""
        if not self._gap:
            return
        now = time.monotonic()
        if self._next_at > now:
            await asyncio.sleep(self._next_at - now)
        self._next_at = max(now, self._next_at) + self._gap

    async def _get(self, path: str, params: Any = None) -> Any:
        async for attempt in tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type((RateLimited, Retryable, httpx.TransportError)),
            wait=_wait,
            stop=tenacity.stop_after_attempt(12),
            reraise=True,
        ):
            with attempt:
                await self._pace()
                self.requests += 1
                r = await self.client.get(path, params=params or None)
                if r.status_code == 429:
                    wait = parse_retry_after(r.headers.get("retry-after"), default=1.0, cap=300.0)
                    log.warning("the API rate-limits us: waiting %.1f s (Retry-After)", wait)
                    raise RateLimited(wait)
                if r.status_code == 404:
                    return None
                if r.status_code >= 500:
                    raise Retryable(f"{path}: HTTP {r.status_code}")
                if r.status_code != 200:
                    raise SourceError(f"{path}: HTTP {r.status_code}: {r.text[:200]}")
                return r.json()
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ headers
    async def _headers(self, low: int, high: int, known: dict[int, dict[str, Any]]) -> int:
        """Fill `known` with the headers of heights low..high (newest-first pages); returns the
        API's tip height."""
        tip: int | None = None
        offset = 0
        while True:
            page = await self._get("/extended/v2/blocks", {"limit": BLOCK_PAGE, "offset": offset})
            results = (page or {}).get("results") or []
            if not results:
                return tip or 0
            for b in results:
                known.setdefault(int(b["height"]), b)
            if tip is None:
                tip = int(results[0]["height"])
                # Straight to the first page that holds `high` (the tip page comes first).
                skip = max(tip - high, 0)
                if skip >= BLOCK_PAGE:
                    offset = skip
                    continue
            lowest = int(results[-1]["height"])
            if lowest <= low or len(results) < BLOCK_PAGE:
                return tip
            offset += len(results)

    async def tip_height(self) -> int:
        return await self._headers(1 << 31, 1 << 31, {})

    # ------------------------------------------------------------------ activity
    async def _logged_txids(self, contract: str, floor: int) -> dict[str, None]:
        """Txids of the prints of `contract` above `floor` (and a few at it: the pages' edges)."""
        found: dict[str, None] = {}
        offset = 0
        path = f"/extended/v2/smart-contracts/{quote(contract, safe='.')}/logs"
        while True:
            page = await self._get(path, {"limit": LOG_PAGE, "offset": offset})
            if page is None:
                return found  # not deployed (yet)
            newest = _height_of(page.get("cursor"))
            if newest is not None and newest <= floor:
                return found
            results = page.get("results") or []
            found.update((e["tx_id"], None) for e in results)
            after = _height_of(page.get("next_cursor"))
            if not results or after is None or after <= floor:
                return found
            offset += len(results)

    async def _principal_txids(self, contract: str, floor: int) -> dict[str, None]:
        found: dict[str, None] = {}
        cursor: str | None = None
        path = f"/extended/v3/principals/{quote(contract, safe='.')}/transactions"
        while True:
            params: dict[str, Any] = {"limit": TX_PAGE}
            if cursor is not None:
                params["cursor"] = cursor
            page = await self._get(path, params)
            if page is None:
                return found
            results = page.get("results") or []
            for r in results:
                tx = r["transaction"]
                if int(tx["block"]["height"]) <= floor:
                    return found
                found[tx["tx_id"]] = None
            cursor = (page.get("cursor") or {}).get("next")
            if not results or cursor is None or (_height_of(cursor) or 0) <= floor:
                return found

    async def _details(self, txids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(dict.fromkeys(txids))
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ids), TX_BATCH):
            chunk = ids[i : i + TX_BATCH]
            page = await self._get(
                "/extended/v1/tx/multiple", {"tx_id": chunk, "event_limit": EVENT_PAGE}
            )
            for txid in chunk:
                entry = (page or {}).get(txid) or {}
                if entry.get("found"):
                    out[txid] = entry["result"]
        for txid, tx in out.items():  # a transaction with more events than a page
            events = tx.setdefault("events", [])
            while len(events) < int(tx.get("event_count") or 0):
                page = await self._get(
                    "/extended/v1/tx/multiple",
                    {"tx_id": [txid], "event_limit": EVENT_PAGE, "event_offset": len(events)},
                )
                more = (((page or {}).get(txid) or {}).get("result") or {}).get("events") or []
                if not more:
                    break
                events += more
        return out

    async def _stored(self, txids: list[str]) -> set[str]:
        """Those of `txids` already in a canonical block of ours (found again at the pages'
        edges): no need to ask for them."""
        if not txids:
            return set()
        cur = await self.indexer.pg.execute(
            "SELECT txid FROM transactions WHERE canonical AND txid = ANY(%s)", (txids,)
        )
        rows = await cur.fetchall()
        await self.indexer.conn.commit()
        return {str(r[0]) for r in rows}

    # ------------------------------------------------------------------ blocks
    @staticmethod
    def _payload(header: dict[str, Any], txs: list[dict[str, Any]]) -> dict[str, Any]:
        txs = sorted(txs, key=lambda t: int(t["tx_index"]))
        events = [
            e
            for t in txs
            for e in (_observer_event(ev, t["tx_id"]) for ev in t.get("events") or [])
            if e is not None
        ]
        return {
            "block_hash": header["hash"],
            "block_height": header["height"],
            "index_block_hash": header["index_block_hash"],
            "parent_index_block_hash": header["parent_index_block_hash"],
            "parent_block_hash": header.get("parent_block_hash"),
            "burn_block_hash": header.get("burn_block_hash"),
            "burn_block_height": header.get("burn_block_height"),
            "burn_block_time": header.get("burn_block_time"),
            "block_time": header.get("block_time"),
            "tenure_height": header.get("tenure_height"),
            "transactions": [
                {
                    "txid": t["tx_id"],
                    "tx_index": t["tx_index"],
                    "status": t["tx_status"],
                    "raw_result": (t.get("tx_result") or {}).get("hex"),
                    "summary": _summary(t),
                }
                for t in txs
            ],
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
        for _ in range(5):
            try:
                return await self._reconcile()
            except _Moved as exc:
                log.info("the API's chain moved during a reconciliation (%s); again", exc)
        raise SourceError("the API's chain kept changing during five reconciliations")

    async def _reconcile(self) -> int:
        ours = self.indexer.tip[1] if self.indexer.tip else 0
        headers: dict[int, dict[str, Any]] = {}
        # Nothing below the root is indexed: an empty database backfills from the root, and the
        # walk back stops there (a disagreement at the root is the pipeline's to settle).
        floor = self.indexer.settings.indexer.start_height - 1
        api_tip = await self._headers(max(ours, floor + 1), 1 << 31, headers)
        metrics.LAG.set(max(api_tip - ours, 0))
        height = max(min(ours, api_tip), floor)
        while height > floor:  # find the highest height where both agree
            if height not in headers:
                await self._headers(max(height - BLOCK_PAGE + 1, floor + 1), height, headers)
            theirs = headers.get(height)
            if theirs is not None and theirs["index_block_hash"] == await self._our_hash(height):
                break
            height -= 1
        if height >= api_tip:
            metrics.LAG.set(0)
            return 0
        if any(h not in headers for h in range(height + 1, api_tip + 1)):
            await self._headers(height + 1, api_tip, headers)
        for h in range(height + 2, api_tip + 1):
            child, parent = headers.get(h), headers.get(h - 1)
            if child and parent and child["parent_index_block_hash"] != parent["index_block_hash"]:
                raise _Moved(f"the headers at {h - 1} and {h} are of two branches")
        found: dict[str, None] = {}
        for contract in self.watched:
            found.update(await self._logged_txids(contract, height))
            found.update(await self._principal_txids(contract, height))
        stored = await self._stored(list(found))
        details = await self._details(t for t in found if t not in stored)
        by_height: dict[int, list[dict[str, Any]]] = {}
        for tx in details.values():
            h = int(tx["block_height"])
            if h <= height:
                continue
            header = headers.get(h)
            if header is None or header["hash"] != tx["block_hash"]:
                raise _Moved(f"transaction {tx['tx_id']} is in another block at {h}")
            by_height.setdefault(h, []).append(tx)
        fetched = 0
        for h in range(height + 1, api_tip + 1):
            header = headers.get(h)
            if header is None:
                break
            payload = self._payload(header, by_height.get(h, []))
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
        headers = {k: v for k, v in self.client.headers.items() if k.lower() == "x-api-key"}
        async for ws in websockets.connect(ws_url, open_timeout=10, additional_headers=headers):
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


def _summary(t: dict[str, Any]) -> dict[str, Any]:
    """What the observer path decodes from `raw_tx` (`stacks.transactions.summarize`), in the
    API's words: the block has no bytes, and `indexer.block.parse_summary` validates it as it
    would those. The API's meanings are the decoder's (src/datastore/helpers.ts
    `createDbTxFromCoreMsg`): `sender_address` is the origin's, `nonce` the origin's, `fee_rate`
    the sponsor's fee when sponsored (micro-STX, a decimal string), and a deploy's
    `smart_contract.contract_id` is `sender.name`. Only for a burnchain operation do they differ
    (docs/stacks.md, "Stacks Blockchain API"): the API does not mark it, so it cannot be left
    NULL as the observer path leaves it."""
    kind = t.get("tx_type")
    body = t.get(kind) if kind in ("contract_call", "smart_contract") else None
    if kind in ("contract_call", "smart_contract") and not isinstance(body, dict):
        raise SourceError(f"transaction {t.get('tx_id')}: a {kind} without its {kind} object")
    return {
        "sender": t.get("sender_address"),
        "contract_id": body.get("contract_id") if body else None,
        "function_name": body.get("function_name") if body and kind == "contract_call" else None,
        "fee": t.get("fee_rate"),
        "nonce": t.get("nonce"),
    }


def _observer_event(e: dict[str, Any], txid: str | None = None) -> dict[str, Any] | None:
    base = {"txid": e.get("tx_id", txid), "event_index": e["event_index"], "committed": True}
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
