"""A local IPFS gateway for development and tests: serves a directory of blocks named by CID.

Protocol shapes follow the public specs: the trustless gateway (``GET /ipfs/{cid}?format=raw``
or ``Accept: application/vnd.ipld.raw`` answers the raw block), the path gateway
(``GET /ipfs/{cid}/{path}`` answers the file bytes, deserialised from UnixFS) and the Kubo RPC
(``POST /api/v0/cat?arg=`` and ``POST /api/v0/block/get?arg=``; other methods get 405; errors
are ``{"Message", "Code", "Type": "error"}`` with status 500).

It can misbehave on demand, per CID or for everything, to exercise the resolver: wrong bytes,
slow drip, endless body, 429 with ``Retry-After``, 500s, redirect loops, 404s, or the right
answer after a delay (``slow``, keeping work in flight for crash tests).
``POST /_dev/behaviour {"cid": CID | null, "mode": MODE, "retry_after": N, "delay_s": S}``
switches it.

Run: ``python -m indexer.metadata.devgateway --dir tests/fixtures/demo/ipfs --port 8080``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from indexer.metadata.cid import Cid, parse_cid
from indexer.metadata.errors import MetadataError
from indexer.metadata.resolver import walk
from indexer.metadata.uri import IpfsTarget

MODES = (
    "ok",
    "wrong_bytes",
    "drip",
    "endless",
    "rate_limit",
    "error500",
    "redirect_loop",
    "not_found",
    "slow",
)
RAW = "application/vnd.ipld.raw"


@dataclass
class Behaviour:
    mode: str = "ok"
    retry_after: int = 1
    # After this many misbehaving answers the CID is served normally (0 = forever).
    times: int = 0
    delay_s: float = 1.0  # how long `slow` waits before answering


class BlockStore:
    """Files named by any CID form; looked up by multihash so v0/v1 names both work."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._index: dict[bytes, Path] = {}

    def _rescan(self) -> None:
        index: dict[bytes, Path] = {}
        if self.root.is_dir():
            for entry in self.root.iterdir():
                try:
                    cid = parse_cid(entry.name)
                except MetadataError:
                    continue
                index[cid.digest] = entry
        self._index = index

    def get(self, cid: Cid) -> bytes | None:
        path = self._index.get(cid.digest)
        if path is None or not path.exists():
            self._rescan()
            path = self._index.get(cid.digest)
        return path.read_bytes() if path is not None else None

    def put(self, cid: Cid, block: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / cid.key).write_bytes(block)
        self._index[cid.digest] = self.root / cid.key


