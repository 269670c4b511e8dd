"""A status line (a progress bar) that never shares a line with a log record.

On a terminal the line is redrawn in place; a log record written while it is shown first clears
it and then draws it again below the record (`infra.logging`'s handler calls `paused`). On
anything else (a pipe, a file, CI) nothing is redrawn: the line is written whole, with its own
newline, at most every `plain_interval` seconds, so a log file holds complete lines only.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

_CLEAR = "\r\033[K"
_lock = threading.RLock()
_active: StatusLine | None = None


class StatusLine:
    def __init__(
        self, stream: TextIO | None = None, *, enabled: bool = True, plain_interval: float = 10.0
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.plain_interval = plain_interval
        try:
            self.tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.tty = False
        self.text = ""
        self._last_plain = float("-inf")
        self._written = ""

    def show(self, text: str) -> None:
        global _active
        if not self.enabled:
            return
        with _lock:
            self.text = text
            if self.tty:
                _active = self
                self.stream.write(_CLEAR + text)
                self.stream.flush()
                return
            now = time.monotonic()
            if now - self._last_plain >= self.plain_interval:
                self._last_plain = now
                self._written = text
                self.stream.write(text + "\n")
                self.stream.flush()

    def close(self, text: str | None = None) -> None:
        """End the line: its last state (or `text`) stays, followed by a newline."""
        global _active
        if not self.enabled:
            return
        with _lock:
            final = self.text if text is None else text
            if self.tty:
                self.stream.write(_CLEAR + final + "\n")
            elif final and final != self._written:
                self.stream.write(final + "\n")
            self.stream.flush()
            if _active is self:
                _active = None
            self.text = ""


@contextmanager
def paused(stream: TextIO) -> Iterator[None]:
    """Around writing a log record to `stream`: the active status line is cleared first and
    drawn again after, so the record gets a line of its own."""
    with _lock:
        line = _active
        if line is None or line.stream is not stream:
            yield
            return
        stream.write(_CLEAR)
        try:
            yield
        finally:
            stream.write(line.text)
            stream.flush()
