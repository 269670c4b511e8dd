"""A local stand-in for the Stacks Blockchain API (hirosystems/stacks-blockchain-api), speaking
the documented shapes of the routes the `api` source uses (see indexer/api_source.py for the
list, taken from `@stacks/stacks-blockchain-api-types`). It serves blocks made by the chain
generator, can switch to another branch (a reorg), can answer 429 with Retry-After, and pushes
JSON-RPC `block` notifications on `/extended/v1/ws`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

TYPE_OF = {
    "contract_event": "smart_contract_log",
    "nft": "non_fungible_token_asset",
    "ft_": "fungible_token_asset",
    "stx": "stx_asset",
}


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


class FakeApi:
    def __init__(self, blocks: list[dict[str, Any]]) -> None:
        self.chain = list(blocks)  # canonical chain, index i = height i + 1
        self.rate_limit_next = 0  # answer this many requests with 429 first
        self.requests = 0
        self.sockets: list[WebSocket] = []

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
            "index_block_hash": b["index_block_hash"],
            "parent_index_block_hash": b["parent_index_block_hash"],
            "parent_block_hash": b["parent_block_hash"], "block_time": b["block_time"],
            "burn_block_time": b["burn_block_time"], "burn_block_hash": b["burn_block_hash"],
            "burn_block_height": b["burn_block_height"], "tx_count": len(b["transactions"]),
        }  # fmt: skip

    def app(self) -> Starlette:
        async def gate(request: Request) -> JSONResponse | None:
            self.requests += 1
            if self.rate_limit_next > 0:
                self.rate_limit_next -= 1
                return JSONResponse({"error": "rate limited"}, 429, {"Retry-After": "0"})
            return None

        async def blocks(request: Request) -> JSONResponse:
            if (r := await gate(request)) is not None:
                return r
            tip = self.chain[-1]
            return JSONResponse({"limit": 1, "offset": 0, "total": len(self.chain),
                                 "results": [self._block_json(tip)]})  # fmt: skip

        async def block(request: Request) -> JSONResponse:
            if (r := await gate(request)) is not None:
                return r
            b = self._block(int(request.path_params["height"]))
            if b is None:
                return JSONResponse({"error": "not found"}, 404)
            return JSONResponse(self._block_json(b))

        async def block_txs(request: Request) -> JSONResponse:
            if (r := await gate(request)) is not None:
                return r
            b = self._block(int(request.path_params["height"]))
            if b is None:
                return JSONResponse({"error": "not found"}, 404)
            limit = int(request.query_params.get("limit", 20))
            offset = int(request.query_params.get("offset", 0))
            counts: dict[str, int] = {}
            for ev in b["events"]:
                counts[ev["txid"]] = counts.get(ev["txid"], 0) + 1
            txs = [
                {
                    "tx_id": t["txid"],
                    "tx_index": t["tx_index"],
                    "tx_status": t["status"],
                    "tx_result": {"hex": t["raw_result"], "repr": "..."},
                    "event_count": counts.get(t["txid"], 0),
                }
                for t in b["transactions"]
            ]
            return JSONResponse({"limit": limit, "offset": offset, "total": len(txs),
                                 "results": txs[offset : offset + limit]})  # fmt: skip

        async def tx_events(request: Request) -> JSONResponse:
            if (r := await gate(request)) is not None:
                return r
            txid = request.query_params["tx_id"]
            limit = int(request.query_params.get("limit", 20))
            offset = int(request.query_params.get("offset", 0))
            evs = [api_event(e) for b in self.chain for e in b["events"] if e["txid"] == txid]
            return JSONResponse({"limit": limit, "offset": offset,
                                 "events": evs[offset : offset + limit]})  # fmt: skip

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
                Route("/extended/v2/blocks/{height:int}/transactions", block_txs),
                Route("/extended/v1/tx/events", tx_events),
                WebSocketRoute("/extended/v1/ws", ws),
            ]
        )


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
