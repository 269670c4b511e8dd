"""The single `recchain` command line: every role and every analyst tool starts here.

Building the parser imports nothing but the command modules, which import their dependencies
(SQLAlchemy, Strawberry, the indexer, ...) only inside their handlers: `recchain --help` and a
mistyped option answer at once, and a role's process holds only what that role uses (the API's
`/metrics` exports no other role's metrics). A failing command prints one line saying what went
wrong and what to do (`recchain.commands.failures`), never a traceback, and exits non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

# Each module registers its own sub-commands, so a role's CLI lives next to the code it drives
# and this file stays a table of contents. A module that cannot be imported (an optional part
# missing) must not break the other commands, hence the tolerant import below.
COMMAND_MODULES: tuple[str, ...] = (
    "recchain.commands.core",
    "recchain.commands.stacks_cmd",
    "recchain.commands.index_cmd",
    "recchain.commands.metadata_cmd",
    "recchain.commands.expiry_cmd",
    "recchain.commands.serve_cmd",
    "recchain.commands.relay_cmd",
    "recchain.commands.webhooks_cmd",
    "recchain.commands.dev_cmd",
)

# 128 + SIGPIPE, what a shell reports for a writer whose reader went away.
EXIT_BROKEN_PIPE = 141


class CommandParser(argparse.ArgumentParser):
    """A command's parser. `defer(fn)` postpones costly parts of it (options whose building
    imports much of the system) until this command is the one being parsed or `expand()` is
    called, so the other commands never pay for them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: list[Callable[[argparse.ArgumentParser], None]] = []

    def defer(self, build: Callable[[argparse.ArgumentParser], None]) -> None:
        self._deferred.append(build)

    def expand(self) -> None:
        while self._deferred:
            self._deferred.pop(0)(self)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self.expand()
        return super().parse_known_args(args, namespace)


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="recchain",
        description="REC-Chain: index, serve and relay tokenized Renewable Energy Certificates.",
        epilog="`recchain COMMAND --help` describes a command. Settings: RECCHAIN_* environment "
        "variables or the TOML file named by RECCHAIN_CONFIG (see README.md).",
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=CommandParser, title="commands"
    )
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's last flush at exit
    does not fail a second time (and print a warning)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, configure logging once and run the chosen handler; a failure the project
    can explain is one `error:` line and its exit code, never a traceback. Also the entry of
    `python -m ops.bench`, so the benchmarks fail the way every command does."""
    args = parser.parse_args(argv)
    handler = args.handler
    from recchain.commands.failures import explain

    try:
        # Every role logs through the same scrubbing handler, configured once, here.
        from infra.config import get_settings
        from infra.logging import configure_logging

        configure_logging(get_settings())
        result = handler(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        print("error: output closed by its reader (broken pipe); stopped", file=sys.stderr)
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        failure = explain(exc)
        if failure is None:
            raise
        print(f"error: {failure.message}", file=sys.stderr)
        return failure.code
    return int(result or 0)


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
