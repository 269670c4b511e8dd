"""`recchain bench <name>`: each benchmark module in BENCH_MODULES registers its own sub-command
with `register(bench_subparsers)`; add a module name here to add a benchmark."""

from __future__ import annotations

import argparse
import importlib

BENCH_MODULES: tuple[str, ...] = (
    "ops.bench.ingest",
    "ops.bench.query",
    "ops.bench.subscribe",
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="benchmarks (report figures; see ops/bench)")
    bench_sub = p.add_subparsers(dest="bench", metavar="BENCH")
    bench_sub.required = True
    for name in BENCH_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # not written yet / optional
            raise
        module.register(bench_sub)
