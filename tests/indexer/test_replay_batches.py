"""Catch-up batch sizes: every request once, in order, never more than the configured size."""

from __future__ import annotations

from typing import Any

from indexer.replay import _batches


def sizes(total: int, size: int, ramp: bool, known: bool = True) -> list[int]:
    items: Any = iter(range(total))
    batches = list(_batches(items, size, ramp=ramp, total=total if known else None))
    assert [r for b in batches for r in b] == list(range(total))
    assert all(0 < len(b) <= size for b in batches)
    return [len(b) for b in batches]


def test_plain_batches_are_full_but_the_last() -> None:
    assert sizes(10, 4, ramp=False) == [4, 4, 2]


def test_catch_up_ramps_up_then_halves_what_is_left() -> None:
    assert sizes(10_000, 1000, ramp=True)[:4] == [125, 250, 500, 1000]
    tail = sizes(10_000, 1000, ramp=True)[-4:]
    assert tail == sorted(tail, reverse=True) and tail[-1] <= 250
    assert sizes(10_000, 1000, ramp=True, known=False)[-1] == 10_000 - 125 - 250 - 500 - 9000


def test_tiny_batches_still_progress() -> None:
    assert sizes(5, 1, ramp=True) == [1, 1, 1, 1, 1]
    assert set(sizes(9, 2, ramp=True)) <= {1, 2}
