"""The single `recchain` command line: every role and every analyst tool starts here."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module registers its own sub-commands, so a role's CLI lives next to the code it drives
# and this file stays a table of contents. A module that cannot be imported (an optional part
# missing) must not break the other commands, hence the lazy, tolerant import below.
COMMAND_MODULES: tuple[str, ...] = (
    "recchain.commands.core",
    "recchain.commands.stacks_cmd",
    "recchain.commands.index_cmd",
    "recchain.commands.metadata_cmd",
    "recchain.commands.expiry_cmd",
    "recchain.commands.serve_cmd",
    "recchain.commands.relay_cmd",
    "recchain.commands.bench_cmd",
    "recchain.commands.dev_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recchain",
        description="REC-Chain: index, serve and relay tokenized Renewable Energy Certificates.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = args.handler
    # Every role logs through the same scrubbing handler, configured once, here.
    from recchain.config import get_settings
    from recchain.logging import configure_logging

    configure_logging(get_settings())
    try:
        result = handler(args)
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
