"""`recchain migrate`: the only way the schema changes outside tests."""

from __future__ import annotations

import argparse
import sys


def _migrate(args: argparse.Namespace) -> int:
    from db.migrate import upgrade
    from db.session import database_url
    from recchain.commands.failures import check_database

    url = database_url()
    check_database(url, migrated=False)
    upgrade(url, args.revision)
    print(f"database migrated to {args.revision}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "migrate",
        help="apply database migrations (Alembic)",
        description="Apply the Alembic migrations to the database named by DATABASE_URL (or "
        "the embedded PostgreSQL). Nothing else changes the schema.",
    )
    p.add_argument("--revision", default="heads", help="target revision (default: all heads)")
    p.set_defaults(handler=_migrate)
