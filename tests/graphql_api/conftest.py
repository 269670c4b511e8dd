"""A real uvicorn serving the API on an ephemeral loopback port, over a fresh database."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from graphql_api.app import create_app
from infra.config import ApiSettings, Settings
from ops.bench.tls import tls


@dataclass
class Api:
    url: str
    ws_url: str
    client: httpx.AsyncClient
    engine: AsyncEngine
    settings: Settings
    app: Any

    async def query(
        self, query: str, variables: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        resp = await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, **kw
        )
        assert resp.headers["content-type"].startswith("application/json"), resp.text
        body: dict[str, Any] = resp.json()
        return body

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = await self.query(query, variables)
        assert "errors" not in body, body["errors"]
        data: dict[str, Any] = body["data"]
        return data


async def start_server(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task, port


def api_settings(db_url: str, **api: Any) -> Settings:
    return Settings(database_url=SecretStr(db_url), api=ApiSettings(**api))


@pytest.fixture
def api_overrides() -> dict[str, Any]:
    """Override in a test module to change `api` settings for its server."""
    return {}


@pytest.fixture
async def api(
    db_url: str, engine: AsyncEngine, api_overrides: dict[str, Any]
) -> AsyncIterator[Api]:
    settings = api_settings(db_url, **api_overrides)
    app = create_app(settings, engine=engine)
    server, task, port = await start_server(app)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=30, verify=tls()) as client:
        yield Api(base, f"ws://127.0.0.1:{port}/graphql", client, engine, settings, app)
    server.should_exit = True
    await task
