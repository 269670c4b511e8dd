"""`recchain serve`: the GraphQL API."""

from __future__ import annotations

import argparse
from typing import Any


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from graphql_api.app import api_database_url, create_app
    from infra.config import get_settings
    from infra.httpserver import server_config
    from infra.listen import Listener, check_free
    from recchain.commands.failures import check_database

    settings = get_settings()
    overrides: dict[str, Any] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if overrides:
        settings = settings.model_copy(update={"api": settings.api.model_copy(update=overrides)})
    setting = "api.read_database_url" if settings.api.read_database_url else "DATABASE_URL"
    check_database(api_database_url(settings), setting=setting)
    check_free(
        [
            Listener(
                "the API",
                settings.api.host,
                settings.api.port,
                "api.port",
                hint="--port PORT or RECCHAIN_API__PORT=PORT",
                host_setting="api.host",
            )
        ]
    )
    app = create_app(settings)
    config = server_config(
        app,
        host=settings.api.host,
        port=settings.api.port,
        settings=settings.http,
        log_level=settings.log_level.lower(),
        # uvicorn's own logging config would bypass the project's (scrubbing) handler.
        log_config=None,
        ws_ping_interval=20,
        ws_per_message_deflate=settings.api.ws_compression,
        # A websocket frame is held to the same bound as an HTTP body.
        ws_max_size=settings.api.max_body_bytes,
    )
    uvicorn.Server(config).run()
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "serve",
        help="serve the GraphQL API (HTTP and websocket subscriptions)",
        description="The GraphQL API on /graphql (queries, websocket subscriptions, the GraphiQL "
        "IDE in a browser), with /healthz, /readyz, /metrics and /retirement-statement.csv.",
    )
    parser.add_argument("--host", default=None, help="bind address (default: api.host)")
    parser.add_argument("--port", type=int, default=None, help="port (default: api.port)")
    parser.set_defaults(handler=_serve)
