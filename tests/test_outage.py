"""db/outage.py: which errors mean "the database is away", and one log line per change.
(tests/test_db_outage.py drives the real commands against a server that goes away.)"""

from __future__ import annotations

import logging

import psycopg
import pytest
from sqlalchemy import exc as sa_exc

from db.outage import Outage, is_unavailable


def _wrapped(orig: BaseException) -> sa_exc.DBAPIError:
    try:
        raise sa_exc.OperationalError("SELECT 1", {}, orig) from orig  # type: ignore[arg-type]
    except sa_exc.DBAPIError as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "away"),
    [
        (psycopg.OperationalError("connection refused"), True),
        (psycopg.InterfaceError("the connection is closed"), True),
        (psycopg.errors.AdminShutdown("terminating connection"), True),
        (psycopg.errors.CannotConnectNow("the database system is starting up"), True),
        (ConnectionRefusedError(111, "refused"), True),
        (TimeoutError(), True),
        (_wrapped(psycopg.OperationalError("server closed the connection")), True),
        (_wrapped(psycopg.errors.QueryCanceled("statement timeout")), False),
        (_wrapped(psycopg.errors.DeadlockDetected("deadlock")), False),
        (psycopg.errors.UniqueViolation("duplicate key"), False),
        (ValueError("a bug"), False),
    ],
)
def test_what_counts_as_the_database_being_away(error: BaseException, away: bool) -> None:
    assert is_unavailable(error) is away


def test_one_line_per_change_and_one_traceback_per_repeated_bug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    changes: list[bool] = []
    outage = Outage(logging.getLogger("test.outage"), on_change=changes.append, max_s=4.0)
    with caplog.at_level(logging.INFO, "test.outage"):
        delays = [outage.failed(psycopg.OperationalError("refused")) for _ in range(50)]
        assert outage.down
        outage.ok()
        outage.ok()
        for _ in range(20):
            outage.failed(ValueError("the same bug"), "step")
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in lines] == ["WARNING", "INFO", "ERROR"], lines
    assert "database unreachable (OperationalError: refused)" in lines[0][1]
    assert "database reachable again" in lines[1][1] and "50 failed attempts" in lines[1][1]
    assert caplog.records[2].exc_info is not None  # a bug keeps its traceback, once
    assert changes == [False, True]
    # Backoff: from the initial second, doubling (jittered) up to the cap.
    assert delays[0] <= 1.0 and max(delays) <= 4.0 and delays[-1] >= 4.0 * 0.8
