"""What the CLI says when a command cannot do its work: one line, what went wrong and what to do.

Commands raise `CommandError` (or a subclass) for the failures they foresee, servers
`infra.listen.ListenError` for a port they cannot take; `explain` also
turns the library errors a user can cause (an unreachable or mistyped database URL, a database
that does not exist or is not migrated, a setting of the wrong type, a malformed TSV line) into
such a line. Anything else is a bug and keeps its traceback. Passwords never appear: URLs are
shown without them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Failure:
    message: str
    code: int = 1


class CommandError(Exception):
    """A foreseen failure of a command, with its one-line message and exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class DatabaseUnavailable(CommandError):
    """The database cannot be reached, does not exist, or its URL is not valid."""


class NotMigrated(CommandError):
    """The database's schema is not the one this version runs on."""


def shown_url(url: str) -> str:
    """`url` without its password, in the libpq spelling users write, for messages."""
    try:
        from sqlalchemy import make_url

        shown = make_url(url).render_as_string(hide_password=True)
    except Exception:
        shown = re.sub(r"(://[^/\s:@]*:)[^@\s/]+@", r"\1***@", url)
    return re.sub(r"^postgresql\+psycopg://", "postgresql://", shown)


def _server(url: str, error_text: str = "") -> str:
    """host:port of `url`, else of the server libpq names in its error text."""
    try:
        from sqlalchemy import make_url

        u = make_url(url) if url else None
    except Exception:
        u = None
    if u is not None and u.host:
        return f"{u.host}:{u.port or 5432}"
    named = re.search(r'server at "([^"]+)"(?: \([^)]*\))?, port (\d+)', error_text)
    if named:
        return f"{named.group(1)}:{named.group(2)}"
    socket = re.search(r'server on socket "([^"]+)"', error_text)
    if socket:
        return f"the socket {socket.group(1)}"
    return "the database server"


def _database_name(url: str) -> str:
    try:
        from sqlalchemy import make_url

        return str(make_url(url).database or "postgres")
    except Exception:
        return "?"


def connection_failure(url: str, exc: BaseException, setting: str = "DATABASE_URL") -> str:
    """One line for a failed connection to `url` (a psycopg or SQLAlchemy error)."""
    text = str(getattr(exc, "orig", None) or exc)
    where = _server(url, text)
    missing = re.search(r'database "([^"]+)" does not exist', text)
    if missing:
        return (
            f'database "{missing.group(1)}" does not exist on {where}: create it '
            f"(createdb {missing.group(1)}) or point {setting} at another one"
        )
    if "password authentication failed" in text or "no password supplied" in text:
        user = re.search(r'for user "([^"]+)"', text)
        who = f' for user "{user.group(1)}"' if user else ""
        return f"PostgreSQL at {where} refused the credentials{who}: check {setting}"
    if "Connection refused" in text:
        return (
            f"cannot connect to PostgreSQL at {where}: connection refused (is it running? "
            f"check {setting})"
        )
    if "resolve host" in text or "translate host name" in text or "Name or service" in text:
        return f"cannot connect to PostgreSQL: unknown host in {setting} ({shown_url(url)})"
    if "timeout expired" in text or "timed out" in text:
        return f"cannot connect to PostgreSQL at {where}: timed out (check {setting})"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    first = re.sub(r"^connection failed: ", "", first)
    return f"cannot connect to PostgreSQL at {where}: {first} (check {setting})"


def bad_url(value: str, reason: str, setting: str = "DATABASE_URL") -> str:
    return (
        f"{setting} is not a valid PostgreSQL URL ({reason}); expected "
        f"postgresql://USER:PASSWORD@HOST:PORT/DATABASE, got {shown_url(value)!r}"
    )


def check_database(url: str, *, migrated: bool = True, setting: str = "DATABASE_URL") -> None:
    """Connect once to `url` and, with `migrated`, check its schema is at every Alembic head.
    Raises `DatabaseUnavailable` or `NotMigrated` with the line to print."""
    import psycopg
    from sqlalchemy.exc import ArgumentError

    from db.session import to_libpq_url

    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        reason = f"the scheme {scheme!r} is not PostgreSQL's" if scheme else "not a URL"
        raise DatabaseUnavailable(bad_url(url, reason, setting))
    try:
        conninfo = to_libpq_url(url)
        conn = psycopg.connect(conninfo, connect_timeout=10, autocommit=True)
    except (ArgumentError, ValueError) as exc:
        raise DatabaseUnavailable(bad_url(url, str(exc) or "not a URL", setting)) from exc
    except psycopg.ProgrammingError as exc:  # libpq refused the connection string itself
        raise DatabaseUnavailable(bad_url(url, str(exc).strip(), setting)) from exc
    except psycopg.Error as exc:
        raise DatabaseUnavailable(connection_failure(url, exc, setting)) from exc
    if not migrated:
        conn.close()
        return
    with conn:
        row = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
        current = (
            {r[0] for r in conn.execute("SELECT version_num FROM alembic_version").fetchall()}
            if row and row[0]
            else set()
        )
    from db.migrate import head_revisions

    heads = head_revisions()
    if current == heads:
        return
    name = _database_name(url)
    if not current:
        raise NotMigrated(f'database "{name}" has no REC-Chain schema: run recchain migrate')
    from alembic.script import ScriptDirectory

    from db.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config(url))
    known = {rev.revision for rev in script.walk_revisions()}
    unknown = sorted(current - known)
    if unknown:
        raise NotMigrated(
            f'database "{name}" is at revision {", ".join(unknown)}, which this version of '
            "REC-Chain does not know (a newer version migrated it): upgrade REC-Chain"
        )
    raise NotMigrated(
        f'database "{name}" is not migrated to this version (at {", ".join(sorted(current))}, '
        f"needs {', '.join(sorted(heads))}): run recchain migrate"
    )


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def explain(exc: BaseException) -> Failure | None:
    """The one line for `exc`, or None when it is not a failure a user can cause (a bug)."""
    exc = _leaf(exc)
    from infra.listen import ListenError

    if isinstance(exc, CommandError):
        return Failure(exc.message, exc.code)
    if isinstance(exc, ListenError):
        return Failure(exc.message)
    if isinstance(exc, BrokenPipeError):
        return None
    message = _explain_library(exc)
    return None if message is None else Failure(message)


def _explain_library(exc: BaseException) -> str | None:
    import psycopg
    from pydantic import ValidationError
    from sqlalchemy import exc as sa_exc

    from db.embedded import EmbeddedPostgresUnavailable
    from db.leader import LeadershipLost
    from indexer.errors import PayloadError

    if isinstance(exc, LeadershipLost):
        return f"{exc}; another process may lead now (restart this one: it stands by)"

    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        return f"invalid setting: {problems} (see the settings table in README.md)"
    if isinstance(exc, EmbeddedPostgresUnavailable):
        return str(exc)
    if isinstance(exc, PayloadError):
        return str(exc)
    if isinstance(exc, sa_exc.ArgumentError | sa_exc.NoSuchModuleError):
        return f"DATABASE_URL is not a valid PostgreSQL URL: {exc}"
    orig: Any = getattr(exc, "orig", None)
    pg_error = orig if isinstance(orig, psycopg.Error) else exc
    if isinstance(pg_error, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedColumn):
        missing = pg_error.diag.message_primary
        return f"the database schema is missing parts ({missing}): run recchain migrate"
    if isinstance(pg_error, psycopg.OperationalError):
        return connection_failure("", pg_error)
    return None
