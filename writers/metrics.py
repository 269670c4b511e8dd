"""Prometheus metrics of one relay process, on a registry of its own (so several apps can live
in one test process without colliding on the global registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RelayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.submissions = Counter(
            "recchain_relay_submissions_total",
            "Submissions by outcome (accepted, duplicate, rejected) and rejection code.",
            ["outcome", "code"],
            registry=self.registry,
        )
        self.broadcast_attempts = Counter(
            "recchain_relay_broadcast_attempts_total",
            "POSTs to the node by outcome (accepted, rejected, retry) and node reason.",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.node_lookups = Counter(
            "recchain_relay_node_lookups_total",
            "Transactions looked up at the node by txid (before resending one in doubt, or"
            " after a refusal) by what the node said: pending, mined, absent, unknown.",
            ["presence"],
            registry=self.registry,
        )
        self.database_up = Gauge(
            "recchain_relay_database_up",
            "1 while the relay reaches its database, 0 during an outage (the outbox depth is"
            " then its last sampled value).",
            registry=self.registry,
        )
        self.database_up.set(1)
        self.outbox_depth = Gauge(
            "recchain_relay_outbox_depth",
            "Transactions accepted but not yet accepted by the node (status 'received').",
            registry=self.registry,
        )
        self.time_to_mined = Histogram(
            "recchain_relay_time_to_mined_seconds",
            "From acceptance by the relay to the indexer marking the transaction mined/failed.",
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600),
            registry=self.registry,
        )
        self.ratelimit_backend_errors = Counter(
            "recchain_ratelimit_backend_errors_total",
            "Shared rate-limit lookups that failed (Redis unreachable or slow); the process used"
            " its own buckets instead.",
            ["service"],
            registry=self.registry,
        )
