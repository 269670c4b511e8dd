"""The GraphiQL IDE works offline: `recchain serve` (a real process) serves the page and every
asset itself, and a real headless Chromium, in which no name but loopback resolves, renders the
IDE and runs a query. No other route of any role answers a browser with a page."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import Route

from graphql_api import ide
from infra.config import PROJECT_ROOT, Settings
from ops.bench.e2e import free_port
from ops.bench.tls import tls
from tests.browser import chromium, chromium_path

DEMO = PROJECT_ROOT / "tests" / "fixtures" / "demo"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
QUERY = "{ _meta { block { height hash } } }"


@contextlib.contextmanager
def _serve(db_url: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "RECCHAIN_API__PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recchain.cli", "serve"],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"recchain serve exited: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=2, verify=tls()).status_code == 200:
                    break
            assert time.monotonic() < deadline, "recchain serve never answered /healthz"
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_assets_are_installed_and_match_their_pins() -> None:
    assert ide.installed(), "GraphiQL assets missing: run `make install`"
    for pkg in ide.PACKAGES:
        for served, _ in pkg.files:
            assert (ide.assets_dir() / served).stat().st_size > 0


def test_a_tarball_that_does_not_match_its_pin_is_refused() -> None:
    pkg = ide.PACKAGES[0]
    with pytest.raises(ide.IdeAssetsError, match="does not match the pinned"):
        ide._check_integrity(pkg, b"not the tarball")


def test_the_page_names_no_other_origin() -> None:
    html = ide.page_html()
    for attr in ("src", "href"):
        for value in html.split(f'{attr}="')[1:]:
            target = value.split('"', 1)[0]
            assert target.startswith((ide.ASSET_PREFIX, "data:")), target


@pytest.mark.skipif(chromium_path() is None, reason="no chromium (apt-get install chromium)")
@pytest.mark.skipif(not (DEMO / "chain.tsv").is_file(), reason="no bundled demo chain")
async def test_graphiql_renders_and_runs_a_query_offline_in_chromium(db_url: str) -> None:
    assert ide.installed(), "GraphiQL assets missing: run `make install`"
    manifest = json.loads((DEMO / "manifest.json").read_text())
    replay = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "recchain.cli", "replay", "--quiet", str(DEMO / "chain.tsv")],
        env={**os.environ, "DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert replay.returncode == 0, replay.stderr[-2000:]
    binary = chromium_path()
    assert binary is not None
    with _serve(db_url) as base:
        async with chromium(binary) as browser:
            page = await browser.new_page()
            await browser.goto(page, f"{base}/graphql?q={urllib.parse.quote(QUERY)}")
            await page.wait_for("document.querySelector('.graphiql-execute-button') !== null")
            # The schema came over introspection: the Docs pane can show the root type.
            await page.wait_for(
                "document.querySelector('.graphiql-sidebar button[aria-label*=\"Documentation\"]')"
                " !== null"
            )
            await page.evaluate("document.querySelector('.graphiql-execute-button').click()")
            text = await page.wait_for(
                "(() => { const r = document.querySelector('.result-window');"
                # CodeMirror indents with no-break spaces, which JSON does not take.
                " const t = r ? r.innerText.replace(/\\u00a0/g, ' ') : '';"
                " try { return JSON.parse(t).data ? t : ''; } catch (e) { return ''; } })()"
            )
            log = page.log
    shown: dict[str, Any] = json.loads(text)
    block = shown["data"]["_meta"]["block"]
    tip = manifest["canonical_tip"]
    assert block == {"height": tip["height"], "hash": tip["index_block_hash"]}
    # Everything the page needed came from the API itself, over loopback, and loaded.
    assert log.non_loopback() == []
    assert any(u.endswith(ide.ASSET_PREFIX + "graphiql-3.8.3.min.js") for u in log.requests)
    assert log.failures == []
    assert [r for r in log.responses if r[1] >= 400] == []
    assert log.errors == []


def _route_samples(app: Any) -> Iterator[str]:
    for route in app.routes:
        if not isinstance(route, Route) or "GET" not in (route.methods or ()):
            continue
        yield (
            route.path.replace("{rest:path}", "x").replace("{txid}", "0x00").replace("{name}", "x")
        )


async def test_no_route_of_any_role_but_graphql_answers_a_browser_with_html(
    db_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    """Every GET route of the API, the relay, the observer and the dev IPFS gateway, asked as
    a browser asks: only `/graphql` is a page (the one tested in Chromium above)."""
    from graphql_api.app import create_app
    from indexer.metadata.devgateway import DevGateway
    from indexer.observer import create_app as observer_app
    from writers.app import build_app
    from writers.metrics import RelayMetrics

    settings = Settings(database_url=SecretStr(db_url))
    apps = {
        "api": create_app(settings, engine=engine),
        "relay": build_app(settings, engine, RelayMetrics()),
        "observer": observer_app(None, 1024),  # type: ignore[arg-type]  # routes only
        "ipfs-gateway": DevGateway(tmp_path).app,
    }
    pages = []
    for role, app in apps.items():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            paths = list(_route_samples(app))
            assert paths or role == "observer"
            for path in paths:
                resp = await client.get(path, headers={"accept": BROWSER_ACCEPT})
                if resp.headers.get("content-type", "").startswith("text/html"):
                    pages.append(f"{role} {path}")
    assert pages == ["api /graphql"]
