"""`recchain index` (follow a live chain) and `recchain replay` (apply a recorded TSV)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from db.session import database_url, engine_scope
from recchain.config import get_settings

log = logging.getLogger("recchain.indexer")


def _replay(args: argparse.Namespace) -> int:
    from indexer.replay import replay_file

    settings = get_settings()
    path = Path(args.file)
    if not path.is_file():
        print(f"replay: no such file: {path}", file=sys.stderr)
        return 2

    async def run() -> int:
        async with engine_scope(database_url(settings), pool_size=2) as engine:
            stats = await replay_file(
                engine,
                settings,
                path,
                follow=args.follow,
                speed=args.speed,
                progress=not args.quiet,
                batch_size=args.batch,
                parse_workers=args.parse_workers,
                payload_format=args.payload_format,
            )
        summary: dict[str, object] = {
            "requests": stats.requests,
            "blocks": stats.blocks,
            "events": stats.events,
            "rejected": stats.rejected,
            "seconds": round(stats.seconds, 3),
        }
        if stats.held is not None:
            summary["held"] = stats.held
        print(json.dumps(summary), file=sys.stderr)
        return 3 if stats.held is not None else 0

    return asyncio.run(run())


def _index(args: argparse.Namespace) -> int:
    from indexer.run import run_indexer

    settings = get_settings()
    source = args.source or settings.indexer.source
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        settings.indexer.listen_host = host or settings.indexer.listen_host
        settings.indexer.listen_port = int(port)
    if args.url:
        settings.indexer.api_url = args.url
    return asyncio.run(run_indexer(settings, source, replay_file=args.file))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="apply a recorded observer TSV (id, time, path, payload)")
    p.add_argument("file", help="4-column TSV of observer requests (.tsv or .tsv.gz)")
    p.add_argument(
        "--payload-format",
        choices=["auto", "copy", "raw"],
        default="auto",
        help="payload column as COPY text or raw JSON (auto: COPY unless a line holds an escape "
        'COPY never writes, such as \\" or \\u)',
    )
    p.add_argument("--follow", action="store_true", help="pace the recording as a live chain")
    p.add_argument("--speed", type=float, default=1.0, help="time factor for --follow")
    p.add_argument("--batch", type=int, default=None, help="requests per transaction")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--parse-workers",
        type=int,
        default=0,
        help="processes that parse the next batch while one is written (catch-up only; with 0 "
        "a thread does, while the database works)",
    )
    p.set_defaults(handler=_replay)

    p = sub.add_parser("index", help="follow the chain and write the database")
    p.add_argument("--source", choices=["observer", "api", "replay"], default=None)
    p.add_argument("--listen", help="HOST:PORT of the event-observer server (observer source)")
    p.add_argument("--url", help="Stacks Blockchain API base URL (api source)")
    p.add_argument("--file", help="TSV to follow (replay source)")
    p.set_defaults(handler=_index)
