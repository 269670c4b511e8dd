"""Generates the README's settings table from the Settings model: `python -m ops.configdoc`.

Names, defaults and types come from `infra.config` itself, so the table cannot drift; the
one-line meanings live here, and a test fails when a setting has none or a meaning is stale.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from infra.config import PROJECT_ROOT, Settings

ROLES = {
    "": "all",
    "http": "serve, relay, index",
    "indexer": "index",
    "api": "serve",
    "relay": "relay",
    "metadata": "metadata work",
    "webhooks": "webhooks",
}

MEANINGS: dict[str, str] = {
    "database_url": "Primary PostgreSQL URL (or `DATABASE_URL`); unset = embedded server.",
    "redis_url": "Redis for rate limits shared by all API and relay replicas (e.g."
    " `redis://redis:6379/0`); unset = each process limits on its own; while Redis is"
    " unreachable, each process falls back to its own buckets.",
    "data_dir": "Where the embedded PostgreSQL and local state live (development only).",
    "network": "`mainnet` or `testnet`: chain id checked by the relay, address versions.",
    "deployer": "Address that deployed the watched contracts.",
    "contracts": "Watched contract names (or fully qualified ids); everything else is skipped.",
    "log_level": "Root log level (`DEBUG`, `INFO`, `WARNING`, ...).",
    "log_json": "One JSON object per log line (set in the container image).",
    "http.header_timeout_s": "Seconds a request's line and headers may take to arrive"
    " (slow-header clients are answered 408 and closed).",
    "http.body_timeout_s": "Seconds a request's body may take to arrive once its headers have"
    " (then 408 and closed).",
    "http.max_header_bytes": "Largest request line and headers (431 beyond).",
    "http.max_connections_per_client": "Open connections (HTTP and websocket) per client address"
    " (an IPv6 /64); more are answered 503 and closed at once. Trusted proxies are exempt.",
    "http.max_connections": "Open connections per process; unset = the descriptor limit (raised"
    " to its hard limit at start) less a reserve, so a flood is refused before descriptors run"
    " out.",
    "http.trusted_proxies": "Addresses or CIDR networks of reverse proxies whose X-Forwarded-For"
    " / X-Forwarded-Proto are believed (client address for rate limits); from anyone else"
    " they are ignored. Empty = no proxy headers at all.",
    "indexer.source": "`observer` (stacks-node pushes), `api` (follow a Stacks API) or `replay`.",
    "indexer.listen_host": "Bind address of the event-observer server.",
    "indexer.listen_port": "Port of the event-observer server (`[[events_observer]] endpoint`).",
    "indexer.api_url": "Stacks Blockchain API base URL for the `api` source.",
    "indexer.api_key": "API key sent as `x-api-key` by the `api` source (hosted APIs: 500 "
    "requests a minute with a key, 50 without).",
    "indexer.api_requests_per_minute": "The `api` source paces its requests to this (the hosted "
    "limit without a key is 50; raise it with a key); unset = no pacing.",
    "indexer.max_body_bytes": "Largest observer payload accepted; a larger one is answered 413 and "
    "holds the chain until this is raised.",
    "indexer.finality_depth": "Blocks below the tip that are final; a deeper fork holds the chain "
    "(answered 409, recorded) until this is raised.",
    "indexer.nakamoto_burn_confirmations": "Nakamoto: a block the signers signed is final once "
    "this many Bitcoin blocks bury its burn block (with the depth rule, the higher final height "
    "wins; docs/stacks.md).",
    "indexer.start_height": "First block indexed (the root); lower blocks are stored, not applied; "
    "a sibling of the root replaces it if its branch wins.",
    "indexer.catchup_batch_blocks": "Most blocks per transaction while catching up (the first"
    " batches ramp up to it, the last ones are halved).",
    "indexer.metrics_host": "Bind address of the indexer's `/metrics` server (0.0.0.0 in the"
    " container image's env files, for Prometheus).",
    "indexer.metrics_port": "Prometheus `/metrics` port of the indexer.",
    "api.host": "Bind address of the GraphQL server.",
    "api.port": "Port of the GraphQL server (also `/metrics`, `/healthz`, `/readyz`).",
    "api.read_database_url": "Hot standby for queries and subscription pushes; unset = primary."
    " Notifications are still received from the primary (`database_url`); a push waits until the"
    " standby has replayed the notified commit.",
    "api.read_replica_max_lag_s": "With `read_database_url`: `/readyz` fails while the standby is"
    " further behind the primary than this.",
    "api.read_replica_push_wait_s": "With `read_database_url`: how long a push waits for the"
    " standby to replay its commit; past it the push is computed on the primary instead"
    " (`recchain_api_pushes_from_primary_total`), so it is never stale and at most this late.",
    "api.max_depth": "Largest query depth.",
    "api.max_aliases": "Most aliases in one query.",
    "api.max_tokens": "Most lexer tokens in one query.",
    "api.introspection": "Answer `__schema` / `__type` (introspection); off in production."
    " `__typename` is always allowed.",
    "api.field_suggestions": '"Did you mean ...?" in error messages; off in production.',
    "api.max_response_bytes": "Largest encoded answer; a larger one is replaced by a"
    " `LIMIT_EXCEEDED` error (`limit: max_response_bytes`).",
    "api.request_timeout_ms": "Longest time an HTTP GraphQL request may run; then it is"
    " cancelled and answered `LIMIT_EXCEEDED` (`limit: request_timeout`).",
    "api.max_selections": "Most field selections in one document (each fragment counted per"
    " spread), and most pairs of same-named sibling fields; bounds what validation costs.",
    "api.max_page_size": "Largest `first`/`last` on a connection.",
    "api.max_cost": "Largest estimated query cost.",
    "api.max_body_bytes": "Largest request body.",
    "api.statement_timeout_ms": "PostgreSQL `statement_timeout` for API queries.",
    "api.rate_limit_per_minute": "Requests per client per minute.",
    "api.cors_origins": "Allowed CORS origins (JSON list in the environment).",
    "api.ws_allowed_origins": "Allowed websocket `Origin`s for subscriptions.",
    "api.ws_compression": "Offer permessage-deflate on websockets, without context takeover:"
    " a push is compressed once for every socket and no socket keeps a compressor; frames are"
    " small JSON, so it saves little.",
    "api.max_subscriptions_per_connection": "Most operations (subscriptions) running at once on"
    " one websocket; one more gets an error with code `LIMIT_EXCEEDED` (`limit:"
    " subscriptions_per_connection`), the socket stays open.",
    "api.max_subscriptions_per_client": "Most operations at once over all websockets of one client"
    " address in one API process (`LIMIT_EXCEEDED`, `limit: subscriptions_per_client`).",
    "api.mask_errors": "Hide internal error details from clients.",
    "api.graphiql": "Serve the GraphiQL IDE on GET `/graphql`.",
    "api.answer_cache": "Keep the JSON answers of queries that read only the chain, per chain"
    " tip (height and hash), and serve them again until a block or fork changes the tip"
    " (graphql_api/README.md, Answer cache); off = every query is executed.",
    "api.answer_cache_max_entries": "Most answers the answer cache holds (least recently used"
    " go first).",
    "api.answer_cache_max_bytes": "Most bytes (keys and answers) the answer cache holds.",
    "api.answer_cache_max_age_s": "Oldest answer the answer cache serves, in seconds, even at"
    " the same tip: bounds what a silently lost notification connection could leave stale.",
    "relay.host": "Bind address of the transaction relay.",
    "relay.port": "Port of the relay (`/v1/transactions`, `/metrics`, `/healthz`).",
    "relay.node_url": "stacks-node RPC the relay broadcasts to (`/v2/transactions`).",
    "relay.api_keys": "Accepted client API keys (JSON list); several at once allow rotation.",
    "relay.allowed_functions": "`contract.function` calls the relay accepts.",
    "relay.min_fee": "Smallest fee accepted (micro-STX).",
    "relay.max_fee": "Largest fee accepted (micro-STX).",
    "relay.max_body_bytes": "Largest request body.",
    "relay.rate_limit_per_minute": "Submissions per client per minute.",
    "relay.max_concurrency": "Concurrent requests handled.",
    "metadata.kubo_rpc_url": "Local Kubo RPC (`/api/v0/cat`), tried first.",
    "metadata.gateways": "Trustless IPFS gateways, in priority order (verified block by block).",
    "metadata.allow_https": "Resolve plain `https://` token URIs.",
    "metadata.max_bytes": "Largest metadata document.",
    "metadata.request_timeout_s": "Timeout of one HTTP request.",
    "metadata.total_timeout_s": "Timeout of resolving one URI across all sources.",
    "metadata.max_attempts": "Attempts before a job is `permanent`ly failed.",
    "metadata.workers": "Worker loops per process (each resolves up to `batch_size` at once).",
    "metadata.batch_size": "Jobs a worker claims, resolves concurrently and stores together.",
    "metadata.per_host_concurrency": "Concurrent requests per remote host.",
    "metadata.metrics_host": "Bind address of the metadata workers' `/metrics` server.",
    "metadata.metrics_port": "Prometheus `/metrics` port of the metadata workers (0 = none).",
    "metadata.path_gateways": "Path gateways, used only when bytes can be checked against the CID.",
    "metadata.https_allowed_hosts": (
        "Hosts allowed for plain https URIs (empty = any public host); only listed hosts may "
        "resolve to loopback, private or link-local addresses."
    ),
    "metadata.max_redirects": "Redirects followed per request.",
    "metadata.per_host_rate_per_s": "Request rate per remote host (Retry-After still wins).",
    "metadata.backoff_initial_s": "First retry delay of a failed job.",
    "metadata.backoff_max_s": "Longest retry delay.",
    "metadata.lease_s": "How long a live worker owns a job before another may take it (a"
    " worker that died loses its jobs at once: its presence lock ends with its connection).",
    "metadata.poll_interval_s": "Idle poll interval of a worker.",
    "webhooks.allow_internal_hosts": "Endpoint hosts (names, addresses or CIDR networks) that may"
    " resolve to loopback, private or link-local addresses; all others are refused.",
    "webhooks.timeout_s": "Timeout of one delivery (connect, send, first bytes of the answer).",
    "webhooks.connect_timeout_s": "Timeout of connecting to an endpoint.",
    "webhooks.max_response_bytes": "Most bytes of an endpoint's answer read (kept in the history);"
    " only the status counts.",
    "webhooks.concurrency": "Endpoints one sender process delivers to at once (each endpoint"
    " receives one delivery at a time, in order).",
    "webhooks.backoff_initial_s": "First retry delay of a failed delivery (doubling, with jitter;"
    " `Retry-After` wins).",
    "webhooks.backoff_max_s": "Longest retry delay.",
    "webhooks.dead_letter_after_s": "An event still undelivered this long after it was queued"
    " becomes a dead letter (`recchain webhooks redeliver` re-queues it).",
    "webhooks.rotation_overlap_s": "After `rotate-secret`, how long deliveries are also signed"
    " with the previous secret.",
    "webhooks.poll_interval_s": "Idle poll interval of a sender (new events also wake it).",
    "webhooks.retention_days": "Delivered, dead and retracted events older than this are deleted"
    " with their attempts.",
    "webhooks.max_endpoints_per_key": "Most endpoints one relay API key may register.",
    "webhooks.metrics_host": "Bind address of the sender's `/metrics` server.",
    "webhooks.metrics_port": "Port of the sender's `/metrics`, `/healthz`, `/readyz` (0: none).",
}


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return None if info.default is PydanticUndefined else info.default


def _render(value: Any, secret: bool) -> str:
    if value is None:
        return "*(unset)*"
    if secret:
        return "*(secret)*"
    if isinstance(value, list):
        text = json.dumps(value)
        return f"`{text}`" if len(text) <= 60 else f"`{text[:57]}...`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if str(value).startswith(str(PROJECT_ROOT)):
        return f"`<repo>{str(value)[len(str(PROJECT_ROOT)) :]}`"
    return f"`{value}`"


def settings_rows() -> Iterator[tuple[str, str, str, str, str]]:
    """(dotted name, env var, default, role, meaning) for every setting."""
    for name, info in Settings.model_fields.items():
        section = _default(info)
        if isinstance(section, BaseModel):
            for sub, sub_info in type(section).model_fields.items():
                dotted = f"{name}.{sub}"
                secret = "SecretStr" in str(sub_info.annotation)
                yield (
                    dotted,
                    f"RECCHAIN_{name.upper()}__{sub.upper()}",
                    _render(_default(sub_info), secret),
                    ROLES[name],
                    MEANINGS.get(dotted, ""),
                )
        else:
            secret = "SecretStr" in str(info.annotation) or isinstance(section, SecretStr)
            env = f"RECCHAIN_{name.upper()}"
            if name == "database_url":
                env += " / DATABASE_URL"
            yield name, env, _render(section, secret), ROLES[""], MEANINGS.get(name, "")


BEGIN = "<!-- settings:begin (generated by `python -m ops.configdoc`; edit ops/configdoc.py) -->"
END = "<!-- settings:end -->"
README = PROJECT_ROOT / "README.md"


def render() -> str:
    """The settings table and the health-endpoint semantics, as they stand in the README."""
    lines = [
        "| Setting | Environment variable | Default | Role | Meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for dotted, env, default, role, meaning in settings_rows():
        lines.append(f"| `{dotted}` | `{env}` | {default} | {role} | {meaning} |")
    lines += [
        "",
        "Role: which command reads it (`all` = every role; `recchain dev` runs them all).",
        "",
        "Health endpoints:",
        "",
        "- API `GET /healthz`: the process is up (liveness). Never touches the database.",
        "- API `GET /readyz`: 200 only when the database answers and is migrated to every",
        "  Alembic head; 503 with a reason otherwise (readiness; the proxy and Kubernetes",
        "  route traffic only to ready replicas). Freshness (the indexer being within a few",
        "  blocks of the tip) is reported by every response's `_meta` and alerted on through",
        "  `recchain_indexer_lag_blocks`, not by readiness: a lagging indexer must not take",
        "  the whole read API offline. A lagging read replica does fail it (past",
        "  `api.read_replica_max_lag_s`): the other API processes, reading other replicas or",
        "  the primary, answer instead.",
        "- Relay `GET /healthz`: the process is up (liveness). Never touches the database, so an",
        "  outage (which the relay rides out by itself) does not get it restarted.",
        "- Relay `GET /readyz`: 200 only when the database answers a query within 2 s; 503 with",
        "  the reason otherwise (submissions are then refused 503 `database_unavailable`).",
        "- Metadata workers, on `metadata.metrics_port`: `/metrics`, `/healthz` (liveness, no",
        "  database) and `/readyz` (200 only when the database answers within 2 s).",
        "- Webhook sender, on `webhooks.metrics_port`: `/metrics`, `/healthz` (liveness, no",
        "  database) and `/readyz` (200 only while it holds its database connections).",
        "- Relay, metadata workers and webhook sender export `recchain_relay_database_up` /",
        "  `recchain_metadata_database_up` / `recchain_webhooks_database_up` (0 during an",
        "  outage) and log one line when the database goes away and one when it is back.",
        "- Indexer, on the observer port (`indexer.listen_port`): `GET /healthz` (liveness: fails",
        "  only for a process stuck in a request) and `GET /readyz` (200 only on the leader, the",
        "  holder of the advisory lock, while its data connection answers; a standby and a",
        "  leader that cannot write answer 503, as they answer the node's pushes).",
        "  `recchain_indexer_database_up` is 0 while the leader's data connection is down.",
        "",
        "Every listener binds loopback (`127.0.0.1`) unless its host setting says otherwise",
        "(`api.host`, `relay.host`, `indexer.listen_host`, `indexer.metrics_host`,",
        "`metadata.metrics_host`, `webhooks.metrics_host`); the container env files and the",
        "Kubernetes ConfigMap set `0.0.0.0` where another container or the kubelet must reach",
        "them.",
    ]
    return "\n".join(lines)


def splice(readme: str) -> str:
    """The README with its generated settings section replaced by the current one."""
    head, sep, rest = readme.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"README.md lacks the markers {BEGIN!r} ... {END!r}")
    return f"{head}{BEGIN}\n{render()}\n{END}{tail}"


if __name__ == "__main__":
    current = README.read_text()
    updated = splice(current)
    if "--check" in sys.argv[1:]:
        stale = "README.md settings table is stale: run python -m ops.configdoc"
        sys.exit(0 if updated == current else stale)
    README.write_text(updated)
