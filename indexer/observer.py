"""The stacks-node event-observer server.

The node stores each payload, sends it until it is answered 200 (any other answer, 4xx
included, is retried with a growing delay) and does not process blocks meanwhile. So: answer 200
only after the request is committed; a duplicate is a no-op that answers 200. Refusals are
decided so that none repeats forever unrecorded (ops/RUNBOOK.md "Chain held" has the table):

- a malformed payload is stored with its reason and answered 400 (never half-applied); the same
  payload again is answered 200 `{"result": "rejected"}`: it is recorded, and the node moves on
  (a refused block then holds the chain until its genuine copy arrives);
- a fork beyond `indexer.finality_depth` is recorded and answered 409 every time: the chain is
  held deliberately until the horizon is raised;
- a body over `indexer.max_body_bytes` is answered 413 without being read whole, every time,
  and recorded as a hold until the limit is raised.

Requests are applied one at a time (the node sends them in order and waits for each answer).

Under `recchain index` the app serves an `IndexerService` (indexer/service.py): a process that
cannot write now (a standby, a database that cannot be reached, a leader that lost its lock)
answers 503 with a Retry-After, never 500, and `/healthz` (liveness) and `/readyz` (leader with
a working data connection) report it.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse
from starlette.routing import Route

from db.outage import is_unavailable
from indexer import metrics
from indexer.pipeline import Indexer
from indexer.requests import OBSERVER_PATHS, Outcome, Request
from indexer.service import IndexerService, Unavailable

log = logging.getLogger("recchain.indexer.observer")


class BodyTooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size  # declared, or read before giving up


async def _read_body(request: HttpRequest, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(int(declared))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(size)
        chunks.append(chunk)
    return b"".join(chunks)


def _reply(outcome: Outcome) -> JSONResponse:
    if outcome.ok:
        return JSONResponse({"result": outcome.status})
    if outcome.status == "held":
        return JSONResponse({"error": outcome.reason, "held": True}, status_code=409)
    if outcome.repeat:  # recorded when it first came: let the node move on
        return JSONResponse({"result": "rejected", "error": outcome.reason})
    return JSONResponse({"error": outcome.reason}, status_code=400)


def _unavailable(reason: str, retry_after: float = 1.0) -> JSONResponse:
    headers = {"Retry-After": str(max(1, round(retry_after)))}
    return JSONResponse({"error": reason, "unavailable": True}, 503, headers=headers)


def create_app(indexer: Indexer | IndexerService, max_body_bytes: int) -> Starlette:
    lock = asyncio.Lock()
    service = indexer if isinstance(indexer, IndexerService) else None

    async def handle(request: HttpRequest) -> JSONResponse:
        response = await _answer(request)
        # Routes exist only for the observer paths, so the label set stays bounded.
        metrics.OBSERVER_REQUESTS.labels(request.url.path, str(response.status_code)).inc()
        return response

    async def _answer(request: HttpRequest) -> JSONResponse:
        path = request.url.path
        if service is not None and service.held is None:
            return _unavailable(service.standby_reason())
        try:
            body = await _read_body(request, max_body_bytes)
        except BodyTooLarge as exc:
            metrics.ERRORS.labels("payload").inc()
            async with lock:
                try:
                    await indexer.hold_body(path, exc.size, max_body_bytes)
                except Unavailable as gone:
                    return _unavailable(gone.reason, gone.retry_after)
                except Exception:  # the answer is 413 either way; the node retries
                    log.exception("could not record the oversized body on %s", path)
            error = f"body exceeds indexer.max_body_bytes ({max_body_bytes} bytes)"
            return JSONResponse({"error": error, "held": True}, status_code=413)
        refused = None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = body.decode("utf-8", errors="replace")
            refused = "body is not UTF-8"
        async with lock:
            try:
                (outcome,) = await indexer.process([Request(path, text, refused=refused)])
            except Unavailable as exc:
                return _unavailable(exc.reason, exc.retry_after)
            except Exception as exc:  # a failure of ours, not of the payload: the node retries
                if is_unavailable(exc):
                    return _unavailable(f"database unavailable: {type(exc).__name__}")
                log.exception("observer request on %s failed", path)
                return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, 500)
        return _reply(outcome)

    routes = [Route(p, handle, methods=["POST"]) for p in sorted(OBSERVER_PATHS)]
    if service is not None:

        async def healthz(_: HttpRequest) -> JSONResponse:
            why = service.liveness()
            if why is None:
                return JSONResponse({"status": "ok", "leader": service.held is not None})
            return JSONResponse({"status": "stuck", "error": why}, 503)

        async def readyz(_: HttpRequest) -> JSONResponse:
            why = await service.readiness()
            if why is None:
                return JSONResponse({"status": "ready"})
            return JSONResponse({"status": "unavailable", "error": why}, 503)

        routes += [Route("/healthz", healthz), Route("/readyz", readyz)]
    return Starlette(routes=routes)
