"""The 4-column observer request TSV (`id, receive_timestamp, event_path, payload`).

This is the stacks-blockchain-api `event_observer_requests` export format: PostgreSQL `COPY` text
format, so backslash escapes must be undone (`\\t`, `\\n`, `\\\\`, ...) and `\\N` is NULL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from indexer.errors import PayloadError

_ESCAPES = {
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
}
_ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)")


def _unescape_one(match: re.Match[str]) -> str:
    token = match.group(1)
    if token in _ESCAPES:
        return _ESCAPES[token]
    if token[0] == "x" and len(token) > 1:
        return chr(int(token[1:], 16))
    if token[0] in "01234567":
        return chr(int(token, 8))
    return token  # COPY: any other escaped character stands for itself


def copy_unescape(field: str) -> str:
    # Most payloads carry no backslash at all: skip the regex then (it dominates replay time).
    if "\\" not in field:
        return field
    return _ESCAPE_RE.sub(_unescape_one, field)


def copy_escape(field: str) -> str:
    """The inverse, for writing recordings (tests, bench)."""
    return (
        field.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


@dataclass(frozen=True, slots=True)
class Request:
    """One recorded observer request."""

    id: int
    received_at: str
    path: str
    payload: str
    line_no: int


def iter_requests(stream: TextIO) -> Iterator[Request]:
    for line_no, line in enumerate(stream, start=1):
        line = line.rstrip("\n")
        if line.endswith("\r"):
            line = line[:-1]
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) != 4:
            raise PayloadError(
                f"line {line_no}: expected 4 tab-separated columns, got {len(parts)}"
            )
        raw_id, ts, path, payload = parts
        try:
            req_id = int(raw_id)
        except ValueError:
            raise PayloadError(f"line {line_no}: id {raw_id[:40]!r} is not an integer") from None
        yield Request(
            req_id, copy_unescape(ts), copy_unescape(path), copy_unescape(payload), line_no
        )


def read_requests(path: Path) -> Iterator[Request]:
    with path.open("r", encoding="utf-8", newline="\n") as stream:
        yield from iter_requests(stream)


def count_lines(path: Path) -> int:
    """For the progress bar's ETA; a cheap byte scan."""
    n = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n


def write_requests(stream: TextIO, rows: list[tuple[int, str, str, str]]) -> None:
    for req_id, ts, path, payload in rows:
        stream.write(f"{req_id}\t{copy_escape(ts)}\t{copy_escape(path)}\t{copy_escape(payload)}\n")
