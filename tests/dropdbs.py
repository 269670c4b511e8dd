"""Dropping a test run's last databases after the run, in a detached process.

A run's databases are dropped behind its tests (tests/conftest.py, `Dropper`); those still
waiting when it ends are passed here on standard input (`{"url": ..., "names": [...]}`) and
dropped by a process in its own session, so the run exits at once and neither it nor a Ctrl-C
to its process group stops the drops. What could not be dropped after a few tries is written to
`recchain-dropdbs.log` in the temporary directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from infra.config import PROJECT_ROOT

LOG = Path(tempfile.gettempdir()) / "recchain-dropdbs.log"
TRIES = 3


def hand_over_drops(url: str, names: list[str]) -> None:
    """Start the detached process dropping `names` on the server of `url`."""
    if not names:
        return
    with LOG.open("a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.dropdbs"],
            cwd=PROJECT_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"url": url, "names": names}).encode())
    proc.stdin.close()


def drop_database(url: str, name: str) -> None:
    """Drop one database of the server of `url` (already gone is fine), ending its sessions."""
    from db.session import to_libpq_url

    with psycopg.connect(to_libpq_url(url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop_all(url: str, names: list[str]) -> list[str]:
    """Drop each database; the names still there after TRIES tries."""
    left = list(names)
    for attempt in range(TRIES):
        failed: list[str] = []
        for name in left:
            try:
                drop_database(url, name)
            except psycopg.Error:
                failed.append(name)
        if not failed:
            return []
        left = failed
        time.sleep(2**attempt)
    return left


def main() -> int:
    order = json.loads(sys.stdin.read())
    left = drop_all(order["url"], order["names"])
    for name in left:
        print(f"{time.strftime('%F %T')} could not drop test database {name}", file=sys.stderr)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
