"""`recchain dev` (what `make dev` runs): real processes on free loopback ports against a fresh
database. It starts every role and answers GraphQL from the bundled chain; every URL it prints
answers; the devnet node's URL comes once the node answers; a role that dies makes it fail;
a port in use is named before anything starts; `--stop-db` stops the embedded PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from db.session import to_libpq_url
from infra.config import PROJECT_ROOT
from ops.bench.e2e import free_port
from ops.bench.tls import tls
from tests.clirun import RECCHAIN, error_lines, recchain_env, run

DEMO = PROJECT_ROOT / "tests" / "fixtures" / "demo"
HAVE_DEVNET = bool(shutil.which("node")) and (PROJECT_ROOT / "contracts" / "node_modules").is_dir()


def _ports_env(db_url: str) -> dict[str, str]:
    return recchain_env(
        DATABASE_URL=to_libpq_url(db_url),
        RECCHAIN_API__PORT=str(free_port()),
        RECCHAIN_INDEXER__LISTEN_PORT=str(free_port()),
        RECCHAIN_INDEXER__METRICS_PORT=str(free_port()),
        RECCHAIN_METADATA__METRICS_PORT=str(free_port()),
        RECCHAIN_METADATA__GATEWAYS=json.dumps([f"http://127.0.0.1:{free_port()}"]),
        RECCHAIN_RELAY__PORT=str(free_port()),
        RECCHAIN_RELAY__NODE_URL=f"http://127.0.0.1:{free_port()}",
        RECCHAIN_WEBHOOKS__METRICS_PORT=str(free_port()),
    )


def _lines(stream: IO[str]) -> queue.Queue[str | None]:
    out: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            out.put(line.rstrip("\n"))
        out.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return out


def _until(lines: queue.Queue[str | None], seen: list[str], pattern: str, within: float) -> str:
    deadline = time.monotonic() + within
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
        except queue.Empty:
            line = ""
        if line is None:
            raise AssertionError(f"exited before {pattern!r}:\n" + "\n".join(seen[-60:]))
        if line:
            seen.append(line)
            if re.search(pattern, line):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} within {within} s:\n" + "\n".join(seen[-60:]))


def _printed_urls(seen: list[str]) -> list[tuple[str, str]]:
    """(method, url) of every address in the 'REC-Chain is running' block; method TCP for a
    host:port endpoint (the observer, which a stacks-node config names without a scheme)."""
    start = seen.index("REC-Chain is running:")
    out: list[tuple[str, str]] = []
    for line in seen[start + 1 :]:
        if not line.strip() or line.strip().startswith("{"):
            break
        if line.split()[0] == "database":
            continue
        for method, url in re.findall(r"(POST )?(https?://\S+)", line):
            out.append(("POST" if method else "GET", url))
        endpoint = re.match(r"\s+indexer\s+(\S+:\d+)\s", line)
        if endpoint:
            out.append(("TCP", endpoint.group(1)))
    return out


def _answers(method: str, url: str) -> bool:
    if method == "TCP":
        host, port = url.rsplit(":", 1)
        with socket.socket() as sock:
            sock.settimeout(5)
            return sock.connect_ex((host, int(port))) == 0
    with contextlib.suppress(httpx.HTTPError):
        if method == "POST":
            return httpx.post(url, json={}, timeout=10, verify=tls()).status_code < 500
        return httpx.get(url, timeout=10, verify=tls()).status_code == 200
    return False


def _child(parent: int, word: str) -> int:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    for pid in children:
        # A whole argument (the role's sub-command), not a substring: the checkout's path may
        # contain the word too.
        if word in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0"):
            return int(pid)
    raise AssertionError(f"no child of {parent} runs {word!r}")


@pytest.mark.skipif(not (DEMO / "chain.tsv").is_file(), reason="no bundled demo chain")
def test_dev_runs_every_role_prints_only_urls_that_answer_and_fails_when_a_role_dies(
    db_url: str, tmp_path: Path
) -> None:
    manifest = json.loads((DEMO / "manifest.json").read_text())
    argv = [*RECCHAIN, "dev"]
    # The devnet node with no scenario to replay (seconds, not minutes): its URL must still
    # come only once it answers.
    argv += ["--devnet-scenario", "none"] if HAVE_DEVNET else ["--no-devnet"]
    log = (tmp_path / "stderr.log").open("w+")
    proc = subprocess.Popen(
        argv,
        env=_ports_env(db_url),
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,
    )
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        lines = _lines(proc.stdout)
        _until(lines, seen, r"^Press Ctrl-C to stop\.", 600)
        out = "\n".join(seen)
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

        printed = _printed_urls(seen)
        assert {m for m, _ in printed} >= {"GET", "POST", "TCP"}
        # api, indexer, metadata, relay, webhooks
        assert sum(u.endswith("/metrics") for _, u in printed) == 5
        if HAVE_DEVNET:
            # Not in the block above: printed only once the node answers.
            assert not any("/v2/info" in u for _, u in printed)
            # While it replays, progress (none if it already answered when the other roles
            # were up: with no scenario it may); then its URL, after every progress line.
            ready = _until(lines, seen, r"devnet node ready: ", 300)
            progress = [i for i, x in enumerate(seen) if "the devnet node is replaying" in x]
            assert all(i < seen.index(ready) for i in progress), seen
            assert all(re.search(r"replaying its scenario \(\d+ s\)", seen[i]) for i in progress)
            printed += [("GET", re.search(r"(http://\S+)", ready).group(1))]  # type: ignore[union-attr]
        late = [f"{m} {u}" for m, u in printed if not _answers(m, u)]
        assert late == []

        os.kill(_child(proc.pid, "relay"), signal.SIGKILL)
        assert proc.wait(timeout=120) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # any role left behind
    log.seek(0)
    errors = error_lines(log.read())
    assert errors == [
        f"error: relay exited with {-signal.SIGKILL} (its output is above); stopped the other roles"
    ]


def test_dev_names_a_port_in_use_and_its_setting_before_starting_anything(db_url: str) -> None:
    env = _ports_env(db_url)
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env["RECCHAIN_RELAY__PORT"] = str(port)
        # A database that does not answer: the ports are checked before it is touched.
        env["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
        proc = run("dev", "--no-devnet", env=env, timeout=120)
    assert proc.returncode != 0
    assert error_lines(proc.stderr) == [
        f"error: port {port} on 127.0.0.1 is already in use, so the relay cannot listen there: "
        "stop the other process or move it with RECCHAIN_RELAY__PORT=PORT (relay.port)"
    ]
    assert "REC-Chain is running" not in proc.stdout
    assert "preparing the database" not in proc.stdout


def _postmaster(data_dir: Path) -> int:
    return int((data_dir / "pg" / "postmaster.pid").read_text().splitlines()[0])


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data folder outside pytest's: run as root, the embedded server runs as another user
    (pgserver) and must reach it, and pytest makes /tmp/pytest-of-root private again whenever
    any pytest session on the machine starts."""
    path = Path(tempfile.mkdtemp(prefix="recchain-stop-db-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(
    not __import__("importlib.util").util.find_spec("pgserver"), reason="no embedded PostgreSQL"
)
def test_stop_db_stops_the_embedded_postgresql(data_dir: Path) -> None:
    env = recchain_env(RECCHAIN_DATA_DIR=str(data_dir))
    started = run("migrate", env=env, timeout=300)  # starts the embedded server, which stays up
    assert started.returncode == 0, started.stderr
    pid = _postmaster(data_dir)
    os.kill(pid, 0)  # running after the command exited
    stopped = run("dev", "--stop-db", env=env, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped the embedded PostgreSQL (pid {pid})" in stopped.stdout
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    again = run("dev", "--stop-db", env=env, timeout=120)
    assert "no embedded PostgreSQL running" in again.stdout
