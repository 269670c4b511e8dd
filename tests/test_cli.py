from __future__ import annotations

import subprocess
import sys

import pytest

from recchain.cli import build_parser, main


def test_every_role_of_the_design_has_a_command() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = set(sub.choices)  # type: ignore[arg-type]
    assert {"dev", "migrate"} <= commands


def test_unknown_command_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_migrate_command_against_a_fresh_database(empty_db_url: str) -> None:
    env = {"DATABASE_URL": empty_db_url, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "recchain.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "migrated" in proc.stderr
