"""Hostile submissions against a real `recchain relay` process on loopback: refused with their
code, bounded in the audit log, and the relay keeps answering `/healthz` meanwhile."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.config import PROJECT_ROOT
from ops.bench import attacks

RESPONSIVE_S = 3.0
BODY_TIMEOUT_S = 3.0


@pytest.fixture
def relay_process(db_url: str, tmp_path: Path) -> Iterator[attacks.Server]:
    server = attacks.start(
        "relay",
        ["relay", "--host", "127.0.0.1"],
        db_url,
        PROJECT_ROOT,
        tmp_path,
        {
            "RECCHAIN_RELAY__API_KEYS": '["attack-key"]',
            "RECCHAIN_RELAY__NODE_URL": f"http://127.0.0.1:{attacks.free_port()}",
            "RECCHAIN_LOG_JSON": "true",
            "RECCHAIN_HTTP__BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        },
    )
    try:
        yield server
    finally:
        server.stop()


async def test_a_large_undecodable_body_is_audited_bounded_without_stalling(
    relay_process: attacks.Server,
) -> None:
    # Before: the audit line carried the whole hex and scrubbing it was quadratic.
    result = await attacks.log_relay(relay_process, 400)
    assert result["status"] == 400 and result["code"] == "undecodable", result
    assert result["healthz_failures"] == 0
    assert result["healthz_max_s"] < RESPONSIVE_S, result
    assert result["log_bytes"] < 20_000, result
    audits = [
        json.loads(json.loads(line)["msg"])
        for line in relay_process.log_path.read_text().splitlines()
        if '"recchain.relay.audit"' in line
    ]
    (audit,) = audits
    assert audit["outcome"] == "rejected" and audit["error"] == "undecodable"
    assert audit["bytes"] == 400 * 512 and audit["tx_truncated"] is True
    assert len(audit["tx"]) == 2 * 2048 and "characters cut" not in audit["tx"]


async def test_slow_bodies_release_the_clients_slots_at_the_body_deadline(
    relay_process: attacks.Server,
) -> None:
    # 40 bodies sent a byte a second from one client (the relay allows it 32 in flight).
    # Before: they held its slots until they stopped; every further submission was
    # `too_many_concurrent`.
    result = await attacks.slow_body_relay(relay_process, 40, 30.0)
    assert result["last_code"] not in (None, "too_many_concurrent"), result
    assert result["answer_s"] < 2.0 + BODY_TIMEOUT_S + 6.0, result
    assert result["healthz_failures"] == 0 and result["healthz_max_s"] < RESPONSIVE_S, result


@pytest.mark.parametrize("trusted", [False, True])
async def test_forwarded_for_counts_only_from_a_trusted_proxy(
    db_url: str, tmp_path: Path, trusted: bool
) -> None:
    extra = {
        "RECCHAIN_RELAY__NODE_URL": f"http://127.0.0.1:{attacks.free_port()}",
        "RECCHAIN_RELAY__RATE_LIMIT_PER_MINUTE": "10",
    }
    if trusted:
        extra["RECCHAIN_HTTP__TRUSTED_PROXIES"] = '["127.0.0.1/32"]'
    relay = attacks.start(
        "relay", ["relay", "--host", "127.0.0.1"], db_url, PROJECT_ROOT, tmp_path, extra
    )
    try:
        # Before: uvicorn believed X-Forwarded-For from 127.0.0.1 whatever the settings, so
        # 300 spoofed addresses were 300 clients and none was limited.
        result = await attacks.relay_spoofed_xff(relay, 30)
    finally:
        relay.stop()
    limited = result["codes"].get("rate_limited", 0)
    if trusted:  # each forwarded address is its own client, within its 10 a minute
        assert limited == 0, result
    else:  # the header is ignored: one client
        assert limited >= 15, result
    assert result["healthz_max_s"] < RESPONSIVE_S, result
