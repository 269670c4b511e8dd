"""Prometheus metrics of one webhook sender, on a registry of its own (several senders can live
in one test process). Queue gauges are read from the database, so every sender reports the
whole outbox; alerts take the max over senders."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WebhookMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "recchain_webhooks_deliveries_total",
            "Delivery attempts by endpoint and outcome (delivered, failed: will retry, dead).",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "recchain_webhooks_queue_depth",
            "Events waiting for delivery, per endpoint.",
            ["endpoint"],
            registry=self.registry,
        )
        self.oldest_pending = Gauge(
            "recchain_webhooks_oldest_pending_seconds",
            "Age of the oldest undelivered event, per endpoint (0 when none waits, or while"
            " the endpoint is paused).",
            ["endpoint"],
            registry=self.registry,
        )
        self.dead_letters = Gauge(
            "recchain_webhooks_dead_letters",
            "Events given up on (dead letters), per endpoint.",
            ["endpoint"],
            registry=self.registry,
        )
        self.attempt_seconds = Histogram(
            "recchain_webhooks_attempt_seconds",
            "Duration of one delivery attempt (connect to answer).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.delivery_lag = Histogram(
            "recchain_webhooks_delivery_lag_seconds",
            "From the commit that queued an event to its successful delivery.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300, 3600, 86400),
            registry=self.registry,
        )
        self.database_up = Gauge(
            "recchain_webhooks_database_up",
            "1 while the sender reaches the database, 0 during an outage (the queue gauges are"
            " then their last samples).",
            registry=self.registry,
        )
        self.database_up.set(1)
        self.active_endpoints = Gauge(
            "recchain_webhooks_sending_endpoints",
            "Endpoints this sender is delivering to right now.",
            registry=self.registry,
        )
