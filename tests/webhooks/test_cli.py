"""`recchain webhooks` as an operator runs it: real processes against a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from db.session import to_libpq_url
from infra.config import PROJECT_ROOT
from ops.bench.chaingen import Chain, to_requests
from tests.indexer.helpers import query, run_requests


def cli(db_url: str, *args: str, allow: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DATABASE_URL=to_libpq_url(db_url), RECCHAIN_LOG_LEVEL="WARNING")
    if allow:
        env["RECCHAIN_WEBHOOKS__ALLOW_INTERNAL_HOSTS"] = '["127.0.0.1"]'
    return subprocess.run(
        [sys.executable, "-m", "recchain.cli", "webhooks", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_ROOT,
    )


def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


async def test_operator_cli_round_trip(db_url: str) -> None:
    added = _json(
        cli(
            db_url, "add", "http://127.0.0.1:9/hook", "--json",
            "--filter", "block",
            "--filter", 'retirement:{"beneficiaryName_contains_nocase": "oslo"}',
            "--filter", '{"kind": "listing", "changes": ["created"]}',
            "--description", "ops test",
        )
    )  # fmt: skip
    assert added["secret"].startswith("whsec_") and added["delivery"] == "tip"
    assert [f["kind"] for f in added["filters"]] == ["block", "retirement", "listing"]
    final = _json(
        cli(db_url, "add", "http://127.0.0.1:9/f", "--final", "--filter", "block", "--json")
    )
    assert final["delivery"] == "final"
    await run_requests(db_url, [[r] for r in to_requests(Chain(seed=61).grow(None, 3, "m"))])
    listed = _json(cli(db_url, "list", "--json"))
    assert [e["id"] for e in listed] == [added["id"], final["id"]]
    assert listed[0]["pending"] >= 3 and added["secret"] not in json.dumps(listed)
    text_list = cli(db_url, "list")
    assert "filters: block; retirement" in text_list.stdout
    history = _json(cli(db_url, "deliveries", str(added["id"]), "--json", "--limit", "2"))
    assert len(history) == 2 and history[0]["seq"] > history[1]["seq"]
    one = _json(cli(db_url, "attempts", str(added["id"]), history[0]["event_id"], "--json"))
    assert one["event_id"] == history[0]["event_id"] and one["attempts"] == []
    rotated = _json(cli(db_url, "rotate-secret", str(added["id"]), "--overlap", "60", "--json"))
    assert rotated["secret"] != added["secret"]
    assert cli(db_url, "pause", str(added["id"])).returncode == 0
    assert _json(cli(db_url, "list", "--json"))[0]["status"] == "paused"
    # Nothing dead or delivered yet: a redelivery has nothing to queue (exit 1).
    assert cli(db_url, "redeliver", str(added["id"]), "--dead").returncode == 1
    assert cli(db_url, "remove", str(added["id"])).returncode == 0
    assert query(
        db_url, "SELECT count(*) FROM webhook_events WHERE endpoint_id = %s", added["id"]
    ) == [(0,)]


def test_bad_input_is_a_clear_error_and_stores_nothing(db_url: str) -> None:
    cases = [
        (("add", "http://127.0.0.1:9/x", "--filter", 'listing:{"colour": 1}'), 2,
         "filters[0].where.colour: unknown field"),
        (("add", "http://127.0.0.1:9/x", "--filter", "listing:{oops"), 2, "not JSON"),
        (("add", "gopher://x/", "--filter", "block"), 2, "http:// or https://"),
        (("remove", "999"), 1, "no webhook endpoint 999"),
        (("redeliver", "999", "--dead"), 1, "no webhook endpoint 999"),
        (("rotate-secret", "999"), 1, "no webhook endpoint 999"),
    ]  # fmt: skip
    for args, code, words in cases:
        proc = cli(db_url, *args)
        assert proc.returncode == code, (args, proc.stderr)
        assert words in proc.stderr, (args, proc.stderr)
    refused = cli(db_url, "add", "http://127.0.0.1:9/x", "--filter", "block", allow=False)
    assert refused.returncode == 2 and "loopback" in refused.stderr
    assert query(db_url, "SELECT count(*) FROM webhook_endpoints") == [(0,)]
