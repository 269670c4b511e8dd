"""`recchain webhooks`: register endpoints, inspect and re-trigger deliveries, run the sender.

The operator's view: every endpoint, whoever registered it (relay API-key holders manage their
own through the relay's `/v1/webhooks`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from infra.config import get_settings

EXAMPLES = """\
filters (repeat --filter; an event is sent when any matches):
  block                                   every new canonical block
  listing                                 every listing change
  'listing:{"status": "active", "price_lte": "5000000", "certificate_": {"facility_": {"country": "DE"}}}'
  '{"kind": "listing", "changes": ["created"], "where": {"currency": "STX"}}'
  'certificate:{"or": [{"owner": "SP..."}, {"transfers_": {"sender": "SP..."}}]}'
  'certificate:{"tokenId": 42}'   'certificate:{"facilityId": 7}'
  'retirement:{"beneficiaryName": "City of Oslo"}'
"""  # noqa: E501


def parse_filter(text: str) -> Any:
    """`KIND`, `KIND:WHERE-JSON` or a whole filter object as JSON."""
    text = text.strip()
    try:
        if text.startswith("{"):
            return json.loads(text)
        kind, sep, where = text.partition(":")
        return {"kind": kind.strip(), "where": json.loads(where) if sep else {}}
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None


def _run(work: Callable[[Any], Awaitable[Any]], *, write: bool = True) -> Any:
    from db.session import database_url, engine_scope
    from db.webhooks.store import WebhookError

    async def main() -> Any:
        async with engine_scope(database_url(), pool_size=1) as engine:
            if write:
                async with engine.begin() as conn:
                    return await work(conn)
            async with engine.connect() as conn:
                return await work(conn)

    try:
        return asyncio.run(main())
    except WebhookError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(1 if exc.code == "not_found" else 2) from None


def _print(value: Any, as_json: bool, lines: Callable[[Any], list[str]]) -> None:
    if as_json:
        print(json.dumps(value, indent=2, default=str))
    else:
        for line in lines(value):
            print(line)


def _endpoint_lines(e: dict[str, Any]) -> list[str]:
    filters = "; ".join(
        f["kind"]
        + (f" {json.dumps(f['where'])}" if f.get("where") else "")
        + (f" changes={','.join(f['changes'])}" if f.get("changes") else "")
        for f in e["filters"]
    )
    age = e["oldest_pending_s"]
    return [
        f"{e['id']}\t{e['status']}\t{e['delivery']}\t{e['url']}",
        f"\tfilters: {filters}",
        f"\tpending {e['pending']} (oldest {age if age is not None else '-'} s), dead {e['dead']},"
        f" last delivered {e['last_delivered_at'] or '-'}, owner {e['owner'] or 'operator'}",
    ]


def _add(args: argparse.Namespace) -> int:
    from db.webhooks import store

    settings = get_settings()

    async def work(conn: Any) -> Any:
        await store.check_destination(args.url, settings)
        return await store.add_endpoint(
            conn,
            url=args.url,
            filters=args.filter,
            settings=settings,
            delivery="final" if args.final else "tip",
            description=args.description,
        )

    endpoint = _run(work)
    _print(
        endpoint,
        args.json,
        lambda e: [
            *_endpoint_lines(e),
            f"signing secret (shown once, keep it): {e['secret']}",
        ],
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    from db.webhooks import store

    endpoints = _run(lambda conn: store.list_endpoints(conn, None), write=False)
    _print(endpoints, args.json, lambda es: [line for e in es for line in _endpoint_lines(e)])
    return 0


def _remove(args: argparse.Namespace) -> int:
    from db.webhooks import store

    _run(lambda conn: store.remove_endpoint(conn, args.id, None))
    print(f"endpoint {args.id} removed with its queue and history", file=sys.stderr)
    return 0


def _status(status: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        from db.webhooks import store

        _run(lambda conn: store.set_status(conn, args.id, None, status))
        print(f"endpoint {args.id} {status}", file=sys.stderr)
        return 0

    return handler


def _rotate(args: argparse.Namespace) -> int:
    from db.webhooks import store

    overlap = get_settings().webhooks.rotation_overlap_s if args.overlap is None else args.overlap
    out = _run(lambda conn: store.rotate_secret(conn, args.id, None, overlap))
    _print(
        out,
        args.json,
        lambda o: [
            f"new signing secret (shown once, keep it): {o['secret']}",
            f"the previous secret also signs until {o['previous_secret_until']}",
        ],
    )
    return 0


def _redeliver(args: argparse.Namespace) -> int:
    from db.webhooks import store

    count = _run(
        lambda conn: store.redeliver(
            conn,
            args.id,
            None,
            event_ids=args.event or None,
            dead=args.dead,
            from_seq=args.from_seq,
        )
    )
    print(f"{count} event(s) queued again", file=sys.stderr)
    return 0 if count else 1


def _deliveries(args: argparse.Namespace) -> int:
    from db.webhooks import store

    rows = _run(
        lambda conn: store.deliveries(
            conn,
            args.id,
            None,
            status=args.status,
            limit=args.limit,
            before_seq=args.before_seq,
        ),
        write=False,
    )
    _print(
        rows,
        args.json,
        lambda rs: [
            f"{r['seq']}\t{r['event_id']}\t{r['type']}\t{r['block_height']}\t{r['status']}"
            f"\tattempts {r['attempts']}\tlast {r['last_status'] or r['last_error'] or '-'}"
            for r in rs
        ],
    )
    return 0


def _attempts(args: argparse.Namespace) -> int:
    from db.webhooks import store

    event = _run(lambda conn: store.attempts(conn, args.id, None, args.event_id), write=False)
    _print(
        event,
        args.json,
        lambda e: [
            f"{e['seq']}\t{e['event_id']}\t{e['type']}\t{e['status']}",
            *(
                f"\t{a['attempt']}\t{a['started_at']}\t{a['duration_ms']} ms"
                f"\t{a['http_status'] or a['error']}"
                for a in e["attempts"]
            ),
        ],
    )
    return 0


def _send(args: argparse.Namespace) -> int:
    from db.session import database_url
    from recchain.commands.failures import check_database
    from writers.webhooks.service import send

    settings = get_settings()
    # Once running, the sender rides out outages; unreachable at the start is more likely a
    # wrong DATABASE_URL, which waiting would hide.
    check_database(database_url(settings))
    asyncio.run(send(settings, args.metrics_port))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("webhooks", help="webhook endpoints, their deliveries, and the sender")
    cmds = p.add_subparsers(dest="webhooks_command", metavar="ACTION")
    cmds.required = True

    add = cmds.add_parser(
        "add",
        help="register an endpoint (prints its signing secret once)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add.add_argument("url", help="http(s) URL the events are POSTed to")
    add.add_argument(
        "--filter",
        action="append",
        required=True,
        type=parse_filter,
        metavar="FILTER",
        help="KIND, KIND:WHERE-JSON or a filter object (repeatable)",
    )
    add.add_argument(
        "--final", action="store_true", help="deliver once blocks are final, not at the tip"
    )
    add.add_argument("--description", help="a note shown in listings")
    add.add_argument("--json", action="store_true", help="machine-readable output")
    add.set_defaults(handler=_add)

    ls = cmds.add_parser("list", help="endpoints with their queue and dead letters")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(handler=_list)

    rm = cmds.add_parser("remove", help="delete an endpoint with its queue and history")
    rm.add_argument("id", type=int, help="endpoint id (`recchain webhooks list`)")
    rm.set_defaults(handler=_remove)

    for name, status, text in (
        ("pause", "paused", "hold deliveries (events keep being queued)"),
        ("resume", "active", "resume deliveries"),
    ):
        c = cmds.add_parser(name, help=text)
        c.add_argument("id", type=int, help="endpoint id (`recchain webhooks list`)")
        c.set_defaults(handler=_status(status))

    rot = cmds.add_parser("rotate-secret", help="new signing secret; the old one overlaps")
    rot.add_argument("id", type=int, help="endpoint id (`recchain webhooks list`)")
    rot.add_argument(
        "--overlap",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long the previous secret also signs (default: webhooks.rotation_overlap_s)",
    )
    rot.add_argument("--json", action="store_true", help="machine-readable output")
    rot.set_defaults(handler=_rotate)

    red = cmds.add_parser("redeliver", help="queue events again (dead letters, ids, from a seq)")
    red.add_argument("id", type=int, help="endpoint id (`recchain webhooks list`)")
    red.add_argument("--event", action="append", metavar="EVENT_ID", help="repeatable")
    red.add_argument("--dead", action="store_true", help="every dead letter")
    red.add_argument("--from-seq", type=int, metavar="N", help="everything from sequence N on")
    red.set_defaults(handler=_redeliver)

    dl = cmds.add_parser("deliveries", help="an endpoint's events, newest first")
    dl.add_argument("id", type=int, help="endpoint id (`recchain webhooks list`)")
    dl.add_argument(
        "--status",
        choices=["pending", "delivered", "dead", "retracted"],
        help="only events in this state",
    )
    dl.add_argument("--limit", type=int, default=50, help="most events shown (1-1000)")
    dl.add_argument("--before-seq", type=int, metavar="N", help="page: events below sequence N")
    dl.add_argument("--json", action="store_true", help="machine-readable output")
    dl.set_defaults(handler=_deliveries)

    at = cmds.add_parser("attempts", help="one event: its payload and every attempt")
    at.add_argument("id", type=int, help="endpoint id (`recchain webhooks list`)")
    at.add_argument("event_id", help="the event id (Recchain-Event-Id)")
    at.add_argument("--json", action="store_true", help="machine-readable output")
    at.set_defaults(handler=_attempts)

    sd = cmds.add_parser("send", help="run the webhook sender until interrupted")
    sd.add_argument("--metrics-port", type=int, default=None, help="0: no metrics server")
    sd.set_defaults(handler=_send)
