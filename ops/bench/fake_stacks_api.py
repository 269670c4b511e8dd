"""A local stand-in for the Stacks Blockchain API (hirosystems/stacks-blockchain-api), serving
blocks made by the chain generator (observer `/new_block` bodies) through the routes the `api`
source uses, in the API's own shapes. Where each shape comes from (that repository):

- routes, parameters, limits and response schemas: `openapi.yaml` at 759c4a5 (release 9.0.2):
  `GET /extended/v2/blocks` (limit <= 30, offset; `results` newest first, each block with
  `height, hash, index_block_hash, parent_index_block_hash, tenure_height, tx_count, ...`),
  `GET /extended/v2/smart-contracts/{contract_id}/logs` (limit <= 100, offset, cursor
  `block_height:microblock_sequence:tx_index:event_index`; `results` newest first, `cursor` the
  first result's position, `next_cursor` the next page's), `GET /extended/v3/principals/
  {principal}/transactions` (limit <= 50, cursor `block_height:microblock_sequence:tx_index`;
  `results[].transaction` summaries with `block {height, hash, index_hash, tx_index}`, `status`;
  `cursor {current, next, previous}`), `GET /extended/v1/tx/multiple` (repeated or comma-joined
  `tx_id`, `event_limit` <= 100, `event_offset`; an object keyed by txid of `{found: true,
  result: Transaction}` or `{found: false, result: {tx_id}}`);
- which transactions a principal's route lists: `src/datastore/pg-write-store.ts`
  `updatePrincipalTxs` (the sender, the called or deployed contract, and every sender or
  recipient of a STX, FT or NFT event);
- event objects: `docs/api/transaction/get-transaction-events.example.json` and
  `docs/entities/transaction-events/transaction-event-smart-contract-log.example.json`, block
  lists: `docs/api/blocks/get-nakamoto-blocks.example.json` (both at bd65fcf9^, before the docs
  folder was removed);
- a transaction's `sender_address`, `nonce`, `fee_rate` (micro-STX as a decimal string),
  `sponsored`, `sponsor_address`, `sponsor_nonce`, `tx_type` and its object (`contract_call
  {contract_id, function_name, function_signature, function_args}`, `smart_contract
  {clarity_version, contract_id, source_code}`, `token_transfer {recipient_address, amount,
  memo}`): `openapi.yaml` (the `Transaction` schemas) and `src/datastore/helpers.ts`
  `createDbTxFromCoreMsg` (the origin's address and nonce, the sponsor's fee when sponsored, a
  deploy's id `sender.name`), all derived here from the transaction's own bytes;
- rate limiting: 429 with `Retry-After` (docs.hiro.so/resources/guides/response-headers); the
  API key travels in `x-api-key` (docs.hiro.so/resources/guides/api-keys).

It can switch to another branch (a reorg), answer 429 first, alter a transaction's JSON, count
requests per route, and push JSON-RPC `block` notifications on `/extended/v1/ws`."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from stacks.transactions import (
    ContractCallPayload,
    SmartContractPayload,
    TokenTransferPayload,
    Transaction,
    condition_address,
    decode_transaction,
    summarize,
)

BLOCK_LIMIT, LOG_LIMIT, TX_LIMIT, EVENT_LIMIT = 30, 100, 50, 100


def _iso(t: int | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()


def api_event(ev: dict[str, Any]) -> dict[str, Any]:
    t = ev["type"]
    body = ev[t]
    out: dict[str, Any] = {"event_index": ev["event_index"], "tx_id": ev["txid"]}
    if t == "contract_event":
        value = {"hex": body["raw_value"], "repr": "..."}
        log = {"contract_id": body["contract_identifier"], "topic": body["topic"], "value": value}
        return {**out, "event_type": "smart_contract_log", "contract_log": log}
    action = t.split("_")[1]
    asset = {"asset_event_type": action, "sender": body.get("sender", ""),
             "recipient": body.get("recipient", "")}  # fmt: skip
    if t.startswith("nft_"):
        asset.update(asset_id=body["asset_identifier"], value={"hex": body["raw_value"]})
        return {**out, "event_type": "non_fungible_token_asset", "asset": asset}
    if t.startswith("ft_"):
        asset.update(asset_id=body["asset_identifier"], amount=body["amount"])
        return {**out, "event_type": "fungible_token_asset", "asset": asset}
    asset.update(amount=body["amount"])
    return {**out, "event_type": "stx_asset", "asset": asset}


def _summary(tx: dict[str, Any]) -> tuple[str | None, str | None, str | None, int, int]:
    """(sender, called contract, function, fee, nonce) from the transaction's own bytes."""
    raw = tx.get("raw_tx")
    if not raw or raw == "0x00":
        return None, None, None, 0, 0
    s = summarize(decode_transaction(bytes.fromhex(raw[2:])))
    return s.sender, s.contract_id, s.function_name, s.fee, s.nonce


