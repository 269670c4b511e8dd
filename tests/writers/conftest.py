"""Relay test harness: the signed vectors, a loopback HTTP server helper, and a fake stacks-node.

The fake node is used only where the devnet node (contracts/devnet/node.mjs) cannot give a
scripted answer (outages, each rejection reason on demand). It follows stacks-core's
POST /v2/transactions (stackslib/src/net/api/posttransaction.rs): the body is the raw
transaction (application/octet-stream) or JSON `{"tx": hex}`; HTTP 200 with the txid as a JSON
string (hex, no 0x) when accepted *or already in the mempool*; HTTP 400 with MemPoolRejection's
JSON `{"error": "transaction rejected", "reason", "reason_data", "txid"}` when refused. Lookups by
txid follow gettransaction_unconfirmed.rs (`GET /v2/transactions/unconfirmed/{txid}`: 200
`{"tx", "status": "Mempool"}` or a plain-text 404) and gettransaction.rs (`GET
/v3/transaction/{txid}`: 200 `{"index_block_hash", "tx", "result", "block_height",
"is_canonical"}`, a plain-text 404, or 501 without a txindex).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from infra.config import RelaySettings, Settings
from stacks.transactions import txid as compute_txid

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "relay"


def load_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads((FIXTURES / "vectors.json").read_text())["vectors"]
    return vectors


VECTORS = load_vectors()
ACCEPTED = [v for v in VECTORS if v["expect"] == "accepted"]
REFUSED = [v for v in VECTORS if v["expect"] != "accepted"]


def relay_settings(db_url: str, **relay: Any) -> Settings:
    return Settings(database_url=SecretStr(db_url), network="testnet", relay=RelaySettings(**relay))


@asynccontextmanager
async def serve_app(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app on a free loopback port for the length of the block."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # uvicorn offers no started event to await
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class FakeNode:
    """A scripted stacks-node mempool endpoint."""

    mempool: set[str] = field(default_factory=set)
    posts: Counter[str] = field(default_factory=Counter)
    # txid -> queued answers: ("reject", reason, reason_data) | ("status", http_status, body)
    script: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    # A standing answer for every txid whose script is empty (an outage: ("status", 503, ".."))
    default: list[tuple[Any, ...]] = field(default_factory=list)
    # When set to an unset Event: take the transaction, then hold the answer until it is set
    # (the reply lost in flight, as when the relay dies mid-request).
    hold: asyncio.Event | None = None
    # txid -> raw bytes of everything admitted; txid -> (index_block_hash, height) once mined.
    raw: dict[str, bytes] = field(default_factory=dict)
    mined: dict[str, tuple[str, int]] = field(default_factory=dict)
    txindex: bool = True
    lookups: Counter[str] = field(default_factory=Counter)

    def mine(self, txid: str, height: int = 7) -> None:
        """Mine an admitted transaction and forget it from the mempool, as stacks-node does once
        it ages out: a resend is then judged on its spent nonce."""
        txid = txid.removeprefix("0x")
        self.mempool.discard(txid)
        self.mined[txid] = (f"{height:064x}", height)
        self.script[txid] = [("reject", "BadNonce", {"expected": 1, "actual": 0})] * 10

    async def unconfirmed(self, request: Request) -> Response:
        txid = request.path_params["txid"]
        self.lookups[txid] += 1
        if txid not in self.mempool:
            return PlainTextResponse(f"Transaction {txid} not found in mempool", status_code=404)
        return JSONResponse({"tx": self.raw[txid].hex(), "status": "Mempool"})

    async def transaction(self, request: Request) -> Response:
        txid = request.path_params["txid"]
        if not self.txindex:
            return PlainTextResponse("Transaction indexing is not enabled", status_code=501)
        if txid not in self.mined:
            return PlainTextResponse(f"No such transaction {txid}", status_code=404)
        block, height = self.mined[txid]
        body = {"index_block_hash": block, "tx": self.raw[txid].hex(), "result": "0x0703"}
        return JSONResponse(body | {"block_height": height, "is_canonical": True})

    async def post(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-type", "").startswith("application/json"):
            doc = json.loads(body)
            body = bytes.fromhex(doc["tx"] if isinstance(doc, dict) else doc)
        txid = compute_txid(body)
        self.posts[txid] += 1
        self.raw.setdefault(txid, body)
        queue = self.script.get(txid)
        # A scripted answer wins even over the mempool (a balancer's other node may refuse what
        # this one holds); without one, posttransaction.rs: `if mempool.has_tx(&txid)` -> answer
        # the txid, accept nothing.
        if not queue and txid in self.mempool:
            return JSONResponse(txid)
        step = queue.pop(0) if queue else (self.default[0] if self.default else None)
        if step is not None:
            if step[0] == "reject":
                return JSONResponse(
                    {
                        "error": "transaction rejected",
                        "reason": step[1],
                        "reason_data": step[2],
                        "txid": txid,
                    },
                    status_code=400,
                )
            return Response(step[2], status_code=step[1])
        self.mempool.add(txid)
        if self.hold is not None:
            await self.hold.wait()
        return JSONResponse(txid)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v2/transactions", self.post, methods=["POST"]),
                Route("/v2/transactions/unconfirmed/{txid}", self.unconfirmed, methods=["GET"]),
                Route("/v3/transaction/{txid}", self.transaction, methods=["GET"]),
            ]
        )


@pytest.fixture
async def fake_node() -> AsyncIterator[tuple[FakeNode, str]]:
    node = FakeNode()
    async with serve_app(node.app()) as url:
        yield node, url
