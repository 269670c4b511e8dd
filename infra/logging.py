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

A line is bounded, and so is the time it takes: a message, an exception and each extra field
are clipped (`MAX_MESSAGE_CHARS`, `MAX_EXC_CHARS`, `MAX_FIELD_CHARS`) before the line is
scrubbed, and every pattern the scrubber uses matches in linear time. Text from clients (a
query, an argument, a submitted transaction) reaches log lines through error messages; a long
one must cost the event loop no more than a short one.
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
from itertools import islice
from types import MappingProxyType
from typing import Any, TextIO

from pydantic import SecretStr

from infra.config import Settings
from infra.progress import paused

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

# Longest message, exception text and extra string field a line carries (characters). A clipped
# text keeps its start and its end (an exception's type and message are at the end).
MAX_MESSAGE_CHARS = 8192
MAX_EXC_CHARS = 16384
MAX_FIELD_CHARS = 2048
# Items of a list or mapping field shown; the rest are counted.
MAX_FIELD_ITEMS = 100

_SENSITIVE_KEY = re.compile(
    r"pass(word)?|secret|token|api[_-]?key|authorization|cookie|credential|private[_-]?key",
    re.IGNORECASE,
)
# Every repetition below is bounded and possessive: an unbounded `[a-z0-9]*://` rescanned a long
# run of letters from every position in it (quadratic: a 100,000-character argument in an error
# took 14 s to scrub). Each match now looks at most ~550 characters ahead of where it starts.
_SCHEME_MAX = 32
_USER_MAX = 256
_PASSWORD_MAX = 256
# scheme://user:password@host -> scheme://user:***@host
_URL_PASSWORD = re.compile(
    rf"(?P<prefix>[a-zA-Z][a-zA-Z0-9+.-]{{0,{_SCHEME_MAX}}}+://[^/\s:@]{{0,{_USER_MAX}}}+:)"
    rf"[^@\s/]{{1,{_PASSWORD_MAX}}}+(?=@)"
)
# Authorization: Bearer abc / X-Api-Key: abc in echoed headers.
_HEADER_SECRET = re.compile(
    r"(?P<prefix>(authorization|x-api-key)\s{0,8}+[:=]\s{0,8}+(bearer\s{1,8}+)?)"
    r"[^\s,;\"']{1,512}+",
    re.IGNORECASE,
)
# How far a match of the patterns above can reach: a clip never cuts inside one.
_PATTERN_REACH = _SCHEME_MAX + _USER_MAX + _PASSWORD_MAX + 600


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
    """Removes secrets from rendered text, in time linear in its length."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first so a secret that contains another is replaced whole. Very short values
        # are skipped: replacing "a" everywhere would destroy the log and protect nothing.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        self.reach = max([_PATTERN_REACH, *(len(s) for s in self.secrets)])

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        if "://" in text:  # a plain substring test is far cheaper than the pattern
            text = _URL_PASSWORD.sub(lambda m: m.group("prefix") + REDACTED, text)
        return _HEADER_SECRET.sub(lambda m: m.group("prefix") + REDACTED, text)

    def _spans(self, text: str) -> Iterator[tuple[int, int]]:
        """Where in `text` something the scrubber replaces lies."""
        for secret in self.secrets:
            at = text.find(secret)
            while at >= 0:
                yield at, at + len(secret)
                at = text.find(secret, at + 1)
        for pattern in (_URL_PASSWORD, _HEADER_SECRET):
            for m in pattern.finditer(text):
                yield m.start(), m.end()

    def _cut(self, text: str, at: int, *, forward: bool) -> int:
        """A cut position near `at` outside every secret, so neither side keeps part of one."""
        low = max(0, at - self.reach)
        for start, end in self._spans(text[low : at + self.reach]):
            if low + start < at < low + end:
                return low + (end if forward else start)
        return at

    def clip(self, text: str, limit: int) -> str:
        """`text` if it fits in `limit` characters, else its start and end around a marker."""
        if len(text) <= limit:
            return text
        tail = limit // 4
        head_end = self._cut(text, limit - tail, forward=False)
        tail_start = max(head_end, self._cut(text, len(text) - tail, forward=True))
        cut = tail_start - head_end
        return f"{text[:head_end]}...[{cut} characters cut]...{text[tail_start:]}"


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


def _jsonable(value: Any, scrub: Scrubber, depth: int = 0) -> Any:
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, str):
        return scrub.clip(value, MAX_FIELD_CHARS)
    if depth >= 4:
        return scrub.clip(str(value), MAX_FIELD_CHARS)
    if isinstance(value, Mapping):
        out = {
            str(k): _jsonable(v, scrub, depth + 1)
            for k, v in islice(value.items(), MAX_FIELD_ITEMS)
        }
        if len(value) > MAX_FIELD_ITEMS:
            out["..."] = f"{len(value) - MAX_FIELD_ITEMS} more"
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = [_jsonable(v, scrub, depth + 1) for v in islice(value, MAX_FIELD_ITEMS)]
        if len(value) > MAX_FIELD_ITEMS:
            items.append(f"... {len(value) - MAX_FIELD_ITEMS} more")
        return items
    if isinstance(value, bytes):
        return scrub.clip("0x" + value[: MAX_FIELD_CHARS // 2].hex(), MAX_FIELD_CHARS)
    return scrub.clip(str(value), MAX_FIELD_CHARS)


def _fields(record: logging.LogRecord, scrub: Scrubber) -> dict[str, Any]:
    fields: dict[str, Any] = dict(_context.get())
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRS and not key.startswith("_"):
            fields[key] = value
    return {
        key: REDACTED if _SENSITIVE_KEY.search(key) else _jsonable(value, scrub)
        for key, value in fields.items()
    }


def _exception_text(
    formatter: logging.Formatter, record: logging.LogRecord, scrub: Scrubber
) -> str:
    # Formatter.format caches the rendered traceback on the record; do the same, clipped.
    if not record.exc_text and record.exc_info:
        record.exc_text = formatter.formatException(record.exc_info)
    return scrub.clip(record.exc_text or "", MAX_EXC_CHARS)


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
            "msg": self.scrub.clip(record.getMessage(), MAX_MESSAGE_CHARS),
        }
        for key, value in _fields(record, self.scrub).items():
            line.setdefault(key, value)
        if record.exc_info or record.exc_text:
            line["exc"] = _exception_text(self, record, self.scrub)
        return self.scrub(json.dumps(line, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """For terminals (`recchain dev`): the same fields, as key=value after the message."""

    def __init__(self, scrub: Scrubber | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.scrub = scrub or Scrubber()

    def format(self, record: logging.LogRecord) -> str:
        message = self.scrub.clip(record.getMessage(), MAX_MESSAGE_CHARS)
        text = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {message}"
        extra = " ".join(f"{k}={v}" for k, v in _fields(record, self.scrub).items())
        if extra:
            text = f"{text} {extra}"
        if record.exc_info or record.exc_text:
            text = f"{text}\n{_exception_text(self, record, self.scrub)}"
        if record.stack_info:
            text = f"{text}\n{self.scrub.clip(self.formatStack(record.stack_info), MAX_EXC_CHARS)}"
        return self.scrub(text)


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

    def emit(self, record: logging.LogRecord) -> None:
        # A progress bar drawn on the same terminal makes way, so the two never share a line.
        with paused(self.stream):
            super().emit(record)


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
    # Per-request lines from the HTTP client, and Alembic's plugin set-up on every command that
    # reads the migration scripts, would be noise at INFO.
    for name in ("httpx", "alembic.runtime.plugins"):
        logging.getLogger(name).setLevel(max(root.level, logging.WARNING))
    return handler
