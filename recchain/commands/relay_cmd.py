"""`recchain relay`: accept signed transactions over HTTP and broadcast them to a node."""

from __future__ import annotations

import argparse
import logging


def _relay(args: argparse.Namespace) -> int:
    import asyncio

    from db.session import database_url
    from infra.config import get_settings
    from infra.listen import Listener, check_free
    from recchain.commands.failures import check_database
    from writers.service import print_ready, serve

    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(message)s")
    check_database(database_url(settings))
    port = settings.relay.port if args.port is None else args.port
    host = args.host or settings.relay.host
    check_free(
        [
            Listener(
                "the relay",
                host,
                port,
                "relay.port",
                hint="--port PORT or RECCHAIN_RELAY__PORT=PORT",
                host_setting="relay.host",
            )
        ]
    )
    asyncio.run(
        serve(
            settings,
            host,
            port,
            args.node_url or settings.relay.node_url,
            on_ready=print_ready,
        )
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "relay",
        help="relay signed transactions to a Stacks node (writer)",
        description="Accept signed transactions over HTTP (/v1/transactions), check them, keep "
        "them in a durable outbox and broadcast them to the node. /metrics and /healthz are "
        "served on the same port.",
    )
    p.add_argument("--host", default=None, help="listen address (default: relay.host)")
    p.add_argument("--port", type=int, default=None, help="listen port; 0 picks a free one")
    p.add_argument("--node-url", default=None, help="stacks-node RPC URL (default: relay.node_url)")
    p.set_defaults(handler=_relay)
