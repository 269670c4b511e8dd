"""The relay's `/v1/webhooks` routes: API-key holders register and manage their own endpoints.

Registration writes to the primary, which the relay already does (the GraphQL API reads
replicas and has no write path). Authentication is the relay's: a key from `relay.api_keys` as
`Authorization: Bearer <key>` or `X-API-Key`; without configured keys the routes refuse
everything (an endpoint must belong to someone). An endpoint belongs to the fingerprint of the
key that created it: another key neither sees nor changes it. The key's rate limit and the
relay's body cap apply.

```
POST   /v1/webhooks                             {url, filters, delivery?, description?} -> 201
GET    /v1/webhooks                             -> {"endpoints": [...]}
GET    /v1/webhooks/{id}
DELETE /v1/webhooks/{id}                        -> 204
POST   /v1/webhooks/{id}/rotate-secret          {overlap_s?}
POST   /v1/webhooks/{id}/pause | /resume
POST   /v1/webhooks/{id}/redeliver              {event_ids?, dead?, from_seq?} -> {"queued": n}
GET    /v1/webhooks/{id}/deliveries             ?status=&limit=&before_seq=
GET    /v1/webhooks/{id}/deliveries/{event_id}  the event, its payload and every attempt
```

Refusals are `{"error": code, "message": text}`; nothing is changed by a refused request.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from db.webhooks import store
from infra.config import Settings
from writers.errors import SubmissionRejected

if TYPE_CHECKING:
    from writers.app import RelayApi

audit_log = logging.getLogger("recchain.relay.audit")

_STATUS = {
    "invalid_request": 400,
    "invalid_url": 400,
    "invalid_filter": 400,
    "destination_refused": 400,
    "not_found": 404,
    "limit_reached": 409,
    "unauthorized": 401,
    "keys_required": 403,
    "rate_limited": 429,
    "body_too_large": 413,
}


def _error(code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": code, "message": message}, status_code=_STATUS[code], headers=headers
    )


Handler = Callable[[Request, AsyncConnection, str], Awaitable[Response]]


def webhook_routes(api: RelayApi, settings: Settings) -> list[Route]:
    async def guarded(request: Request, handler: Handler, write: bool) -> Response:
        if not api.keys:
            return _error("keys_required", "webhook registration needs API keys (relay.api_keys)")
        try:
            owner = api._client(request)
            wait = await api.limits.take(owner)
            if wait:
                return _error(
                    "rate_limited",
                    "too many requests; slow down",
                    {"retry-after": str(max(1, math.ceil(wait)))},
                )
            if write:
                async with api.engine.begin() as conn:
                    return await handler(request, conn, owner)
            async with api.engine.connect() as conn:
                return await handler(request, conn, owner)
        except SubmissionRejected as exc:
            return _error(exc.reason.code, exc.message)
        except store.WebhookError as exc:
            return _error(exc.code, exc.message)

    async def body(request: Request) -> dict[str, Any]:
        raw = await api._body(request)
        try:
            value = json.loads(raw or b"{}")
        except ValueError:
            raise store.WebhookError("invalid_request", "the body is not JSON") from None
        if not isinstance(value, dict):
            raise store.WebhookError("invalid_request", "the body must be a JSON object")
        return value

    def ident(request: Request) -> int:
        try:
            return int(request.path_params["id"])
        except ValueError:
            raise store.WebhookError("not_found", "no such webhook endpoint") from None

    async def create(request: Request, conn: AsyncConnection, owner: str) -> Response:
        args = await body(request)
        unknown = set(args) - {"url", "filters", "delivery", "description"}
        if unknown:
            raise store.WebhookError("invalid_request", f"unknown field(s) {sorted(unknown)}")
        url = args.get("url")
        store.parse_url(url)
        assert isinstance(url, str)  # parse_url refuses anything else
        await store.check_destination(url, settings)
        endpoint = await store.add_endpoint(
            conn,
            url=url,
            filters=args.get("filters"),
            settings=settings,
            delivery=args.get("delivery", "tip"),
            description=args.get("description"),
            owner=owner,
        )
        audit_log.info(
            json.dumps({"event": "webhook_registered", "client": owner, "endpoint": endpoint["id"]})
        )
        return JSONResponse(
            endpoint, status_code=201, headers={"location": f"/v1/webhooks/{endpoint['id']}"}
        )

    async def listing(request: Request, conn: AsyncConnection, owner: str) -> Response:
        return JSONResponse({"endpoints": await store.list_endpoints(conn, owner)})

    async def one(request: Request, conn: AsyncConnection, owner: str) -> Response:
        endpoint = await store.get_endpoint(conn, ident(request), owner)
        if endpoint is None:
            raise store.WebhookError("not_found", "no such webhook endpoint")
        return JSONResponse(endpoint)

    async def remove(request: Request, conn: AsyncConnection, owner: str) -> Response:
        await store.remove_endpoint(conn, ident(request), owner)
        return Response(status_code=204)

    async def rotate(request: Request, conn: AsyncConnection, owner: str) -> Response:
        args = await body(request)
        overlap = args.get("overlap_s", settings.webhooks.rotation_overlap_s)
        if not isinstance(overlap, int | float) or isinstance(overlap, bool):
            raise store.WebhookError("invalid_request", "overlap_s: a number of seconds")
        return JSONResponse(await store.rotate_secret(conn, ident(request), owner, overlap))

    def status(to: str) -> Handler:
        async def handler(request: Request, conn: AsyncConnection, owner: str) -> Response:
            await store.set_status(conn, ident(request), owner, to)
            endpoint = await store.get_endpoint(conn, ident(request), owner)
            return JSONResponse(endpoint)

        return handler

    async def redeliver(request: Request, conn: AsyncConnection, owner: str) -> Response:
        args = await body(request)
        dead = args.get("dead", False)
        if not isinstance(dead, bool):
            raise store.WebhookError("invalid_request", "dead: true or false")
        count = await store.redeliver(
            conn,
            ident(request),
            owner,
            event_ids=args.get("event_ids"),
            dead=dead,
            from_seq=args.get("from_seq"),
        )
        return JSONResponse({"queued": count}, status_code=202)

    async def deliveries(request: Request, conn: AsyncConnection, owner: str) -> Response:
        q = request.query_params

        def number(name: str, default: int | None) -> int | None:
            value = q.get(name)
            if value is None:
                return default
            if not value.isdigit():
                raise store.WebhookError("invalid_request", f"{name}: a positive integer")
            return int(value)

        rows = await store.deliveries(
            conn,
            ident(request),
            owner,
            status=q.get("status"),
            limit=number("limit", 50) or 50,
            before_seq=number("before_seq", None),
        )
        return JSONResponse({"deliveries": rows})

    async def attempts(request: Request, conn: AsyncConnection, owner: str) -> Response:
        return JSONResponse(
            await store.attempts(conn, ident(request), owner, request.path_params["event_id"])
        )

    def route(path: str, handler: Handler, method: str, write: bool = False) -> Route:
        async def endpoint(request: Request) -> Response:
            return await guarded(request, handler, write)

        return Route(path, endpoint, methods=[method])

    base = "/v1/webhooks"
    return [
        route(base, create, "POST", write=True),
        route(base, listing, "GET"),
        route(base + "/{id}", one, "GET"),
        route(base + "/{id}", remove, "DELETE", write=True),
        route(base + "/{id}/rotate-secret", rotate, "POST", write=True),
        route(base + "/{id}/pause", status("paused"), "POST", write=True),
        route(base + "/{id}/resume", status("active"), "POST", write=True),
        route(base + "/{id}/redeliver", redeliver, "POST", write=True),
        route(base + "/{id}/deliveries", deliveries, "GET"),
        route(base + "/{id}/deliveries/{event_id}", attempts, "GET"),
    ]