def _decoded(tx: dict[str, Any]) -> Transaction | None:
    raw = tx.get("raw_tx")
    if not raw or raw == "0x00":
        return None
    return decode_transaction(bytes.fromhex(raw[2:]))


def _payload_json(tx: Transaction | None, contract: str | None) -> dict[str, Any]:
    """`tx_type` and the object named by it, as the API writes them."""
    p = None if tx is None else tx.payload
    call: dict[str, Any]  # an empty `function_args` says nothing of its type
    if isinstance(p, ContractCallPayload):
        call = {"contract_id": contract, "function_name": p.function_name,
                "function_signature": "", "function_args": []}  # fmt: skip
        return {"tx_type": "contract_call", "contract_call": call}
    if isinstance(p, SmartContractPayload):
        deploy = {"clarity_version": p.clarity_version, "contract_id": contract,
                  "source_code": p.code_body}  # fmt: skip
        return {"tx_type": "smart_contract", "smart_contract": deploy}
    if isinstance(p, TokenTransferPayload):
        transfer = {"recipient_address": str(p.recipient), "amount": str(p.amount),
                    "memo": "0x" + p.memo.hex()}  # fmt: skip
        return {"tx_type": "token_transfer", "token_transfer": transfer}
    return {"tx_type": "coinbase", "coinbase_payload": {"data": "0x", "alt_recipient": None}}


