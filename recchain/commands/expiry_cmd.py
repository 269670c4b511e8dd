"""`recchain expiry`: the certificate expiry rules per market boundary (query 9 of docs/domain.md).

Rules are reference data that operators keep, not chain state; the API and the
`analytics.certificate_expiry` view apply them when they read, so a change takes effect at once
and never needs a reindex.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

MAX_MONTHS = 1200


def _connect() -> psycopg.Connection:
    import psycopg

    from db.session import database_url, to_libpq_url
    from recchain.commands.failures import check_database

    url = database_url()
    check_database(url)
    return psycopg.connect(to_libpq_url(url), autocommit=True)


def _list(args: argparse.Namespace) -> int:
    with _connect() as conn:
        rows = conn.execute(
            "SELECT market_boundary, months, reference FROM expiry_rules ORDER BY 1"
        ).fetchall()
    if args.json:
        out = [{"market_boundary": b, "months": m, "reference": r} for b, m, r in rows]
        print(json.dumps(out, indent=2))
    else:
        for boundary, months, reference in rows:
            print(f"{boundary}\t{months} months\t{reference or ''}")
    return 0


def _set(args: argparse.Namespace) -> int:
    boundary = args.boundary.strip()
    if not boundary:
        print("error: the market boundary is empty", file=sys.stderr)
        return 2
    if not 0 < args.months <= MAX_MONTHS:
        print(f"error: months must be between 1 and {MAX_MONTHS}", file=sys.stderr)
        return 2
    with _connect() as conn:
        conn.execute(
            "INSERT INTO expiry_rules (market_boundary, months, reference) VALUES (%s, %s, %s)"
            " ON CONFLICT (market_boundary) DO UPDATE SET months = EXCLUDED.months,"
            " reference = EXCLUDED.reference",
            (boundary, args.months, args.reference),
        )
    print(f"{boundary}: certificates expire {args.months} months after production", file=sys.stderr)
    return 0


def _remove(args: argparse.Namespace) -> int:
    with _connect() as conn:
        cur = conn.execute("DELETE FROM expiry_rules WHERE market_boundary = %s", (args.boundary,))
    if cur.rowcount == 0:
        print(f"error: no rule for {args.boundary!r}", file=sys.stderr)
        return 1
    print(f"{args.boundary}: certificates no longer expire by rule", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("expiry", help="certificate expiry rules per market boundary")
    cmds = p.add_subparsers(dest="expiry_command", metavar="ACTION")
    cmds.required = True
    ls = cmds.add_parser("list", help="show the rules")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(handler=_list)
    st = cmds.add_parser("set", help="add or change a boundary's rule")
    st.add_argument("boundary", help="market boundary, e.g. EU-AIB")
    st.add_argument("months", type=int, help="months after the end of the production period")
    st.add_argument("--reference", help="the regulation or registry rule it follows")
    st.set_defaults(handler=_set)
    rm = cmds.add_parser("remove", help="delete a boundary's rule (its certificates never expire)")
    rm.add_argument("boundary", help="market boundary whose rule is removed")
    rm.set_defaults(handler=_remove)
