"""`recchain serve`: the GraphQL API."""

from __future__ import annotations

import argparse
from typing import Any


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from graphql_api.app import create_app
    from recchain.config import get_settings
    from recchain.httpserver import server_config

    settings = get_settings()
    overrides: dict[str, Any] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if overrides:
        settings = settings.model_copy(update={"api": settings.api.model_copy(update=overrides)})
    app = create_app(settings)
    config = server_config(
        app,
        host=settings.api.host,
        port=settings.api.port,
        settings=settings.http,
        log_level=settings.log_level.lower(),
        ws_ping_interval=20,
        ws_per_message_deflate=settings.api.ws_compression,
        # A websocket frame is held to the same bound as an HTTP body.
        ws_max_size=settings.api.max_body_bytes,
    )
    uvicorn.Server(config).run()
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "serve", help="serve the GraphQL API (HTTP and websocket subscriptions)"
    )
    parser.add_argument("--host", default=None, help="bind address (default: api.host)")
    parser.add_argument("--port", type=int, default=None, help="port (default: api.port)")
    parser.set_defaults(handler=_serve)
