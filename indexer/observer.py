"""The stacks-node event-observer server (STACKS.md §1).

Delivery is at-least-once, so: answer 200 only after the request is committed; a duplicate is a
no-op that answers 200; a malformed payload is stored with its reason and answered 400 (never
half-applied); a body over `indexer.max_body_bytes` is answered 413 without being read whole.
Requests are applied one at a time (the node sends them in order and waits for each answer).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse
from starlette.routing import Route

from indexer import metrics
from indexer.pipeline import OBSERVER_PATHS, Indexer, Request

log = logging.getLogger("recchain.indexer.observer")


class BodyTooLarge(Exception):
    pass


async def _read_body(request: HttpRequest, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(indexer: Indexer, max_body_bytes: int) -> Starlette:
    lock = asyncio.Lock()

    async def handle(request: HttpRequest) -> JSONResponse:
        response = await _answer(request)
        # Routes exist only for the observer paths, so the label set stays bounded.
        metrics.OBSERVER_REQUESTS.labels(request.url.path, str(response.status_code)).inc()
        return response

    async def _answer(request: HttpRequest) -> JSONResponse:
        path = request.url.path
        try:
            body = await _read_body(request, max_body_bytes)
        except BodyTooLarge:
            metrics.ERRORS.labels("payload").inc()
            return JSONResponse({"error": f"body exceeds {max_body_bytes} bytes"}, status_code=413)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = body.decode("utf-8", errors="replace")
            async with lock:
                await indexer.store_rejected(Request(path, text), "body is not UTF-8")
            return JSONResponse({"error": "body is not UTF-8"}, status_code=400)
        async with lock:
            try:
                (outcome,) = await indexer.process([Request(path, text)])
            except Exception as exc:  # a failure of ours, not of the payload: the node retries
                log.exception("observer request on %s failed", path)
                return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, 500)
        if not outcome.ok:
            return JSONResponse({"error": outcome.reason}, status_code=400)
        return JSONResponse({"result": outcome.status})

    routes = [Route(p, handle, methods=["POST"]) for p in sorted(OBSERVER_PATHS)]
    return Starlette(routes=routes)