class DevGateway:
    def __init__(self, root: Path) -> None:
        self.store = BlockStore(root)
        self.default = Behaviour()
        self.behaviours: dict[str, Behaviour] = {}
        self.hits: Counter[str] = Counter()
        self.app = Starlette(
            routes=[
                Route("/ipfs/{rest:path}", self.gateway, methods=["GET", "HEAD"]),
                Route("/api/v0/cat", self.kubo_cat, methods=["GET", "POST"]),
                Route("/api/v0/block/get", self.kubo_block, methods=["GET", "POST"]),
                Route("/_dev/behaviour", self.set_behaviour_http, methods=["POST"]),
                Route("/_dev/hits", self.hits_http, methods=["GET"]),
                Route("/_dev/web/{rest:path}", self.web, methods=["GET"]),
            ]
        )

    def set_behaviour(
        self,
        cid: str | None,
        mode: str,
        *,
        retry_after: int = 1,
        times: int = 0,
        delay_s: float = 1.0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        b = Behaviour(mode, retry_after, times, delay_s)
        if cid is None:
            self.default = b
        else:
            self.behaviours[parse_cid(cid).key] = b

    def _behaviour(self, cid: Cid) -> Behaviour:
        b = self.behaviours.get(cid.key, self.default)
        if b.mode != "ok" and b.times:
            b.times -= 1
            if b.times == 0:
                self.behaviours[cid.key] = Behaviour()
        return b

    async def _local(self, cid: Cid) -> bytes:
        block = self.store.get(cid)
        if block is None:
            raise KeyError(cid.key)
        return block

    async def _content(self, arg: str, raw: bool) -> tuple[Cid, bytes | None]:
        head, _, tail = arg.strip("/").partition("/")
        cid = parse_cid(head)
        try:
            if raw:
                return cid, await self._local(cid)
            target = IpfsTarget(cid, tuple(p for p in tail.split("/") if p))
            body, _ = await walk(self._local, target, 64 * 1024 * 1024)
            return cid, body
        except KeyError:
            return cid, None

    async def _respond(
        self, request: Request, cid: Cid, body: bytes | None, media_type: str, kubo: bool
    ) -> Response:
        self.hits[cid.key] += 1
        b = self._behaviour(cid)
        if b.mode == "not_found" or body is None:
            if kubo:
                msg = {"Message": f"block not found: {cid.key}", "Code": 0, "Type": "error"}
                return JSONResponse(msg, status_code=500)
            return Response(f"{cid.key} not found\n", status_code=404)
        if b.mode == "rate_limit":
            return Response(
                "slow down\n", status_code=429, headers={"Retry-After": str(b.retry_after)}
            )
        if b.mode == "error500":
            return Response("internal error\n", status_code=500)
        if b.mode == "slow":
            await asyncio.sleep(b.delay_s)
        if b.mode == "redirect_loop":
            hop = "2" if request.query_params.get("hop") == "1" else "1"
            params = dict(request.query_params) | {"hop": hop}
            query = "&".join(f"{k}={v}" for k, v in params.items())
            return Response(status_code=302, headers={"Location": f"{request.url.path}?{query}"})
        if b.mode == "wrong_bytes":
            body = bytes([body[0] ^ 0xFF]) + body[1:] if body else b"\x00"
        if b.mode == "drip":
            return StreamingResponse(_drip(body), media_type=media_type)
        if b.mode == "endless":
            return StreamingResponse(_endless(), media_type=media_type)
        return Response(body, media_type=media_type)

    async def gateway(self, request: Request) -> Response:
        rest = request.path_params["rest"]
        raw = request.query_params.get("format") == "raw" or RAW in request.headers.get(
            "accept", ""
        )
        try:
            cid, body = await self._content(rest, raw)
        except MetadataError as exc:
            return Response(f"{exc.message}\n", status_code=400)
        return await self._respond(
            request, cid, body, RAW if raw else "application/octet-stream", kubo=False
        )

    async def web(self, request: Request) -> Response:
        """The same content as an ordinary web server would serve it (no IPFS in the URL)."""
        try:
            cid, body = await self._content(request.path_params["rest"], raw=False)
        except MetadataError as exc:
            return Response(f"{exc.message}\n", status_code=400)
        return await self._respond(request, cid, body, "application/json", kubo=False)

    async def _kubo(self, request: Request, raw: bool) -> Response:
        if request.method != "POST":
            return Response("405 - Method Not Allowed\n", status_code=405)
        arg = request.query_params.get("arg", "")
        try:
            cid, body = await self._content(arg.removeprefix("/ipfs/"), raw)
        except MetadataError as exc:
            msg = {"Message": exc.message, "Code": 0, "Type": "error"}
            return JSONResponse(msg, status_code=500)
        return await self._respond(request, cid, body, "text/plain", kubo=True)

    async def kubo_cat(self, request: Request) -> Response:
        return await self._kubo(request, raw=False)

    async def kubo_block(self, request: Request) -> Response:
        return await self._kubo(request, raw=True)

    async def set_behaviour_http(self, request: Request) -> Response:
        payload: Any = await request.json()
        try:
            self.set_behaviour(
                payload.get("cid"),
                str(payload.get("mode", "ok")),
                retry_after=int(payload.get("retry_after", 1)),
                times=int(payload.get("times", 0)),
                delay_s=float(payload.get("delay_s", 1.0)),
            )
        except (ValueError, MetadataError, AttributeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True})

    async def hits_http(self, request: Request) -> Response:
        return JSONResponse(dict(self.hits))


async def _drip(body: bytes) -> AsyncIterator[bytes]:
    # One byte at a time, slowly and past the real end: only a total deadline stops it.
    i = 0
    while True:
        yield body[i : i + 1] or b" "
        i += 1
        await asyncio.sleep(0.2)


async def _endless() -> AsyncIterator[bytes]:
    chunk = b"0" * 65536
    while True:
        yield chunk
        await asyncio.sleep(0)


class RunningGateway:
    """A dev gateway on a loopback ephemeral port, served from its own thread and loop (so a
    misbehaving response never shares the caller's event loop)."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.gateway = DevGateway(root)
        config = uvicorn.Config(
            self.gateway.app, host=host, port=port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> RunningGateway:
        self._thread.start()
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("dev gateway failed to start")
            threading.Event().wait(0.01)
        sock = self.server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.server.force_exit = True
        self._thread.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m indexer.metadata.devgateway")
    parser.add_argument("--dir", type=Path, required=True, help="directory of blocks named by CID")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--misbehave", choices=MODES, default="ok", help="for every CID")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    gw = DevGateway(args.dir)
    gw.set_behaviour(None, args.misbehave)
    uvicorn.run(
        gw.app, host=args.host, port=args.port, log_level="info", access_log=args.access_log
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["MODES", "BlockStore", "DevGateway", "RunningGateway"]
