"""Relay test harness: the signed vectors, a loopback HTTP server helper, and a fake stacks-node.

The fake node is used only where the devnet node (contracts/devnet/node.mjs) cannot give a
scripted answer (outages, each rejection reason on demand). It follows stacks-core's
POST /v2/transactions (src/net/api/posttransaction.rs): the body is the raw transaction
(application/octet-stream) or JSON `{"tx": hex}`; HTTP 200 with the txid as a JSON string
(hex, no 0x) when accepted *or already in the mempool*; HTTP 400 with MemPoolRejection's JSON
`{"error": "transaction rejected", "reason", "reason_data", "txid"}` when refused.
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
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from recchain.config import RelaySettings, Settings
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

    async def post(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-type", "").startswith("application/json"):
            doc = json.loads(body)
            body = bytes.fromhex(doc["tx"] if isinstance(doc, dict) else doc)
        txid = compute_txid(body)
        self.posts[txid] += 1
        if txid in self.mempool:
            # posttransaction.rs: `if mempool.has_tx(&txid)` -> answer the txid, accept nothing.
            return JSONResponse(txid)
        queue = self.script.get(txid)
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
        return Starlette(routes=[Route("/v2/transactions", self.post, methods=["POST"])])


@pytest.fixture
async def fake_node() -> AsyncIterator[tuple[FakeNode, str]]:
    node = FakeNode()
    async with serve_app(node.app()) as url:
        yield node, url
