"""Hostile requests against a real `recchain serve` process on loopback: each is refused or
answered with a client error, and the process keeps answering `/healthz` while it runs.

The attacks and the probe are the ones `python -m ops.bench.attacks` reports figures for; here
only their outcome and a generous responsiveness bound are asserted (a stalled event loop
misses it by many seconds; a loaded 2-core machine does not)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.bench import attacks
from recchain.config import PROJECT_ROOT

# /healthz must answer within this while an attack runs.
RESPONSIVE_S = 3.0


@pytest.fixture
def api_process(db_url: str, tmp_path: Path) -> Iterator[attacks.Server]:
    server = attacks.start(
        "api",
        ["serve", "--host", "127.0.0.1"],
        db_url,
        PROJECT_ROOT,
        tmp_path,
        {"RECCHAIN_API__RATE_LIMIT_PER_MINUTE": "600"},
    )
    try:
        yield server
    finally:
        server.stop()


async def test_a_long_argument_in_a_logged_error_neither_stalls_nor_floods(
    api_process: attacks.Server,
) -> None:
    # Before: scrubbing the logged error was quadratic in its length (14 s for 100,000 chars).
    result = await attacks.log_api(api_process, 100_000)
    assert result["status"] == 200 and result["code"] == "BLOCK_NOT_FOUND", result
    assert result["healthz_failures"] == 0
    assert result["healthz_max_s"] < RESPONSIVE_S, result
    # A client's mistake is not an error of the server: no traceback, no copy of the argument.
    assert result["log_bytes"] < 20_000, result
    assert "z" * 1000 not in api_process.log_path.read_text()
