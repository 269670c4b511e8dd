"""Prometheus metrics of metadata resolution (default registry, exposed by each role)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

QUEUE_DEPTH = Gauge(
    "recchain_metadata_jobs", "Metadata jobs by status (sampled by the workers)", ["status"]
)
RESULTS = Counter(
    "recchain_metadata_results_total",
    "Finished resolution attempts by outcome (done, failed, permanent) and reason",
    ["outcome", "reason"],
)
SOURCE_LATENCY = Histogram(
    "recchain_metadata_source_seconds",
    "Time one source (gateway, Kubo, data: URI) took to answer one URI",
    ["source", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
MISMATCHES = Counter(
    "recchain_metadata_hash_mismatch_total", "Blocks that did not match their CID", ["source"]
)
DATABASE_UP = Gauge(
    "recchain_metadata_database_up",
    "1 while the metadata workers reach the database, 0 during an outage (queue depths are"
    " then their last samples)",
)
DATABASE_UP.set(1)
