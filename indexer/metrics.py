"""Prometheus metrics of the chain follower (served by `recchain index` on indexer.metrics_port)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

TIP = Gauge("recchain_indexer_tip_height", "Height of the canonical tip in the database")
LAG = Gauge(
    "recchain_indexer_lag_blocks",
    "Blocks between the source's tip and ours (observer: the highest block the node sent, "
    "applied or not, less the tip)",
)
LAG_SECONDS = Gauge("recchain_indexer_lag_seconds", "Seconds since the tip block was produced")
_tip_time: list[float] = []  # the tip block's time, once a block has been applied


def set_tip_time(when: float) -> None:
    """Record the tip block's time; the lag is computed at each scrape, so it keeps growing
    while nothing commits (a stalled chain is what the lag alert is for)."""
    _tip_time[:] = [when]


LAG_SECONDS.set_function(lambda: max(time.time() - _tip_time[0], 0.0) if _tip_time else 0.0)
BLOCKS = Counter("recchain_indexer_blocks_total", "Canonical blocks applied")
EVENTS = Counter("recchain_indexer_events_total", "Watched events applied")
FORK_DEPTH = Histogram(
    "recchain_indexer_fork_depth",
    "Blocks rolled back per fork",
    buckets=(1, 2, 3, 5, 10, 25, 50, 100, 500, 1000),
)
ERRORS = Counter("recchain_indexer_errors_total", "Refused payloads and failed batches", ["kind"])
SKIPPED_EVENTS = Counter(
    "recchain_indexer_events_skipped_total",
    "Watched events stored but not applied: a shape or event kind the handlers do not understand",
    ["contract"],
)
HOLDS = Gauge(
    "recchain_indexer_holds",
    "Open holds of the chain (chain_holds) by kind: refused_block, deep_fork, body_too_large",
    ["kind"],
)
ORPHANS = Gauge(
    "recchain_indexer_orphan_blocks", "Blocks stored whose parent has not arrived (waiting)"
)
UP = Gauge(
    "recchain_indexer_database_up",
    "1 while the leader's data connection works (0 on a standby and while it reconnects)",
)
LEADER = Gauge("recchain_indexer_leader", "1 while this process holds the indexer leader lock")
OBSERVER_REQUESTS = Counter(
    "recchain_indexer_observer_requests_total",
    "Answers given to the stacks-node event observer, by path and HTTP status",
    ["path", "status"],
)
