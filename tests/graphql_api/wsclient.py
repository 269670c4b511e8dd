"""Minimal clients of both subscription protocols, over the `websockets` library."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import psycopg
import websockets

from db.channels import BLOCKS
from db.session import to_libpq_url

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
WAIT = 20.0  # generous bound so a broken push fails the test instead of hanging it


class Subscriber:
    def __init__(self, ws: Any, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self.ids = itertools.count(1)

    @classmethod
    async def connect(cls, url: str, protocol: str = TRANSPORT_WS, **kw: Any) -> Subscriber:
        ws = await websockets.connect(url, subprotocols=[protocol], **kw)  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            if msg["type"] == "connection_ack":
                return cls(ws, protocol)

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        sid = str(next(self.ids))
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        await self.ws.send(
            json.dumps(
                {"id": sid, "type": kind, "payload": {"query": query, "variables": variables or {}}}
            )
        )
        return sid

    async def next(self) -> dict[str, Any]:
        """The next data message (keep-alives skipped); errors are returned as they come."""
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), WAIT))
            if msg["type"] in ("next", "data"):
                payload: dict[str, Any] = msg["payload"]
                return payload
            if msg["type"] in ("error", "complete"):
                return {"type": msg["type"], "payload": msg.get("payload")}

    async def close(self) -> None:
        await self.ws.close()


async def notify(db_url: str, payload: dict[str, Any]) -> None:
    """What the indexer sends after a commit."""
    async with await psycopg.AsyncConnection.connect(to_libpq_url(db_url), autocommit=True) as c:
        await c.execute("SELECT pg_notify(%s, %s)", (BLOCKS, json.dumps(payload)))


async def wait_for(predicate: Any, what: str) -> None:
    for _ in range(int(WAIT * 20)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never became true: {what}")
