"""The relay's HTTP face: `POST /v1/transactions`, `GET /v1/transactions/{txid}`, `/metrics`.

A submission passes, in order: API key (when keys are configured), the client's rate limit and
concurrency cap, the body size cap, body parsing, then the transaction checks in
`writers.policy`. Only then is it written to the outbox, and only after that commit does the
client get 202; accepts that arrive together share one commit (`outbox.GroupCommitter`). Every
submission, accepted or not, leaves one JSON line on the audit logger `recchain.relay.audit`; it
carries the transaction (which is public once broadcast) and facts derived from it, never
request headers or keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from db.outage import Outage, is_unavailable
from infra.config import Settings
from infra.httpserver import client_key
from infra.ratelimit import Buckets, make_buckets
from writers import outbox
from writers.errors import Reject, SubmissionRejected
from writers.metrics import RelayMetrics
from writers.policy import AcceptedTx, Policy, parse_body
from writers.webhooks.routes import webhook_routes

audit_log = logging.getLogger("recchain.relay.audit")
log = logging.getLogger("recchain.relay")
READY_TIMEOUT_S = 2.0
# Bytes of a submitted transaction an audit line carries: whitelisted contract calls are well
# under 1 KB, and what a client sends beyond that (up to the body cap) must not make every
# refusal a line of a megabyte.
AUDIT_TX_BYTES = 2048
AUDIT_MESSAGE_CHARS = 500
TXID_RE = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


@dataclass
class ClientLimits:
    """Per-client rate (`per_minute`, bursting to the same number) and in-flight cap.

    The rate's buckets come from `infra.ratelimit`: shared by every relay replica when
    `redis_url` is set, else this process's own. Submissions in flight are counted per process
    (they are this process's work)."""

    per_minute: int
    max_in_flight: int
    redis_url: str | None = None
    backend_errors: Counter | None = None
    buckets: Buckets = field(init=False)
    in_flight: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        extra = {} if self.backend_errors is None else {"errors": self.backend_errors}
        self.buckets = make_buckets(self.per_minute, self.redis_url, namespace="relay", **extra)

    async def take(self, client: str) -> float:
        """0.0 when a submission may go on, else seconds until the client's next token."""
        return await self.buckets.take(client)

    def enter(self, client: str) -> bool:
        current = self.in_flight.get(client, 0)
        if current >= self.max_in_flight:
            return False
        self.in_flight[client] = current + 1
        return True

    def leave(self, client: str) -> None:
        left = self.in_flight.get(client, 1) - 1
        if left <= 0:
            self.in_flight.pop(client, None)
        else:
            self.in_flight[client] = left


class RelayApi:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        metrics: RelayMetrics,
        on_accept: Callable[[], None] | None = None,
        outage: Outage | None = None,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        # Shared with the broadcaster and the status listener: one line per outage, whoever
        # meets it first.
        self.outage = outage or Outage(log)
        self.policy = Policy.from_settings(settings)
        self.max_body = settings.relay.max_body_bytes
        self.keys = [k.get_secret_value().encode() for k in settings.relay.api_keys]
        self.limits = ClientLimits(
            settings.relay.rate_limit_per_minute,
            settings.relay.max_concurrency,
            settings.redis_url.get_secret_value() if settings.redis_url else None,
            metrics.ratelimit_backend_errors,
        )
        self.on_accept = on_accept
        self.accepts = outbox.GroupCommitter(engine)

    # ------------------------------------------------------------------ identity and limits

    def _client(self, request: Request) -> str:
        """The client's identity: its API key's fingerprint, else its address."""
        if self.keys:
            given = _presented_key(request)
            if given is None or not any(hmac.compare_digest(given, k) for k in self.keys):
                raise SubmissionRejected(Reject.UNAUTHORIZED, "a valid API key is required")
            return "key:" + hashlib.sha256(given).hexdigest()[:16]
        # The peer, or the client a trusted proxy forwarded for (infra/httpserver.py).
        host = request.client.host if request.client else "unknown"
        return "ip:" + client_key(host)

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise SubmissionRejected(
                Reject.BODY_TOO_LARGE, f"body of {declared} bytes exceeds {self.max_body}"
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise SubmissionRejected(
                    Reject.BODY_TOO_LARGE, f"body exceeds {self.max_body} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------------ endpoints

    async def submit(self, request: Request) -> Response:
        started = time.perf_counter()
        client: str | None = None
        raw: bytes | None = None
        entered = False
        retry_after = "60"
        try:
            client = self._client(request)
            wait = await self.limits.take(client)
            if wait:
                retry_after = str(max(1, math.ceil(wait)))
                raise SubmissionRejected(Reject.RATE_LIMITED, "too many submissions; slow down")
            if not self.limits.enter(client):
                raise SubmissionRejected(
                    Reject.TOO_MANY_CONCURRENT, "too many submissions in flight"
                )
            entered = True
            body = await self._body(request)
            raw = parse_body(body, request.headers.get("content-type", ""))
            tx = self.policy.check(raw)
            status, created = await self._store(tx, client)
        except SubmissionRejected as exc:
            self.metrics.submissions.labels("rejected", exc.reason.code).inc()
            self._audit("rejected", client, raw, None, exc, started)
            if exc.reason is Reject.DATABASE_UNAVAILABLE:
                retry_after = str(max(1, math.ceil(self.outage.delay())))
            retried = (Reject.RATE_LIMITED, Reject.DATABASE_UNAVAILABLE)
            headers = {"retry-after": retry_after} if exc.reason in retried else None
            return JSONResponse(exc.to_json(), status_code=exc.reason.http_status, headers=headers)
        finally:
            if entered and client is not None:
                self.limits.leave(client)
        outcome = "accepted" if created else "duplicate"
        self.metrics.submissions.labels(outcome, "").inc()
        self._audit(outcome, client, raw, tx, None, started)
        if created and self.on_accept is not None:
            self.on_accept()
        return JSONResponse(
            {"txid": tx.txid, "status": status},
            status_code=202 if created else 200,
            headers={"location": f"/v1/transactions/{tx.txid}"},
        )

    async def _store(self, tx: AcceptedTx, client: str | None) -> tuple[str, bool]:
        try:
            result = await self.accepts.submit(tx, client)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self.outage.failed(exc)
            raise SubmissionRejected(
                Reject.DATABASE_UNAVAILABLE,
                "the relay cannot reach its database; nothing was stored, send it again later",
                tx.txid,
            ) from None
        self.outage.ok()
        return result

    async def get_status(self, request: Request) -> Response:
        txid = request.path_params["txid"]
        if not TXID_RE.match(txid):
            err = SubmissionRejected(Reject.BAD_TXID, "a txid is 64 hex digits, 0x optional")
            return JSONResponse(err.to_json(), status_code=err.reason.http_status)
        txid = "0x" + txid.lower().removeprefix("0x")
        try:
            row = await outbox.status(self.engine, txid)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self.outage.failed(exc)
            err = SubmissionRejected(Reject.DATABASE_UNAVAILABLE, "the database is unreachable")
            headers = {"retry-after": str(max(1, math.ceil(self.outage.delay())))}
            return JSONResponse(err.to_json(), status_code=503, headers=headers)
        if row is None:
            err = SubmissionRejected(Reject.NOT_FOUND, "this relay never accepted that txid")
            return JSONResponse(err.to_json(), status_code=err.reason.http_status)
        return JSONResponse(row)

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def health(self, request: Request) -> Response:
        """Liveness: the process serves requests. Never touches the database, so an outage
        does not get a healthy relay restarted (it recovers by itself)."""
        return JSONResponse({"ok": True})

    async def ready(self, request: Request) -> Response:
        """Readiness: the database answers now (accepts can be stored)."""
        try:
            async with asyncio.timeout(READY_TIMEOUT_S), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            self.outage.failed(exc, "readiness check")
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            return JSONResponse(
                {"ready": False, "reason": f"database: {type(exc).__name__}: {detail}"},
                status_code=503,
            )
        self.outage.ok()
        return JSONResponse({"ready": True})

    # ------------------------------------------------------------------ audit

    def _audit(
        self,
        outcome: str,
        client: str | None,
        raw: bytes | None,
        tx: AcceptedTx | None,
        error: SubmissionRejected | None,
        started: float,
    ) -> None:
        record: dict[str, Any] = {
            "event": "relay_submission",
            "outcome": outcome,
            "client": client,
            "ms": round((time.perf_counter() - started) * 1000, 3),
        }
        if error is not None:
            record["error"] = error.reason.code
            record["message"] = error.message[:AUDIT_MESSAGE_CHARS]
            if error.txid is not None:
                record["txid"] = error.txid
        if raw is not None:
            # The transaction itself (nothing beyond what was signed), its start when longer.
            record["bytes"] = len(raw)
            record["tx"] = raw[:AUDIT_TX_BYTES].hex()
            if len(raw) > AUDIT_TX_BYTES:
                record["tx_truncated"] = True
        if tx is not None:
            record.update(
                txid=tx.txid,
                sender=tx.sender,
                sponsor=tx.sponsor,
                nonce=tx.nonce,
                fee=tx.fee,
                contract=tx.contract_id,
                function=tx.function_name,
            )
        audit_log.info(json.dumps(record, separators=(",", ":")))


def _presented_key(request: Request) -> bytes | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip().encode()
    key = request.headers.get("x-api-key")
    return key.encode() if key else None


def build_app(
    settings: Settings,
    engine: AsyncEngine,
    metrics: RelayMetrics,
    on_accept: Callable[[], None] | None = None,
    outage: Outage | None = None,
) -> Starlette:
    api = RelayApi(settings, engine, metrics, on_accept, outage)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await api.limits.buckets.aclose()

    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route("/v1/transactions", api.submit, methods=["POST"]),
            Route("/v1/transactions/{txid}", api.get_status, methods=["GET"]),
            Route("/metrics", api.metrics_endpoint, methods=["GET"]),
            Route("/healthz", api.health, methods=["GET"]),
            Route("/readyz", api.ready, methods=["GET"]),
            *webhook_routes(api, settings),
        ],
    )
    app.state.relay = api
    return app
