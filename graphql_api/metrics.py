"""Prometheus metrics of the API process (served at `/metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY = Histogram(
    "recchain_api_field_seconds",
    "Latency of root fields",
    ["field"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ERRORS = Counter("recchain_api_errors_total", "Errors per root field and code", ["field", "code"])
REJECTED = Counter("recchain_api_rejected_total", "Requests refused by a guard", ["guard"])
SUBSCRIPTIONS = Gauge("recchain_api_subscriptions", "Active subscriptions in this process")
