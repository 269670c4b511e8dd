"""The Starlette application: `/graphql` (GraphiQL, POST, websocket subscriptions), health,
readiness and metrics."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from functools import lru_cache
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from db.migrate import current_revisions, head_revisions
from db.session import create_engine, database_url, to_libpq_url
from graphql_api.answercache import AnswerCache
from graphql_api.context import BlockInput, Context
from graphql_api.db import Reader, close_read_pools
from graphql_api.errors import BadUserInput
from graphql_api.fanout import splice
from graphql_api.guards import (
    BAD_TEXT_MESSAGE,
    MAX_INPUT_DEPTH,
    BodyLimit,
    RateLimit,
    build_extensions,
    has_bad_text,
    refuse,
    replay,
    request_timed_out,
    response_too_large,
)
from graphql_api.http import FastQueries, read_body
from graphql_api.hub import Hub
from graphql_api.ide import (
    ASSET_PREFIX,
    ASSETS,
    CONTENT_SECURITY_POLICY,
    MISSING_HTML,
    asset_path,
    installed,
    page_html,
)
from graphql_api.replica import Replica
from graphql_api.schema import build_schema
from graphql_api.ws import LegacyWSHandler, TransportWSHandler
from infra.config import Settings
from infra.ratelimit import Buckets, make_buckets

STATEMENT_CSV_HEADER = (
    "txid",
    "block_height",
    "token_id",
    "facility_id",
    "facility_name",
    "facility_country",
    "market_boundary",
    "energy_source",
    "technology",
    "vintage",
    "wh",
    "mwh",
    "serial_start",
    "serial_end",
    "beneficiary",
    "consumption_country",
    "consumption_boundary",
    "reporting_year",
    "purpose",
)


@lru_cache(maxsize=1)
def _heads() -> frozenset[str]:
    return frozenset(head_revisions())


_ENVELOPE = {"query": str, "variables": dict, "operationName": str, "extensions": dict}


def _envelope_problem(data: Any) -> str | None:
    """What is wrong with a POSTed GraphQL request object, if anything (Strawberry's view took
    `null`, a list or a non-string query as far as an internal error)."""
    if type(data) is not dict:
        return "the body must be a JSON object (batches are not accepted)"
    for key, kind in _ENVELOPE.items():
        value = data.get(key)
        if value is not None and not isinstance(value, kind):
            return f"`{key}` must be a {'string' if kind is str else 'JSON object'}"
    return None


def _json_content(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bytes(value).startswith(b"application/json")
    return False


def api_database_url(settings: Settings) -> str:
    """The API may read from a replica (`api.read_database_url`); otherwise the primary."""
    if settings.api.read_database_url is not None:
        return settings.api.read_database_url.get_secret_value()
    return database_url(settings)


class GraphQLApp(GraphQL[Context, None]):
    # Shareable subscriptions skip Strawberry's per-operation task and send path (ws.py).
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        hub: Any,
        buckets: Buckets | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.engine = engine
        self.hub = hub
        # The per-client rate limit, also taken by each operation over a websocket (ws.py).
        self.buckets = buckets
        self.fast = FastQueries(
            self.schema, settings, self._http_context, getattr(hub, "answers", None)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._serve(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        timeout_ms = self.settings.api.request_timeout_ms
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                await self._serve(scope, receive, sending)
        except TimeoutError:
            # Cancelled at its next await (a statement, a loader): the reader's transaction is
            # rolled back on the way out, its connection returned or discarded.
            if not started:
                error = request_timed_out(timeout_ms)
                await refuse(send, 200, error.message, **(error.extensions or {}))

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            body = await read_body(receive)
            if _json_content(scope):
                try:
                    data = json.loads(body)
                except ValueError:
                    # Not UTF-8 or not JSON: the client's mistake, answered as such
                    # (Strawberry's path let them out as 500).
                    await refuse(
                        send, 400, "the body is not a JSON document in UTF-8", code="BAD_REQUEST"
                    )
                    return
                except RecursionError:
                    await refuse(
                        send,
                        400,
                        "the body nests deeper than the JSON decoder goes (variables may nest"
                        f" {MAX_INPUT_DEPTH} levels)",
                        code="BAD_REQUEST",
                    )
                    return
                problem = _envelope_problem(data)
                if problem is not None:
                    await refuse(send, 400, problem, code="BAD_REQUEST")
                    return
                if await self.fast.handle(scope, data, send):
                    return
            receive = replay(body, receive)
        await super().__call__(scope, receive, send)

    def decode_json(self, data: str | bytes) -> object:
        # GET variables and websocket frames come through here: a frame nested past the
        # decoder's depth is invalid JSON to the protocol handlers, not a crash.
        try:
            return json.loads(data)
        except (UnicodeDecodeError, RecursionError) as exc:
            raise json.JSONDecodeError(f"undecodable: {type(exc).__name__}", "", 0) from exc

    async def render_graphql_ide(self, request: Request) -> Response:
        # The project's own page and assets (graphql_api/ide.py), never a CDN's.
        headers = {"content-security-policy": CONTENT_SECURITY_POLICY}
        if not installed():
            return HTMLResponse(MISSING_HTML, 503, headers=headers)
        return HTMLResponse(page_html(request.url.path), headers=headers)

    def _http_context(self, scope: Scope, optimistic: bool) -> Context:
        return self._context(Request(scope), None, optimistic=optimistic)

    def _context(
        self, request: Request | WebSocket, response: Any, *, optimistic: bool = False
    ) -> Context:
        return Context(
            settings=self.settings,
            engine=self.engine,
            # Websocket pushes read per statement, so idle subscribers hold no connection.
            reader=Reader(
                self.engine,
                self.settings.api.statement_timeout_ms,
                snapshot=not isinstance(request, WebSocket),
                optimistic=optimistic,
            ),
            request=request,
            response=response,
            hub=self.hub,
        )

    def encode_json(self, data: object) -> str | bytes:
        if type(data) is dict:
            frame = splice(data)
            if frame is not None:
                return frame
        out = super().encode_json(data)
        cap = self.settings.api.max_response_bytes
        if len(out) > cap and type(data) is dict:
            error = response_too_large(len(out), cap).formatted
            if data.get("type") in ("next", "data"):  # a websocket result frame
                data = {**data, "payload": {"data": None, "errors": [error]}}
            else:
                data = {"data": None, "errors": [error]}
            out = super().encode_json(data)
        return out

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        return self._context(request, response)


def create_app(settings: Settings, *, engine: AsyncEngine | None = None) -> Starlette:
    """The API as an ASGI app; `engine` may be injected (tests, `recchain dev`)."""
    api = settings.api
    owns_engine = engine is None
    # No pre-ping: it costs a round trip per request; recycled connections bound staleness.
    eng = (
        engine
        if engine is not None
        else create_engine(api_database_url(settings), pool_pre_ping=False, pool_recycle=300)
    )
    schema = build_schema(build_extensions(settings), field_suggestions=api.field_suggestions)
    buckets = make_buckets(
        api.rate_limit_per_minute,
        settings.redis_url.get_secret_value() if settings.redis_url else None,
        namespace="api",
    )
    read_url = to_libpq_url(eng.url.render_as_string(hide_password=False))
    replica: Replica | None = None
    primary: AsyncEngine | None = None
    listen_url = read_url
    if api.read_database_url is not None:
        # Notifications exist only on the primary; the replica is read once it has caught up,
        # or the primary itself when the replica stays behind (connected only then: lazy).
        listen_url = to_libpq_url(database_url(settings))
        replica = Replica(listen_url, read_url, api.read_replica_max_lag_s)
        primary = create_engine(listen_url, pool_pre_ping=False, pool_recycle=300)

    def push_reader() -> Reader:
        # Shared by every subscriber of a topic: per statement, no socket's state.
        return Reader(eng, api.statement_timeout_ms, snapshot=False)

    def primary_push_reader() -> Reader:
        assert primary is not None
        return Reader(primary, api.statement_timeout_ms, snapshot=False)

    answers = (
        AnswerCache(
            api.answer_cache_max_entries, api.answer_cache_max_bytes, api.answer_cache_max_age_s
        )
        if api.answer_cache
        else None
    )
    hub = Hub(
        listen_url,
        push_reader,
        replica,
        primary_reader=primary_push_reader if primary is not None else None,
        push_wait_s=api.read_replica_push_wait_s,
        answers=answers,
    )
    graphql = GraphQLApp(
        settings,
        eng,
        hub,
        buckets,
        schema=schema,
        graphql_ide="graphiql" if api.graphiql else None,
        keep_alive=True,
        max_subscriptions_per_connection=api.max_subscriptions_per_connection,
        keep_alive_interval=15,
        allowed_origins=api.ws_allowed_origins,
    )

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        try:
            async with eng.connect() as conn:
                await conn.execute(text("SELECT 1"))
            migrated = await current_revisions(eng) == _heads()
        except Exception as exc:
            return JSONResponse({"ready": False, "reason": f"database: {type(exc).__name__}"}, 503)
        if not migrated:
            return JSONResponse({"ready": False, "reason": "database not migrated"}, 503)
        if replica is not None:
            lag = replica.lag_seconds
            if replica.too_far_behind:
                reason = f"replica {lag:.1f} s behind the primary (bound {replica.max_lag_s:g} s)"
                return JSONResponse(
                    {"ready": False, "reason": reason, "replica_lag_seconds": lag}, 503
                )
            return JSONResponse({"ready": True, "replica_lag_seconds": lag})
        return JSONResponse({"ready": True})

    async def statement_csv(request: Request) -> Response:
        """The retirement statement as CSV, with the GraphQL field's filters."""
        from graphql_api.errors import ApiError
        from graphql_api.questions.claims import retirement_statement

        q = request.query_params
        if any(has_bad_text(v) for v in q.values()):
            return JSONResponse({"error": BAD_TEXT_MESSAGE, "code": BadUserInput.code}, 400)
        ctx = await graphql.get_context(request, None)
        try:
            try:
                year = int(q["reportingYear"]) if q.get("reportingYear") else None
                start = datetime.fromisoformat(q["periodStart"]) if q.get("periodStart") else None
                end = datetime.fromisoformat(q["periodEnd"]) if q.get("periodEnd") else None
                at = int(q["block"]) if q.get("block") else None
            except ValueError as exc:
                raise BadUserInput(f"bad parameter: {exc}") from exc
            at = await ctx.at(BlockInput(number=at)) if at is not None else None
            statement = await retirement_statement(
                ctx, q.get("beneficiary", ""), start, end, year, at
            )
        except ApiError as exc:
            return JSONResponse({"error": str(exc), **exc.extensions}, 400)
        finally:
            await ctx.close()
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(STATEMENT_CSV_HEADER)
        for line in statement.lines:
            r = line.retirement
            writer.writerow(
                [
                    r.txid,
                    r.block_height,
                    r.token_id,
                    r.facility_id,
                    line.facility_name,
                    line.facility_country,
                    line.market_boundary,
                    line.energy_source,
                    line.technology,
                    r.vintage,
                    r.wh,
                    line.mwh,
                    r.serial_start,
                    r.serial_end,
                    r.beneficiary_name,
                    r.consumption_country,
                    r.consumption_boundary,
                    r.reporting_year,
                    r.purpose,
                ]
            )
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8")

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        hub.launch()
        if replica is not None:
            replica.start()
        try:
            yield
        finally:
            await hub.stop()
            if replica is not None:
                await replica.stop()
            await buckets.aclose()
            await close_read_pools(eng)
            if primary is not None:
                await close_read_pools(primary)
                await primary.dispose()
            if owns_engine:
                await eng.dispose()

    async def ide_asset(request: Request) -> Response:
        name = request.path_params["name"]
        path = asset_path(name) if api.graphiql else None
        if path is None:
            return Response("not found\n", 404, media_type="text/plain")
        # Versioned names (ide.py): the content of a name never changes, except our own script.
        cache = "no-cache" if name == "ide.js" else "public, max-age=31536000, immutable"
        return FileResponse(path, media_type=ASSETS[name], headers={"cache-control": cache})

    async def prometheus(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    routes = [
        # First: the router tries routes in order, and nearly every request is a query.
        Route("/graphql", graphql, methods=["GET", "POST"]),
        Route("/metrics", prometheus),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/retirement-statement.csv", statement_csv),
        Route(ASSET_PREFIX + "{name}", ide_asset, methods=["GET", "HEAD"]),
        WebSocketRoute("/graphql", graphql),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=api.cors_origins,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["content-type", "authorization"],
            ),
            Middleware(
                RateLimit,
                buckets=buckets,
                paths=("/graphql", "/retirement-statement.csv"),
            ),
            Middleware(BodyLimit, max_bytes=api.max_body_bytes),
        ],
    )
    app.state.hub = hub
    return app
