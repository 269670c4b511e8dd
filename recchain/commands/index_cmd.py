"""`recchain index` (follow a live chain) and `recchain replay` (apply a recorded TSV)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from recchain.commands.failures import CommandError

if TYPE_CHECKING:
    from db.leader import Leadership
    from indexer.replay import ReplayStats

_T = TypeVar("_T")


class _Background(Generic[_T]):
    """`fn(*args)` on a daemon thread: the command may fail for another reason meanwhile and
    must not wait for it then."""

    def __init__(self, fn: Callable[..., _T], *args: object) -> None:
        self._value: _T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., _T], args: tuple[object, ...]) -> None:
        try:
            self._value = fn(*args)
        except BaseException as exc:  # re-raised in the caller's thread by result()
            self._error = exc

    def result(self) -> _T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def _replay(args: argparse.Namespace) -> int:
    from indexer.tsv import check_file

    path = Path(args.file)
    if not path.is_file():
        raise CommandError(f"replay: no such file: {path}", 2)
    # The whole file is checked before anything is written: a malformed line must not leave half
    # a recording indexed. Inflating a gzipped archive (most of the check) runs without the GIL,
    # so the check goes on while the command imports the indexer, which would otherwise wait.
    check = _Background(check_file, path)

    import asyncio

    from db.session import database_url, engine_scope
    from indexer.errors import PayloadError
    from indexer.replay import replay_file
    from infra.config import get_settings
    from recchain.commands.failures import check_database

    settings = get_settings()
    try:
        requests_in_file = check.result()
    except PayloadError as exc:
        raise CommandError(f"replay: {path}: {exc}; nothing was indexed", 2) from exc
    except UnicodeDecodeError as exc:
        raise CommandError(f"replay: {path} is not UTF-8 text: {exc}", 2) from exc
    url = database_url(settings)
    check_database(url)

    from db.leader import LeaderBusy, current_holder, leadership

    async def run() -> int:
        # The replay writes as the indexer does, so it must be the only writer: it takes the
        # leader lock (a live indexer holding it would interleave its blocks with the file's),
        # and its writes carry the fencing token like the leader's.
        try:
            # No watcher query on the lock session while the replay runs (its fence is
            # checked in every write transaction, which is what keeps a successor safe), so
            # nothing is in flight on that session when the replay ends and unlocks it.
            async with leadership(url, "indexer", wait=False, check_interval=86_400.0) as held:
                stats = await replay_as(held)
        except LeaderBusy:
            holder = await current_holder(url, "indexer")
            raise CommandError(
                f"replay: an indexer is writing to this database ({holder or 'another process'}"
                " holds the leader lock); stop it first, then replay",
                2,
            ) from None
        return report(stats)  # after the lock's own log lines, so the summary is the last line

    async def replay_as(held: Leadership) -> ReplayStats:
        async with engine_scope(url, pool_size=2) as engine:
            return await replay_file(
                engine,
                settings,
                path,
                follow=args.follow,
                speed=args.speed,
                progress=not args.quiet,
                batch_size=args.batch,
                parse_workers=args.parse_workers,
                payload_format=args.payload_format,
                requests_in_file=requests_in_file,
                fence=held,
                **(
                    {}
                    if args.defer_indexes_from is None
                    else {"defer_indexes_from": args.defer_indexes_from}
                ),
            )

    def report(stats: ReplayStats) -> int:
        if stats.skipped:
            print(
                f"replay: skipped {stats.skipped} request(s) already indexed by an earlier run "
                f"(at or below its checkpoint); {stats.requests - stats.skipped} applied now",
                file=sys.stderr,
            )
        for request_id, event_path, reason in stats.rejections:
            print(
                f"replay: request {request_id} ({event_path}) rejected: {reason}", file=sys.stderr
            )
        if stats.rejected > len(stats.rejections):
            print(
                f"replay: ... and {stats.rejected - len(stats.rejections)} more rejected "
                "(each is kept in raw_requests with its reason)",
                file=sys.stderr,
            )
        if stats.held is not None:
            print(f"replay: stopped at a held request: {stats.held}", file=sys.stderr)
        summary: dict[str, object] = {
            "requests": stats.requests,
            "blocks": stats.blocks,
            "events": stats.events,
            "rejected": stats.rejected,
            "skipped": stats.skipped,
            "seconds": round(stats.seconds, 3),
        }
        if stats.held is not None:
            summary["held"] = stats.held
        print(json.dumps(summary), file=sys.stderr)
        return 3 if stats.held is not None else 0

    return asyncio.run(run())


def _index(args: argparse.Namespace) -> int:
    import asyncio

    from db.session import database_url
    from indexer.run import run_indexer
    from infra.config import get_settings
    from infra.listen import Listener, check_free
    from recchain.commands.failures import check_database

    settings = get_settings()
    source = args.source or settings.indexer.source
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        try:
            settings.indexer.listen_port = int(port)
        except ValueError:
            raise CommandError(f"--listen {args.listen!r}: expected HOST:PORT", 2) from None
        settings.indexer.listen_host = host or settings.indexer.listen_host
    if args.url:
        settings.indexer.api_url = args.url
    check_database(database_url(settings))
    # The observer port is checked by indexer.run: every process listens, leader or standby.
    check_free(
        [
            Listener(
                "the indexer's metrics",
                settings.indexer.metrics_host,
                settings.indexer.metrics_port,
                "indexer.metrics_port",
                host_setting="indexer.metrics_host",
            )
        ]
    )
    return asyncio.run(run_indexer(settings, source, replay_file=args.file))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="apply a recorded observer TSV (id, time, path, payload)",
        description="Index a 4-column observer TSV (id, receive_timestamp, event_path, payload), "
        "the stacks-blockchain-api event_observer_requests export, plain or gzipped. The file is "
        "checked whole first; a run resumes after the requests an earlier run committed.",
    )
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
    p.add_argument(
        "--defer-indexes-from",
        type=int,
        default=None,
        metavar="N",
        help="into an empty database, a catch-up replay of a file of at least N requests "
        "builds the secondary indexes once at its end instead of row by row, from its first "
        "batch with watched events on (default 2000; 0: always)",
    )
    p.set_defaults(handler=_replay)

    p = sub.add_parser(
        "index",
        help="follow the chain and write the database",
        description="Follow the chain: as the stacks-node's event observer, or a Stacks "
        "Blockchain API, or a TSV paced as live. One process leads (the others wait as standbys).",
    )
    p.add_argument(
        "--source",
        choices=["observer", "api", "replay"],
        default=None,
        help="where blocks come from (default: indexer.source)",
    )
    p.add_argument(
        "--listen",
        help="HOST:PORT of the event-observer server (observer source; default: "
        "indexer.listen_host:indexer.listen_port)",
    )
    p.add_argument(
        "--url", help="Stacks Blockchain API base URL (api source; default: indexer.api_url)"
    )
    p.add_argument("--file", help="TSV to follow (replay source)")
    p.set_defaults(handler=_index)
