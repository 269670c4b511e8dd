"""`recchain dev` (what `make dev` runs) starts every role and answers GraphQL from the bundled
chain. Real processes on free loopback ports against a fresh database."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from ops.bench.e2e import free_port
from recchain.config import PROJECT_ROOT

DEMO = PROJECT_ROOT / "tests" / "fixtures" / "demo"


@pytest.mark.skipif(not (DEMO / "chain.tsv").is_file(), reason="no bundled demo chain")
def test_dev_serves_meta_and_resolved_metadata(db_url: str) -> None:
    manifest = json.loads((DEMO / "manifest.json").read_text())
    gateway = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "RECCHAIN_API__PORT": str(free_port()),
        "RECCHAIN_INDEXER__LISTEN_PORT": str(free_port()),
        "RECCHAIN_INDEXER__METRICS_PORT": str(free_port()),
        "RECCHAIN_METADATA__METRICS_PORT": str(free_port()),
        "RECCHAIN_METADATA__GATEWAYS": json.dumps([f"http://127.0.0.1:{gateway}"]),
        "RECCHAIN_RELAY__PORT": str(free_port()),
        "RECCHAIN_RELAY__METRICS_PORT": str(free_port()),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "recchain.cli", "dev", "--no-devnet", "--exit-after", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=PROJECT_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "REC-Chain is running" in out
    assert "/graphql" in out
    meta = re.search(r'-> (\{"data": \{"_meta".*\})', out)
    assert meta, out
    block = json.loads(meta.group(1))["data"]["_meta"]["block"]
    tip = manifest["canonical_tip"]
    assert block["height"] == tip["height"]
    assert block["hash"] == tip["index_block_hash"]
    resolved = re.search(r'-> (\{"data": \{"certificates".*\})', out)
    assert resolved, out
    node = json.loads(resolved.group(1))["data"]["certificates"]["edges"][0]["node"]
    assert node["metadata"] is not None, "the demo's IPFS metadata was not resolved"
    assert node["metadata"]["cid"].startswith("bafkrei")
