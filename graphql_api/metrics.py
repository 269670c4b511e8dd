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
# Reading a hot standby (api.read_database_url): how far it is behind the primary, and how
# long notifications wait for it before their pushes are computed.
REPLICA_LAG_SECONDS = Gauge(
    "recchain_api_replica_lag_seconds",
    "Age of the oldest primary WAL position the read replica has not replayed (0 = caught up)",
)
REPLICA_LAG_BYTES = Gauge(
    "recchain_api_replica_lag_bytes", "Primary WAL the read replica has not replayed, in bytes"
)
REPLICA_WAIT = Histogram(
    "recchain_api_replica_wait_seconds",
    "Time a notification waited for the replica to replay its commit before its pushes",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30, 120),
)
PUSHES_FROM_PRIMARY = Counter(
    "recchain_api_pushes_from_primary_total",
    "Batches of notifications whose pushes were computed on the primary: the replica had not"
    " replayed their commit within api.read_replica_push_wait_s",
)
NOTIFICATIONS_PENDING = Gauge(
    "recchain_api_notifications_pending",
    "Notifications received from the primary whose pushes are not computed yet",
)
NOTIFIED_HEIGHT = Gauge(
    "recchain_api_notified_height",
    "Height of the newest block notification this process has computed its pushes for",
)
# The answer cache (answercache.py): requests served from it, and those it could not serve.
ANSWER_CACHE_HITS = Counter(
    "recchain_api_answer_cache_hits_total",
    "Query answers served from the answer cache (same document, variables and chain tip)",
)
ANSWER_CACHE_MISSES = Counter(
    "recchain_api_answer_cache_misses_total",
    "Cacheable query answers computed afresh: no entry (absent), an entry of another or an"
    " unknown tip (tip), an entry past api.answer_cache_max_age_s (age)",
    ["reason"],
)
ANSWER_CACHE_EVICTIONS = Counter(
    "recchain_api_answer_cache_evictions_total",
    "Answers dropped from the answer cache to stay within its entry and byte bounds",
)
ANSWER_CACHE_ENTRIES = Gauge("recchain_api_answer_cache_entries", "Answers in the answer cache")
ANSWER_CACHE_BYTES = Gauge(
    "recchain_api_answer_cache_bytes", "Bytes held by the answer cache (keys and answers)"
)
