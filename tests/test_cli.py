from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from recchain.cli import CommandParser, build_parser, main


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


# --- the first hour: help, lazy imports --------------------------------------------------------

HEAVY = ("sqlalchemy", "strawberry", "psycopg", "alembic", "uvicorn", "indexer", "graphql_api")


def test_help_lists_every_command_and_imports_none_of_the_system() -> None:
    """`recchain --help` builds the whole parser without importing the roles' code (that made it
    take seconds); the command modules import their dependencies inside their handlers."""
    code = (
        "import sys\n"
        "from recchain.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "LOADED []" in proc.stdout, proc.stdout
    for command in ("migrate", "replay", "index", "serve", "relay", "metadata", "dev"):
        assert f"    {command} " in proc.stdout


def test_the_api_process_imports_no_other_role() -> None:
    """What `recchain serve` imports decides what its /metrics exports (one registry per
    process): building its app must not load the indexer or the relay."""
    code = (
        "import sys\n"
        "from recchain.cli import build_parser\n"
        "from graphql_api.app import create_app\n"
        "build_parser().parse_args(['serve'])\n"
        "print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('indexer', 'writers', 'ops')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "LOADED []" in proc.stdout, proc.stdout


def _parsers(parser: argparse.ArgumentParser, name: str = "recchain") -> Iterator[tuple[str, Any]]:
    if isinstance(parser, CommandParser):
        parser.expand()  # the benchmarks' options too
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for sub_name, sub in action.choices.items():
                assert helps.get(sub_name), f"{name} {sub_name} has no help line"
                yield from _parsers(sub, f"{name} {sub_name}")


@pytest.mark.parametrize("entry", ["recchain", "bench"])
def test_every_command_and_option_has_help_text(entry: str) -> None:
    if entry == "bench":
        from ops.bench.__main__ import build_parser as build_bench_parser

        root: argparse.ArgumentParser = build_bench_parser()
    else:
        root = build_parser()
    missing = []
    for name, parser in _parsers(root, entry):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if action.help is None:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []
