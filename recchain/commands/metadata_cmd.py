"""`recchain metadata`: fetch one URI through the resolver, retry jobs, run workers."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys


def _fetch(args: argparse.Namespace) -> int:
    import asyncio

    from indexer.metadata.errors import MetadataError, ResolutionFailed
    from indexer.metadata.resolver import Resolver
    from infra.config import get_settings

    settings = get_settings()

    async def run() -> int:
        resolver = Resolver.create(settings.metadata, gateways=args.gateway or None)
        try:
            res = await resolver.resolve(args.uri)
        except MetadataError as exc:
            attempts = exc.attempts if isinstance(exc, ResolutionFailed) else [("-", exc)]
            if args.json:
                out = {
                    "ok": False,
                    "reason": exc.reason,
                    "attempts": [
                        {"source": s, "reason": e.reason, "error": e.message} for s, e in attempts
                    ],
                }
                print(json.dumps(out, indent=2))
            else:
                print(f"failed: {exc.reason}", file=sys.stderr)
                for source, err in attempts:
                    print(f"  {source}: {err.reason}: {err.message}", file=sys.stderr)
            return 1
        finally:
            await resolver.aclose()
        if args.json:
            print(
                json.dumps(
                    {
                        "ok": True,
                        "cid": res.cid,
                        "resolved_by": res.resolved_by,
                        "raw_size": res.raw_size,
                        "document": res.document,
                    },
                    indent=2,
                )
            )
        else:
            print(f"# {res.cid} via {res.resolved_by} ({res.raw_size} bytes)", file=sys.stderr)
            print(json.dumps(res.document, indent=2, ensure_ascii=False))
        return 0

    return asyncio.run(run())


def _retry(args: argparse.Namespace) -> int:
    import asyncio

    from db.session import database_url, engine_scope, session_factory
    from indexer.metadata.queue import retry
    from recchain.commands.failures import check_database

    if args.job_id is None and not args.all_failed:
        print("give a JOB_ID or --all-failed", file=sys.stderr)
        return 2
    check_database(database_url())

    async def run() -> int:
        async with (
            engine_scope(database_url()) as engine,
            session_factory(engine)() as session,
            session.begin(),
        ):
            n = await retry(session, job_id=args.job_id, all_failed=args.all_failed)
        print(f"{n} job(s) queued again", file=sys.stderr)
        return 0 if n or args.all_failed else 1

    return asyncio.run(run())


def _work(args: argparse.Namespace) -> int:
    import asyncio

    from db.session import database_url
    from indexer.metadata.worker import run_workers
    from infra.config import get_settings
    from recchain.commands.failures import check_database

    settings = get_settings()
    n = args.workers or settings.metadata.workers
    check_database(database_url(settings))

    async def run() -> int:
        import logging

        from db.outage import Outage
        from db.session import create_engine
        from indexer.metadata import metrics
        from indexer.metadata.status import status_app
        from infra.status import serving

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        url = database_url(settings)
        outage = Outage(
            logging.getLogger("indexer.metadata.worker"),
            on_change=lambda up: metrics.DATABASE_UP.set(1 if up else 0),
        )
        # Readiness asks the database on a connection of its own, beside the workers' pool.
        probe = create_engine(url, pool_size=1, max_overflow=0, connect_args={"connect_timeout": 2})
        host, port = settings.metadata.metrics_host, settings.metadata.metrics_port
        try:
            async with serving(status_app(probe, outage), host, port, settings.http, "metrics"):
                print(f"{n} metadata worker(s) running", file=sys.stderr)
                await run_workers(settings, n, stop, outage=outage)
        finally:
            await probe.dispose()
        return 0

    return asyncio.run(run())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "metadata",
        help="token metadata: fetch, retry, run workers",
        description="SIP-016 token metadata from IPFS, verified against its CID.",
    )
    msub = p.add_subparsers(dest="metadata_command", metavar="SUBCOMMAND")
    msub.required = True

    f = msub.add_parser("fetch", help="resolve and verify one URI, print the document")
    f.add_argument("uri", help="token URI: ipfs://CID[/path] (or https:// when allowed)")
    f.add_argument(
        "--gateway", action="append", help="trustless gateway URL (repeatable; replaces config)"
    )
    f.add_argument("--json", action="store_true", help="machine-readable output")
    f.set_defaults(handler=_fetch)

    r = msub.add_parser("retry", help="queue failed jobs again now")
    r.add_argument("job_id", nargs="?", type=int, metavar="JOB_ID", help="the job to queue again")
    r.add_argument("--all-failed", action="store_true", help="every failed and permanent job")
    r.set_defaults(handler=_retry)

    w = msub.add_parser("work", help="run metadata workers until interrupted")
    w.add_argument(
        "--workers", type=int, default=0, help="worker loops (default: metadata.workers)"
    )
    w.set_defaults(handler=_work)
