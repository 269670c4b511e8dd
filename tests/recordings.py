"""Real stacks-node event-observer recordings (public test fixtures of the Stacks Blockchain API),
read from outside the project: `RECCHAIN_HIRO_RECORDINGS`, by default `../shared/recordings/hiro`
beside the checkout. They are never copied into the project; tests that use them skip, saying
why, when the folder is absent.

`implied_canonical` is the reference the indexer is checked against, written from the rule
alone (no code shared with the pipeline): in delivery order, a block whose parent is known (or
that is the root, at the start height) is placed; a placed block higher than the tip becomes the
tip; blocks waiting for their parent are placed when it is. The canonical chain is the tip and its
ancestors down to the root.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from indexer.tsv import read_requests
from infra.config import PROJECT_ROOT

RECORDINGS = Path(
    os.environ.get("RECCHAIN_HIRO_RECORDINGS")
    or PROJECT_ROOT.parent / "shared" / "recordings" / "hiro"
)
ABSENT = f"the recordings folder {RECORDINGS} is absent (set RECCHAIN_HIRO_RECORDINGS)"


def files() -> list[Path]:
    """Every recording: the TSV files (plain or gzipped) and the single `/new_block` payloads."""
    if not RECORDINGS.is_dir():
        return []
    found = [p for p in RECORDINGS.iterdir() if p.name.endswith((".tsv", ".tsv.gz"))]
    found += (RECORDINGS / "synthetic-tx-payloads").glob("*.json")
    return sorted(found)


def params() -> list[Any]:
    """pytest parameters, one per recording (ids are the file names), or one skipped case."""
    found = files()
    if not found:
        return [pytest.param(None, id="recordings-absent", marks=pytest.mark.skip(reason=ABSENT))]
    return [pytest.param(p, id=p.name) for p in found]


def requests(path: Path) -> Iterator[tuple[str, str]]:
    """(event path, payload) in delivery order."""
    if path.suffix == ".json":
        yield "/new_block", path.read_text()
        return
    for r in read_requests(path):
        yield r.path, r.payload


def start_height(path: Path) -> int:
    """A lone payload starts at its own height (its parent is not recorded); files start at 1."""
    if path.suffix == ".json":
        return int(json.loads(path.read_text())["block_height"])
    return 1


@dataclass(frozen=True)
class Implied:
    canonical: list[str]  # index block hashes, root first
    blocks: int  # distinct blocks at or above the start height


def implied_canonical(reqs: list[tuple[str, str]], start: int = 1) -> Implied:
    parent_of: dict[str, str] = {}
    height_of: dict[str, int] = {}
    placed: set[str] = set()
    waiting: dict[str, list[str]] = {}
    tip: str | None = None
    for path, payload in reqs:
        if path != "/new_block":
            continue
        b = json.loads(payload)
        h, height, parent = b["index_block_hash"], b["block_height"], b["parent_index_block_hash"]
        if height < start or h in height_of:
            continue
        parent_of[h], height_of[h] = parent, height
        if not (parent in placed or (height == start and parent not in height_of)):
            waiting.setdefault(parent, []).append(h)
            continue
        todo = [h]
        while todo:
            cur = todo.pop()
            placed.add(cur)
            if tip is None or height_of[cur] > height_of[tip]:
                tip = cur
            todo += waiting.pop(cur, [])
    chain: list[str] = []
    cursor = tip
    while cursor is not None and cursor in placed:
        chain.append(cursor)
        parent = parent_of[cursor]
        cursor = parent if parent in placed and height_of[cursor] > start else None
    return Implied(canonical=chain[::-1], blocks=len(height_of))
