"""Finality: the one place that decides which blocks can no longer be rolled back.

Today the rule is depth: a block `indexer.finality_depth` or more below the canonical tip is
final (the indexer refuses forks deeper than that, so nothing at or below this height is ever
undone). A rule that needs more of the tip than its height (e.g. a Nakamoto rule on the burn
block of a tenure) extends the arguments here, and every reader of finality (the API's
`_meta.finalizedHeight`, webhook delivery at finality, the `finalized` flag of deliveries)
follows it.
"""

from __future__ import annotations

from infra.config import Settings


def finalized_height(tip_height: int | None, settings: Settings) -> int:
    """The highest final height given the canonical tip (0 before anything is final)."""
    if tip_height is None:
        return 0
    return max(0, tip_height - settings.indexer.finality_depth)
