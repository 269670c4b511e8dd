"""Running the real `recchain` command in a subprocess, as a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from infra.config import PROJECT_ROOT

RECCHAIN = [sys.executable, "-m", "recchain.cli"]


def recchain_env(**extra: str) -> dict[str, str]:
    """The test's environment without any database or port setting the caller did not give."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RECCHAIN_") and k not in ("DATABASE_URL", "RECCHAIN_CONFIG")
    }
    env.update(extra)
    return env


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120, **kw: Any) -> Any:
    return subprocess.run(
        [*RECCHAIN, *args],
        env=env if env is not None else recchain_env(),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def error_lines(stderr: str) -> list[str]:
    """The lines a failed command printed as its error, and any traceback."""
    return [line for line in stderr.splitlines() if line.startswith(("error:", "Traceback"))]
