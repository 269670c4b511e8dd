"""`python -m ops.bench NAME ...`: the benchmarks, one sub-command per module of BENCH_MODULES,
each registering its own with `register(subparsers)`; add a module name here to add one.

The benchmarks live above the CLI (they start `recchain` roles and import every package), so
they have their own entry point rather than a `recchain` sub-command: the CLI imports no `ops`
module. Failures are reported the way every `recchain` command reports them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from recchain.cli import CommandParser, run

BENCH_MODULES: tuple[str, ...] = (
    "ops.bench.apisource",
    "ops.bench.faults",
    "ops.bench.ingest",
    "ops.bench.holdings",
    "ops.bench.query",
    "ops.bench.skip",
    "ops.bench.subscribe",
    "ops.bench.webhooks_bench",
)


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="python -m ops.bench",
        description="Benchmarks against a real PostgreSQL; figures and how to read them are in "
        "ops/bench/README.md.",
    )
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", title="benchmarks")
    sub.required = True
    for name in BENCH_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
