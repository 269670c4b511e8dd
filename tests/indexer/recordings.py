"""Where the real stacks-node recordings are, for tests that replay them (skipped when absent).

They are not part of the project: `RECCHAIN_RECORDINGS_DIR` names the folder, otherwise a
`shared/recordings/hiro` folder beside the checkout (or beside the folder of worktrees) is used.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexer.tsv import Request, iter_requests
from recchain.config import PROJECT_ROOT


def recordings_dir() -> Path | None:
    named = os.environ.get("RECCHAIN_RECORDINGS_DIR")
    candidates = [Path(named)] if named else []
    candidates += [p / "shared" / "recordings" / "hiro" for p in PROJECT_ROOT.parents[:2]]
    return next((p for p in candidates if p.is_dir()), None)


def require_recordings() -> Path:
    found = recordings_dir()
    if found is None:
        pytest.skip("the real stacks-node recordings (shared/recordings/hiro) are not available")
    return found


def recorded_requests(path: Path) -> Iterator[Request]:
    """The requests of one recording, plain or gzipped (COPY-escaped TSV)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="\n") as stream:  # type: ignore[operator]
        yield from iter_requests(stream)
