"""The 4-column observer request TSV (`id, receive_timestamp, event_path, payload`).

This is the stacks-blockchain-api `event_observer_requests` export format: PostgreSQL `COPY` text
format, so backslash escapes must be undone (`\\t`, `\\n`, `\\\\`, ...) and `\\N` is NULL. Some
published files hold the payload column as raw JSON instead (written with a plain `join('\\t')`,
read back with `split('\\t')`): their backslashes are JSON's own (`\\"`, `\\u0000`). COPY never
writes a backslash followed by anything but `\\ b f n r t v`, so a payload holding any other
escape is raw JSON (`payload_format="auto"`, the default), and from that line on the whole file
is read as raw. A raw file whose only escapes are `\\\\` and `\\n`-like ones cannot be told apart
from COPY text: name its format (`recchain replay --payload-format raw`).

Files starting with the gzip magic are read through gzip: the public archives are published
gzipped. They are inflated by ISA-L (`isal`, about three times zlib's speed) on a thread of its
own, which runs without the GIL beside the parsing: on a mostly-foreign archive, inflating is
most of what a replay does.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from gzip import BadGzipFile
from pathlib import Path
from typing import BinaryIO, Literal, TextIO, cast

from isal import igzip_threaded, isal_zlib

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


PayloadFormat = Literal["auto", "copy", "raw"]
PAYLOAD_FORMATS: tuple[PayloadFormat, ...] = ("auto", "copy", "raw")
# A backslash followed by anything COPY TO does not write (it writes `\\\\` and `\\b \\f \\n \\r
# \\t \\v` only; COPY FROM also reads octal and `\\x` escapes, which JSON never holds).
_NOT_COPY = re.compile(r"(?<!\\)(?:\\\\)*\\[^\\bfnrtv0-7x]")


def _is_raw_json(field: str) -> bool:
    # Runs of backslashes pair up as `\\\\`; only what follows an odd one is an escape.
    return _NOT_COPY.search(field) is not None


def iter_requests(stream: TextIO, payload_format: PayloadFormat = "auto") -> Iterator[Request]:
    """Requests in file order; `payload_format` says how the payload column is written."""
    if payload_format not in PAYLOAD_FORMATS:
        raise ValueError(f"payload_format must be one of {PAYLOAD_FORMATS}")
    raw = payload_format == "raw"
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
        if not raw and payload_format == "auto" and "\\" in payload:
            raw = _is_raw_json(payload)
        yield Request(
            req_id,
            copy_unescape(ts),
            copy_unescape(path),
            payload if raw else copy_unescape(payload),
            line_no,
        )


def is_gzip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == b"\x1f\x8b"


# What inflating a cut-short or damaged gzip stream raises (isal's stubs declare its error class
# as an instance, hence the cast).
_CORRUPT_GZIP: tuple[type[BaseException], ...] = (
    EOFError,
    BadGzipFile,
    cast("type[Exception]", isal_zlib.error),
)


def open_binary(path: Path) -> BinaryIO:
    """The file's bytes, inflated when it is gzipped (a multi-member file reads whole, as with
    zcat). Read in blocks of 1 MiB: smaller reads cost a call per few lines of a real archive."""
    if is_gzip(path):
        return igzip_threaded.open(path, "rb", threads=1, block_size=1 << 20)
    return io.BufferedReader(io.FileIO(path, "rb"), buffer_size=1 << 20)


def open_text(path: Path) -> TextIO:
    """The file as text, through gzip when it is gzipped."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8", newline="\n")


def read_requests(path: Path, payload_format: PayloadFormat = "auto") -> Iterator[Request]:
    with open_text(path) as stream:
        yield from iter_requests(stream, payload_format)


def check_file(path: Path) -> int:
    """Every line of `path` (gzipped or not) has the 4 columns and an integer id: raises
    `PayloadError` naming the first line that does not (or saying that the gzip stream is cut
    short or corrupt); returns the number of requests. A byte scan that unescapes nothing, so a
    whole recording is checked before any of it is written. (Tabs inside a payload are escaped
    in both formats: COPY writes `\\t`, JSON `\\t` too.)"""
    n = line_no = 0
    try:
        with open_binary(path) as f:
            for line_no, raw in enumerate(f, start=1):
                n += _check_line(raw, line_no)
    except _CORRUPT_GZIP as exc:
        raise PayloadError(f"after line {line_no}: the gzip stream is corrupt: {exc}") from None
    return n


def _check_line(raw: bytes, line_no: int) -> bool:
    """False for an empty line (skipped, as the reader does)."""
    line = raw.rstrip(b"\n")
    if line.endswith(b"\r"):
        line = line[:-1]
    if not line:
        return False
    columns = line.count(b"\t") + 1
    if columns != 4:
        raise PayloadError(f"line {line_no}: expected 4 tab-separated columns, got {columns}")
    raw_id = line[: line.index(b"\t")]
    try:
        int(raw_id)
    except ValueError:
        shown = raw_id[:40].decode("utf-8", "replace")
        raise PayloadError(f"line {line_no}: id {shown!r} is not an integer") from None
    return True


def count_lines(path: Path) -> int | None:
    """For the progress bar's ETA; a cheap byte scan. None for a gzipped file, which would
    have to be decompressed twice."""
    if is_gzip(path):
        return None
    n = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n


def write_requests(stream: TextIO, rows: list[tuple[int, str, str, str]]) -> None:
    for req_id, ts, path, payload in rows:
        stream.write(f"{req_id}\t{copy_escape(ts)}\t{copy_escape(path)}\t{copy_escape(payload)}\n")
