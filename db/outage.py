"""One log line per change of the database's reachability, and the backoff while it is away.

A role's background loops (the relay's broadcaster and status listener, the metadata workers
and their queue sampler) and its request handlers share one `Outage` per process. The first
failure that means "the database cannot be reached" logs one WARNING, without a traceback;
while it stays away nothing more is logged and each loop waits with exponential backoff
(jittered, capped); the first success afterwards logs one INFO line with how long it lasted.
Any other exception is a bug, logged with its traceback, but at most once per distinct error
per `repeat_s`, so a failure that repeats every step cannot flood the log either.

`Outage.down` is what readiness probes report; `on_change(up)` (a metric's setter) is called
at each change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

import psycopg
from sqlalchemy import exc as sa_exc

# Server answers that it is going away or not there yet: admin_shutdown (also
# pg_terminate_backend), crash_shutdown, cannot_connect_now ("starting up / shutting down").
# Class 08 (connection exceptions) is unavailability too; anything else with a SQLSTATE (a
# statement timeout, a deadlock, a constraint) is about the statement, not the server.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def is_unavailable(exc: BaseException) -> bool:
    """Does `exc` (or what caused it) mean the database cannot be reached right now?"""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sa_exc.TimeoutError):  # no pooled connection became free
            return True
        if isinstance(current, psycopg.Error):
            state = current.sqlstate
            if state is None:  # failed to connect, or the connection broke: no server answer
                return isinstance(current, psycopg.OperationalError | psycopg.InterfaceError)
            return state.startswith("08") or state in _UNAVAILABLE_SQLSTATES
        if isinstance(current, ConnectionError | TimeoutError | OSError):
            return True
        current = current.__cause__ or current.__context__
    return False


class Outage:
    """Shared per process: `failed(exc)` after a database error, `ok()` after a success."""

    def __init__(
        self,
        log: logging.Logger,
        what: str = "database",
        *,
        initial_s: float = 1.0,
        max_s: float = 10.0,
        repeat_s: float = 600.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.log = log
        self.on_change = on_change
        self.what = what
        self.initial_s = initial_s
        self.max_s = max_s
        self.repeat_s = repeat_s
        self.down = False
        self.since: float | None = None
        self.failures = 0
        self.last_error = ""
        self._bugs: dict[str, float] = {}

    def failed(self, exc: BaseException, context: str = "") -> float:
        """Record a failure; returns how long the caller should wait before trying again."""
        if is_unavailable(exc):
            self.last_error = f"{type(exc).__name__}: {_first_line(exc)}"
            if not self.down:
                self.down, self.since, self.failures = True, time.monotonic(), 0
                self.log.warning(
                    "%s unreachable (%s); retrying with backoff up to %.0f s",
                    self.what,
                    self.last_error,
                    self.max_s,
                )
                if self.on_change is not None:
                    self.on_change(False)
            self.failures += 1
            return self.delay()
        key = f"{context}{type(exc).__name__}: {exc}"
        now = time.monotonic()
        if now - self._bugs.get(key, -self.repeat_s) >= self.repeat_s:
            self._bugs[key] = now
            if len(self._bugs) > 1000:  # bounded however many distinct errors occur
                self._bugs.pop(next(iter(self._bugs)))
            self.log.error(
                "%s failed (logged once per %.0f s while it repeats)",
                context or "database work",
                self.repeat_s,
                exc_info=exc,
            )
        return self.initial_s

    def ok(self) -> None:
        """Record a success: ends an outage (one INFO line)."""
        if self.down:
            lasted = time.monotonic() - (self.since or time.monotonic())
            self.down, self.since = False, None
            self.log.info(
                "%s reachable again after %.1f s (%d failed attempts)",
                self.what,
                lasted,
                self.failures,
            )
            self.failures = 0
            if self.on_change is not None:
                self.on_change(True)

    def delay(self) -> float:
        """The current backoff: doubling with the failures of this outage, jittered, capped."""
        base = min(self.max_s, self.initial_s * 2 ** min(self.failures - 1, 30))
        return base * random.uniform(0.8, 1.0)

    async def pause(self, seconds: float, stop: asyncio.Event | None = None) -> None:
        """Sleep `seconds`, or less if `stop` is set meanwhile."""
        if stop is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""
