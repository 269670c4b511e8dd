"""A real headless Chromium (Debian's `chromium`), driven over the DevTools protocol.

The protocol is Chromium's own (https://chromedevtools.github.io/devtools-protocol/): JSON
messages over the websocket that `--remote-debugging-port` opens, one flat session per page
(`Target.attachToTarget` with `flatten`). Every request the page makes is recorded from the
`Network` domain, so a test can assert where each one went; host resolution is mapped so that
no name but loopback resolves, as on a machine without internet.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import websockets

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageLog:
    requests: list[str] = field(default_factory=list)
    responses: list[tuple[str, int, str]] = field(default_factory=list)  # url, status, remote ip
    failures: list[tuple[str, str]] = field(default_factory=list)
    websockets: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # exceptions, console errors, CSP reports

    def non_loopback(self) -> list[str]:
        urls = [*self.requests, *self.websockets]
        out = []
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme in ("data", "blob", "about"):
                continue
            if parts.hostname not in LOOPBACK_HOSTS:
                out.append(url)
        out += [f"{u} (answered by {ip})" for u, _, ip in self.responses if ip and not _lo(ip)]
        return out


def _lo(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("::1", "[::1]")


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        self.log = PageLog()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.browser.send(method, params, session=self.session)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, within: float = 60.0) -> Any:
        """Poll `expression` until it is truthy; its value, or TimeoutError with the page's log."""
        deadline = time.monotonic() + within
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} never held; page log: {self.log}")
            await asyncio.sleep(0.2)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        log = self.log
        if method == "Network.requestWillBeSent":
            log.requests.append(params["request"]["url"])
        elif method == "Network.responseReceived":
            r = params["response"]
            log.responses.append((r["url"], r["status"], r.get("remoteIPAddress", "")))
        elif method == "Network.loadingFailed":
            log.failures.append((params.get("requestId", ""), params.get("errorText", "")))
        elif method == "Network.webSocketCreated":
            log.websockets.append(params["url"])
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            log.errors.append(str(details.get("exception", {}).get("description") or details))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            log.errors.append(
                " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            log.errors.append(params["entry"].get("text", ""))


class Browser:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pages: dict[str, Page] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            if "id" in msg:
                fut = self._waiting.pop(msg["id"], None)
                if fut is not None and not fut.done():
                    if "error" in msg:
                        fut.set_exception(RuntimeError(f"DevTools: {msg['error']}"))
                    else:
                        fut.set_result(msg.get("result", {}))
            elif (page := self._pages.get(msg.get("sessionId", ""))) is not None:
                page.on_event(msg["method"], msg.get("params", {}))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = fut
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        await self.ws.send(json.dumps(msg))
        return await asyncio.wait_for(fut, 60)

    async def new_page(self) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, attached["sessionId"])
        self._pages[page.session] = page
        for domain in ("Network", "Page", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        # Every page load fetches afresh: the test sees each request the page needs.
        await page.send("Network.setCacheDisabled", cacheDisabled=True)
        return page

    async def goto(self, page: Page, url: str) -> None:
        result = await page.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise RuntimeError(f"navigation to {url} failed: {result['errorText']}")

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
        await self.ws.close()


@contextlib.asynccontextmanager
async def chromium(binary: str) -> AsyncIterator[Browser]:
    """Start a headless Chromium with its own profile; kill it (and its children) on exit."""
    profile = Path(tempfile.mkdtemp(prefix="recchain-chromium-"))
    proc = _launch(binary, profile)
    try:
        url = await asyncio.to_thread(_devtools_url, proc)
        async with websockets.connect(url, max_size=64 * 1024 * 1024) as ws:
            browser = Browser(ws)
            try:
                yield browser
            finally:
                await browser.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


def _launch(binary: str, profile: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            binary,
            "--headless=new",
            "--no-sandbox",  # the tests run as root, where the sandbox refuses to start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            # As offline as a machine without internet: no name but loopback resolves.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _devtools_url(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        m = re.search(r"DevTools listening on (ws://\S+)", line)
        if m:
            # Keep draining stderr so Chromium never blocks on a full pipe.
            threading.Thread(target=_drain, args=(proc.stderr,), daemon=True).start()
            return m.group(1)
    raise RuntimeError("chromium did not start: " + "".join(seen[-20:]))


def _drain(stream: Any) -> None:
    for _ in stream:
        pass
