"""The thin path: a recorded block becomes a GraphQL answer; health and readiness."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.graphql_api.builder import Chain
from tests.graphql_api.conftest import Api

META = "{ _meta { block { height hash time } finalizedHeight lagSeconds tipHeight } }"


async def test_meta_is_null_before_any_block(api: Api) -> None:
    data = await api.data(META)
    assert data["_meta"] == {
        "block": None,
        "finalizedHeight": None,
        "lagSeconds": None,
        "tipHeight": None,
    }


async def test_meta_reports_the_canonical_tip(api: Api, engine: AsyncEngine) -> None:
    chain = Chain()
    for _ in range(3):
        chain.block()
    # A non-canonical sibling at the tip height must not be reported.
    chain.block(canonical=False, height=3)
    await chain.write(engine)
    data = await api.data(META)
    tip = chain.canonical_block(3)
    assert data["_meta"]["block"]["height"] == 3
    assert data["_meta"]["block"]["hash"] == tip.hash
    assert data["_meta"]["block"]["time"].startswith(tip.time.isoformat()[:19])
    assert data["_meta"]["finalizedHeight"] == 0
    assert data["_meta"]["lagSeconds"] >= 0


async def test_meta_at_a_past_block(api: Api, engine: AsyncEngine) -> None:
    chain = Chain()
    for _ in range(4):
        chain.block()
    await chain.write(engine)
    data = await api.data(
        "query($h: String) { _meta(block: {hash: $h}) { block { height } tipHeight } }",
        {"h": chain.canonical_block(2).hash},
    )
    assert data["_meta"] == {"block": {"height": 2}, "tipHeight": 4}


async def test_block_beyond_the_tip_is_a_typed_error(api: Api, engine: AsyncEngine) -> None:
    chain = Chain()
    chain.block()
    await chain.write(engine)
    body = await api.query("{ _meta(block: {number: 99}) { tipHeight } }")
    assert body["errors"][0]["extensions"]["code"] == "BLOCK_NOT_FOUND"
    assert "99" in body["errors"][0]["message"]


async def test_healthz_and_readyz(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"ready": True}


async def test_readyz_refuses_an_unmigrated_database(empty_db_url: str) -> None:
    from db.session import create_engine
    from graphql_api.app import create_app
    from tests.graphql_api.conftest import api_settings, start_server

    eng = create_engine(empty_db_url)
    server, task, port = await start_server(create_app(api_settings(empty_db_url), engine=eng))
    try:
        import httpx

        async with httpx.AsyncClient() as client:
            resp = await client.get(f"http://127.0.0.1:{port}/readyz")
        assert resp.status_code == 503
        assert resp.json()["reason"] == "database not migrated"
    finally:
        server.should_exit = True
        await task
        await eng.dispose()


async def test_graphiql_is_served_to_browsers(api: Api) -> None:
    resp = await api.client.get("/graphql", headers={"accept": "text/html"})
    assert resp.status_code == 200 and "graphiql" in resp.text.lower()


async def test_recchain_serve_serves_the_api(db_url: str, engine: AsyncEngine) -> None:
    import asyncio
    import os
    import socket
    import sys

    import httpx

    chain = Chain()
    chain.block()
    await chain.write(engine)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RECCHAIN_DATABASE_URL": db_url, "RECCHAIN_LOG_LEVEL": "WARNING"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "recchain.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        env=env,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(200):
                try:
                    resp = await client.post("/graphql", json={"query": META})
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            assert resp.json()["data"]["_meta"]["block"]["hash"] == chain.tip.hash
    finally:
        proc.terminate()
        await proc.wait()


async def test_node_refetches_by_global_id(api: Api, engine: AsyncEngine) -> None:
    chain = Chain()
    chain.block()
    token = chain.mint(chain.facility(name="Global Id Park"), "ST1A", 5)
    await chain.write(engine)
    got = await api.data(
        "query($t: Int!) { certificate(tokenId: $t) { id facility { id } } }", {"t": token}
    )
    node = await api.data(
        "query($id: ID!) { node(id: $id) { __typename ... on Facility { name } } }",
        {"id": got["certificate"]["facility"]["id"]},
    )
    assert node["node"] == {"__typename": "Facility", "name": "Global Id Park"}
    cert = await api.data(
        "query($id: ID!) { node(id: $id) { ... on Certificate { tokenId } } }",
        {"id": got["certificate"]["id"]},
    )
    assert cert["node"] == {"tokenId": token}
