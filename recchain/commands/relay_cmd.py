"""`recchain relay`: accept signed transactions over HTTP and broadcast them to a node."""

from __future__ import annotations

import argparse
import asyncio
import logging

from recchain.config import get_settings


def _relay(args: argparse.Namespace) -> int:
    from writers.service import print_ready, serve

    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(message)s")
    asyncio.run(
        serve(
            settings,
            args.host or settings.relay.host,
            settings.relay.port if args.port is None else args.port,
            args.node_url or settings.relay.node_url,
            on_ready=print_ready,
        )
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("relay", help="relay signed transactions to a Stacks node (writer)")
    p.add_argument("--host", default=None, help="listen address (default: relay.host)")
    p.add_argument("--port", type=int, default=None, help="listen port; 0 picks a free one")
    p.add_argument("--node-url", default=None, help="stacks-node RPC URL (default: relay.node_url)")
    p.set_defaults(handler=_relay)