class FakeApi:
    def __init__(self, blocks: list[dict[str, Any]], api_key: str | None = None) -> None:
        self.chain = list(blocks)  # canonical chain, index i = height i + 1
        self.rate_limit_next = 0  # answer this many requests with 429 first
        self.retry_after = "0"
        self.api_key = api_key  # when set, a request without it is answered 401
        self.requests = 0
        self.by_route: Counter[str] = Counter()
        self.keys_seen: Counter[str | None] = Counter()
        self.sockets: list[WebSocket] = []
        # txid -> fields replacing those of its transaction JSON: a bad answer, for the tests.
        self.tx_overrides: dict[str, dict[str, Any]] = {}

    def set_chain(self, blocks: list[dict[str, Any]]) -> None:
        self.chain = list(blocks)

    async def notify(self) -> None:
        tip = self.chain[-1]
        params = {"height": tip["block_height"], "hash": tip["block_hash"]}
        message = {"jsonrpc": "2.0", "method": "block", "params": params}
        for ws in list(self.sockets):
            await ws.send_text(json.dumps(message))

    def _block(self, height: int) -> dict[str, Any] | None:
        if not 1 <= height <= len(self.chain):
            return None
        return self.chain[height - 1]

    def _block_json(self, b: dict[str, Any]) -> dict[str, Any]:
        return {
            "canonical": True, "height": b["block_height"], "hash": b["block_hash"],
            "block_time": b["block_time"], "block_time_iso": _iso(b["block_time"]),
            "tenure_height": b.get("tenure_height", b["block_height"]),
            "index_block_hash": b["index_block_hash"],
            "parent_block_hash": b["parent_block_hash"],
            "parent_index_block_hash": b["parent_index_block_hash"],
            "burn_block_time": b["burn_block_time"],
            "burn_block_time_iso": _iso(b["burn_block_time"]),
            "burn_block_hash": b["burn_block_hash"], "burn_block_height": b["burn_block_height"],
            "miner_txid": b.get("miner_txid", "0x" + "00" * 32),
            "tx_count": len(b["transactions"]), "execution_cost_read_count": 0,
            "execution_cost_read_length": 0, "execution_cost_runtime": 0,
            "execution_cost_write_count": 0, "execution_cost_write_length": 0,
        }  # fmt: skip

    def _txs(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [(b, t) for b in self.chain for t in b["transactions"]]

    def _tx_json(self, b: dict[str, Any], t: dict[str, Any], limit: int, offset: int) -> dict:
        sender, contract, _, fee, nonce = _summary(t)
        decoded = _decoded(t)
        sponsor = None if decoded is None else decoded.auth.sponsor
        events = [api_event(e) for e in b["events"] if e["txid"] == t["txid"]]
        out = {
            "tx_id": t["txid"], "nonce": nonce, "fee_rate": str(fee),
            "sender_address": sender or "", "sponsored": sponsor is not None,
            "post_condition_mode": "deny",
            "post_conditions": [], "anchor_mode": "any", "block_hash": b["block_hash"],
            "block_height": b["block_height"], "block_time": b["block_time"],
            "block_time_iso": _iso(b["block_time"]), "burn_block_time": b["burn_block_time"],
            "burn_block_height": b["burn_block_height"],
            "burn_block_time_iso": _iso(b["burn_block_time"]),
            "parent_burn_block_time": b["burn_block_time"],
            "parent_burn_block_time_iso": _iso(b["burn_block_time"]), "canonical": True,
            "tx_index": t["tx_index"], "tx_status": t["status"],
            "tx_result": {"hex": t["raw_result"], "repr": "..."}, "event_count": len(events),
            "parent_block_hash": b["parent_block_hash"], "is_unanchored": False,
            "microblock_hash": "0x", "microblock_sequence": 2147483647,
            "microblock_canonical": True, "execution_cost_read_count": 0,
            "execution_cost_read_length": 0, "execution_cost_runtime": 0,
            "execution_cost_write_count": 0, "execution_cost_write_length": 0,
            "vm_error": None, "events": events[offset : offset + limit],
        }  # fmt: skip
        if decoded is not None and sponsor is not None:
            out["sponsor_address"] = condition_address(sponsor, decoded.is_mainnet)
            out["sponsor_nonce"] = sponsor.nonce
        out.update(_payload_json(decoded, contract))
        out.update(self.tx_overrides.get(t["txid"], {}))
        return out

    def _involves(self, b: dict[str, Any], t: dict[str, Any], principal: str) -> bool:
        sender, contract, *_ = _summary(t)
        if principal in (sender, contract):
            return True
        for e in b["events"]:
            if e["txid"] != t["txid"] or e["type"] == "contract_event":
                continue
            body = e[e["type"]]
            if principal in (body.get("sender"), body.get("recipient")):
                return True
        return False

    def app(self) -> Starlette:
        def gate(request: Request, route: str) -> JSONResponse | None:
            self.requests += 1
            self.by_route[route] += 1
            key = request.headers.get("x-api-key")
            self.keys_seen[key] += 1
            if self.api_key is not None and key != self.api_key:
                return JSONResponse({"error": "Invalid API key"}, 401)
            if self.rate_limit_next > 0:
                self.rate_limit_next -= 1
                return JSONResponse(
                    {"error": "rate limited"}, 429, {"Retry-After": self.retry_after}
                )
            return None

        def page(request: Request, cap: int) -> tuple[int, int]:
            limit = min(int(request.query_params.get("limit", 20)), cap)
            return limit, int(request.query_params.get("offset", 0))

        async def blocks(request: Request) -> JSONResponse:
            if (r := gate(request, "blocks")) is not None:
                return r
            limit, offset = page(request, BLOCK_LIMIT)
            newest = [self._block_json(b) for b in reversed(self.chain)]
            return JSONResponse({"limit": limit, "offset": offset, "total": len(self.chain),
                                 "results": newest[offset : offset + limit]})  # fmt: skip

        async def block(request: Request) -> JSONResponse:
            if (r := gate(request, "block")) is not None:
                return r
            b = self._block(int(request.path_params["height"]))
            if b is None:
                return JSONResponse({"error": "not found"}, 404)
            return JSONResponse(self._block_json(b))

        async def logs(request: Request) -> JSONResponse:
            if (r := gate(request, "contract logs")) is not None:
                return r
            limit, offset = page(request, LOG_LIMIT)
            contract = request.path_params["contract_id"]
            found = [
                ((b["block_height"], 0, e.get("tx_index", _tx_index(b, e)), e["event_index"]), e)
                for b in self.chain
                for e in b["events"]
                if e["type"] == "contract_event"
                and e["contract_event"]["contract_identifier"] == contract
            ]
            found.sort(key=lambda p: p[0], reverse=True)
            if (cursor := request.query_params.get("cursor")) is not None:
                at = tuple(int(x) for x in cursor.split(":"))
                found = [f for f in found if f[0] <= at]
            chosen = found[offset : offset + limit]
            after = found[offset + limit : offset + limit + 1]

            def pos(p: tuple[int, ...]) -> str:
                return ":".join(map(str, p))

            return JSONResponse({
                "limit": limit, "offset": offset, "total": len(found),
                "next_cursor": pos(after[0][0]) if after else None, "prev_cursor": None,
                "cursor": pos(chosen[0][0]) if chosen else None,
                "results": [
                    {k: v for k, v in api_event(e).items()} for _, e in chosen
                ],
            })  # fmt: skip

        async def principal_txs(request: Request) -> JSONResponse:
            if (r := gate(request, "principal transactions")) is not None:
                return r
            limit, _ = page(request, TX_LIMIT)
            principal = request.path_params["principal"]
            found = [
                ((b["block_height"], 2147483647, t["tx_index"]), b, t)
                for b, t in self._txs()
                if self._involves(b, t, principal)
            ]
            found.sort(key=lambda f: f[0], reverse=True)
            if (cursor := request.query_params.get("cursor")) is not None:
                at = tuple(int(x) for x in cursor.split(":"))
                found = [f for f in found if f[0] <= at]
            chosen, after = found[:limit], found[limit : limit + 1]

            def pos(p: tuple[int, ...]) -> str:
                return ":".join(map(str, p))

            results = []
            for _, b, t in chosen:
                sender, contract, function, fee, nonce = _summary(t)
                summary: dict[str, Any] = {
                    "tx_id": t["txid"], "sender": {"address": sender or "", "nonce": nonce},
                    "sponsor": None, "fee_rate": str(fee),
                    "block": {"height": b["block_height"], "hash": b["block_hash"],
                              "index_hash": b["index_block_hash"], "time": b["block_time"],
                              "tx_index": t["tx_index"]},
                    "bitcoin_block": {"height": b["burn_block_height"],
                                      "time": b["burn_block_time"]},
                    "status": t["status"], "type": "contract_call",
                    "contract_call": {"contract_id": contract, "function_name": function},
                }  # fmt: skip
                results.append({
                    "transaction": summary,
                    "involvement": "sender" if sender == principal else "affected",
                    "balance_changes": {"stx": {"sent": "0", "received": "0", "net": "0"}},
                    "affected_balances": {"stx": False, "ft": False, "nft": False},
                })  # fmt: skip
            return JSONResponse({
                "total": len(found), "limit": limit,
                "cursor": {"current": pos(chosen[0][0]) if chosen else None,
                           "next": pos(after[0][0]) if after else None, "previous": None},
                "results": results,
            })  # fmt: skip

        async def tx_multiple(request: Request) -> JSONResponse:
            if (r := gate(request, "tx multiple")) is not None:
                return r
            ids = [i for v in request.query_params.getlist("tx_id") for i in v.split(",")]
            limit = min(int(request.query_params.get("event_limit", 20)), EVENT_LIMIT)
            offset = int(request.query_params.get("event_offset", 0))
            by_id = {t["txid"]: (b, t) for b, t in self._txs()}
            out: dict[str, Any] = {}
            for txid in ids:
                if txid in by_id:
                    b, t = by_id[txid]
                    out[txid] = {"found": True, "result": self._tx_json(b, t, limit, offset)}
                else:
                    out[txid] = {"found": False, "result": {"tx_id": txid}}
            return JSONResponse(out)

        async def ws(websocket: WebSocket) -> None:
            await websocket.accept()
            await websocket.receive_text()  # the subscribe request
            self.sockets.append(websocket)
            try:
                while True:
                    await websocket.receive_text()
            except WebSocketDisconnect:
                self.sockets.remove(websocket)

        return Starlette(
            routes=[
                Route("/extended/v2/blocks", blocks),
                Route("/extended/v2/blocks/{height:int}", block),
                Route("/extended/v2/smart-contracts/{contract_id}/logs", logs),
                Route("/extended/v3/principals/{principal}/transactions", principal_txs),
                Route("/extended/v1/tx/multiple", tx_multiple),
                WebSocketRoute("/extended/v1/ws", ws),
            ]
        )


def _tx_index(block: dict[str, Any], event: dict[str, Any]) -> int:
    return next(t["tx_index"] for t in block["transactions"] if t["txid"] == event["txid"])


async def serve(app: Starlette) -> tuple[Any, int, asyncio.Task[None]]:
    import socket

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 (uvicorn exposes only a flag)
        await asyncio.sleep(0.01)
    return server, port, task
