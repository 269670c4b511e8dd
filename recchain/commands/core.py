"""`recchain migrate`: the only way the schema changes outside tests."""

from __future__ import annotations

import argparse
import sys

from db.migrate import upgrade
from db.session import database_url


def _migrate(args: argparse.Namespace) -> int:
    url = database_url()
    upgrade(url, args.revision)
    print(f"database migrated to {args.revision}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("migrate", help="apply database migrations (Alembic)")
    p.add_argument("--revision", default="heads", help="target revision (default: all heads)")
    p.set_defaults(handler=_migrate)
