"""`recchain bench <name>`: each benchmark module in BENCH_MODULES registers its own sub-command
with `register(bench_subparsers)`; add a module name here to add a benchmark.

The benchmark modules import most of the system, so they are loaded only when `bench` is the
command being parsed (`CommandParser.defer`), never for `recchain --help` or another command.
"""

from __future__ import annotations

import argparse
import importlib

BENCH_MODULES: tuple[str, ...] = (
    "ops.bench.ingest",
    "ops.bench.query",
    "ops.bench.subscribe",
    "ops.bench.webhooks_bench",
)


def _add_benchmarks(p: argparse.ArgumentParser) -> None:
    bench_sub = p.add_subparsers(dest="bench", metavar="BENCH", title="benchmarks")
    bench_sub.required = True
    for name in BENCH_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # not written yet / optional
            raise
        module.register(bench_sub)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks (report figures; see ops/bench)",
        description="Benchmarks against a real PostgreSQL; figures and how to read them are in "
        "ops/bench/README.md.",
    )
    defer = getattr(p, "defer", None)
    if defer is not None:
        defer(_add_benchmarks)
    else:
        _add_benchmarks(p)
