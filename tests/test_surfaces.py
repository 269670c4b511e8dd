"""What the roles show is true: each process exports only its own metrics, the indexer's tip
gauge is the database's tip from the start, and metrics listen on loopback unless told
otherwise. Real `recchain` processes on free loopback ports against a real database."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from db.session import to_libpq_url
from infra.config import PROJECT_ROOT
from ops.bench.e2e import free_port
from ops.bench.tls import tls
from tests.clirun import RECCHAIN, recchain_env, run

DEMO = PROJECT_ROOT / "tests" / "fixtures" / "demo"


@contextlib.contextmanager
def _process(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [*RECCHAIN, *argv],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _get(proc: subprocess.Popen[str], url: str, deadline_s: float = 120) -> str:
    deadline = time.monotonic() + deadline_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]
        with contextlib.suppress(httpx.HTTPError):
            resp = httpx.get(url, timeout=5, verify=tls())
            if resp.status_code == 200:
                return resp.text
        assert time.monotonic() < deadline, f"{url} never answered"
        time.sleep(0.2)


def _families(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}


def _sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_the_api_exports_only_its_own_metrics(db_url: str) -> None:
    port = free_port()
    env = recchain_env(DATABASE_URL=to_libpq_url(db_url), RECCHAIN_API__PORT=str(port))
    with _process(["serve"], env) as proc:
        families = _families(_get(proc, f"http://127.0.0.1:{port}/metrics"))
    ours = {f for f in families if f.startswith("recchain_")}
    assert any(f.startswith("recchain_api_") for f in ours)
    foreign = {
        f for f in ours if f.startswith(("recchain_indexer", "recchain_relay", "recchain_metadata"))
    }
    assert foreign == set()


@pytest.mark.skipif(not (DEMO / "chain.tsv").is_file(), reason="no bundled demo chain")
def test_the_indexer_reports_the_database_tip_at_once_on_loopback_only(db_url: str) -> None:
    tip = json.loads((DEMO / "manifest.json").read_text())["canonical_tip"]["height"]
    env = recchain_env(DATABASE_URL=to_libpq_url(db_url))
    replay = run("replay", "--quiet", str(DEMO / "chain.tsv"), env=env, timeout=300)
    assert replay.returncode == 0, replay.stderr
    metrics_port = free_port()
    env |= {
        "RECCHAIN_INDEXER__METRICS_PORT": str(metrics_port),
        "RECCHAIN_INDEXER__LISTEN_PORT": str(free_port()),
    }
    with _process(["index"], env) as proc:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        deadline = time.monotonic() + 120
        while _sample(_get(proc, url), "recchain_indexer_leader") != 1.0:
            assert time.monotonic() < deadline, "the indexer never led"
            time.sleep(0.2)
        # No block has arrived since the start: the gauges come from the database (the tip
        # block's time too, so a chain that stalls before the restart still shows its lag).
        text = _get(proc, url)
        assert _sample(text, "recchain_indexer_tip_height") == tip
        assert (_sample(text, "recchain_indexer_lag_seconds") or 0) > 0
        # Bound to 127.0.0.1 (the default indexer.metrics_host), not every address: another
        # loopback address of this machine is refused.
        with socket.socket() as sock:
            sock.settimeout(5)
            assert sock.connect_ex(("127.0.0.2", metrics_port)) != 0


def test_a_clients_typo_is_answered_but_not_logged_as_an_error(db_url: str) -> None:
    port = free_port()
    env = recchain_env(
        DATABASE_URL=to_libpq_url(db_url), RECCHAIN_API__PORT=str(port), RECCHAIN_LOG_LEVEL="DEBUG"
    )
    base = f"http://127.0.0.1:{port}"
    with _process(["serve"], env) as proc:
        _get(proc, f"{base}/healthz")
        for query in ("{ _metaa { block { height } } }", "{ _meta { block { height } "):
            body = httpx.post(f"{base}/graphql", json={"query": query}, timeout=30).json()
            assert body["errors"], body  # the client is told
    assert proc.stderr is not None
    log = proc.stderr.read()
    assert "Cannot query field '_metaa'" in log  # logged, at a lower level
    assert [line for line in log.splitlines() if " ERROR " in line] == []
    assert "Traceback" not in log
