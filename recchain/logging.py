"""Logging for every role: one JSON object per line in production, readable lines in a terminal.

Call `configure_logging(settings)` once at process start. Correlation ids travel in context
variables, so any log line written while handling a request or a block carries them without
each call site passing them along:

    with log_context(request_id=rid):          # API / relay middleware
    with log_context(block_height=h, index_block_hash=ibh):   # indexer pipeline

Secrets never reach the output: every secret value in the settings (database passwords, relay
API keys) is replaced wherever it appears, passwords embedded in URLs are masked, and `extra`
fields whose names look like credentials are dropped to `"***"`. The scrubbing runs on the
final rendered line, so it also covers exception tracebacks and third-party messages.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TextIO

from pydantic import SecretStr

from recchain.config import Settings

REDACTED = "***"

# Context fields attached to every record written while they are bound.
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "recchain_log_context", default=_EMPTY
)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}

_SENSITIVE_KEY = re.compile(
    r"pass(word)?|secret|token|api[_-]?key|authorization|cookie|credential|private[_-]?key",
    re.IGNORECASE,
)
# scheme://user:password@host -> scheme://user:***@host
_URL_PASSWORD = re.compile(r"(?P<prefix>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^@\s/]+(?=@)")
# Authorization: Bearer abc / X-Api-Key: abc in echoed headers.
_HEADER_SECRET = re.compile(
    r"(?P<prefix>(authorization|x-api-key)\s*[:=]\s*(bearer\s+)?)[^\s,;\"']+", re.IGNORECASE
)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach `fields` (request_id, block_height, index_block_hash, ...) to nested log lines."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> Mapping[str, Any]:
    return _context.get()


class Scrubber:
    """Removes secrets from rendered text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first so a secret that contains another is replaced whole. Very short values
        # are skipped: replacing "a" everywhere would destroy the log and protect nothing.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        text = _URL_PASSWORD.sub(lambda m: m.group("prefix") + REDACTED, text)
        return _HEADER_SECRET.sub(lambda m: m.group("prefix") + REDACTED, text)


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret value the settings hold (for URLs: their passwords)."""
    values: list[str] = []

    def add(secret: SecretStr | None) -> None:
        if secret is None:
            return
        raw = secret.get_secret_value()
        if "://" not in raw:
            values.append(raw)
            return
        # For a URL only the password is secret; keeping host and database readable is what
        # makes a connection error diagnosable.
        values.extend(re.findall(r"://[^/\s:@]*:([^@\s/]+)@", raw))
        values.extend(re.findall(r"[?&]password=([^&\s]+)", raw))

    add(settings.database_url)
    add(settings.api.read_database_url)
    for key in settings.relay.api_keys:
        add(key)
    return values


def _jsonable(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = dict(_context.get())
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRS and not key.startswith("_"):
            fields[key] = value
    return {
        key: REDACTED if _SENSITIVE_KEY.search(key) else _jsonable(value)
        for key, value in fields.items()
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, context and extra fields, exc."""

    def __init__(self, scrub: Scrubber | None = None) -> None:
        super().__init__()
        self.scrub = scrub or Scrubber()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return self.scrub(json.dumps(line, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """For terminals (`recchain dev`): the same fields, as key=value after the message."""

    def __init__(self, scrub: Scrubber | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.scrub = scrub or Scrubber()

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        return self.scrub(f"{text} {extra}" if extra else text)


class _StderrHandler(logging.StreamHandler):
    """Writes to `sys.stderr` as it is when a record is emitted: a test harness or a daemon may
    replace (and close) the stream it was at set-up, and records logged at exit (the embedded
    PostgreSQL's clean-up) would then fail to print."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure_logging(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """Install the one root handler (idempotent: replaces handlers from a previous call)."""
    scrub = Scrubber(settings_secrets(settings))
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(JsonFormatter(scrub) if settings.log_json else TextFormatter(scrub))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # Servers and drivers that install their own handlers would print a second, unscrubbed
    # line: route them through the root handler instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic", "httpx"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # Per-request lines from the HTTP client would be noise at INFO.
    logging.getLogger("httpx").setLevel(max(root.level, logging.WARNING))
    return handler
