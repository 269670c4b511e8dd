"""Real processes for the relay's crash and failover tests: `recchain relay`, `recchain index`
and the devnet node (contracts/devnet/node.mjs), each on free loopback ports, each killed in the
test's teardown.

The devnet node logs one line per `POST /v2/transactions` it receives (`broadcast <txid>: 200`
or `broadcast <txid>: 400 <reason>`) and one per transaction it mines (`mined 0x<txid> (fn) at
height H: status`); `DevnetProcess` counts them, so a test can assert what reached the node and
what it admitted, from the node's own record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from infra.config import PROJECT_ROOT

CONTRACTS = PROJECT_ROOT / "contracts"
NODE_SCRIPT = CONTRACTS / "devnet" / "node.mjs"
# A node that replays no scenario runs few transactions: compiling the simnet's WASM with V8's
# baseline compiler only (no optimising tier-up in background threads) halves the CPU of its
# boot (3.9 -> 2.2 CPU-s) and boots sooner; the contracts execute the same.
NODE_FLAGS = ("--liftoff-only",)
DEPLOYER = "ST1PQHQKV0RJXZFY1DGX8MNSNYVE3VGZJSRTPGZGM"
RELAY_READY = "relay listening on "
_BROADCAST = re.compile(r"\[devnet\] broadcast ([0-9a-f]{64}): (\d{3})(?: (\w+))?")
_MINED = re.compile(r"\[devnet\] mined 0x([0-9a-f]{64}) \(.*\) at height (\d+): (\w+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def needs_node() -> None:
    if shutil.which("node") is None or not NODE_SCRIPT.exists():
        pytest.skip("Node.js is not installed: the devnet node and the signer need it")


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], what: str, limit: float = 60.0
) -> None:
    """Poll a condition; the limit only stops a broken run from hanging forever."""
    deadline = asyncio.get_running_loop().time() + limit
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


@dataclass
class DevnetProcess:
    """The devnet node as a child process, with what it logged about each txid."""

    url: str
    proc: asyncio.subprocess.Process
    posts: Counter[str] = field(default_factory=Counter)  # txid -> POSTs received
    answers: dict[str, list[str]] = field(default_factory=dict)  # txid -> "200" / "400 BadNonce"
    mined: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # txid -> [(h, status)]
    tail: list[str] = field(default_factory=list)

    def _line(self, line: str) -> None:
        self.tail.append(line)
        del self.tail[:-200]
        if m := _BROADCAST.search(line):
            txid, status, reason = m.groups()
            self.posts[txid] += 1
            self.answers.setdefault(txid, []).append(f"{status} {reason}" if reason else status)
        elif m := _MINED.search(line):
            self.mined.setdefault(m.group(1), []).append((int(m.group(2)), m.group(3)))


@asynccontextmanager
async def devnet_process(
    *, observer: str | None = None, txindex: bool = True
) -> AsyncIterator[DevnetProcess]:
    """The devnet node from the deployments only (`--scenario none`), pushing its blocks to
    `observer` (retried until it answers 200, as stacks-node does)."""
    needs_node()
    port = free_port()
    args = ["node", *NODE_FLAGS, str(NODE_SCRIPT), "--port", str(port), "--scenario", "none"]
    args += ["--observer", observer] if observer else ["--history", "silent"]
    args += [] if txindex else ["--no-txindex"]
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=CONTRACTS, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    node = DevnetProcess(f"http://127.0.0.1:{port}", proc)
    assert proc.stdout is not None
    ready = asyncio.Event()

    async def read() -> None:
        assert proc.stdout is not None
        while raw := await proc.stdout.readline():
            line = raw.decode(errors="replace").rstrip()
            node._line(line)
            if "listening on" in line:
                ready.set()

    reader = asyncio.create_task(read())
    try:
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({waiter, reader}, timeout=300, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        assert ready.is_set(), "devnet node did not start:\n" + "\n".join(node.tail)
        yield node
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await reader


async def sign_call(
    call: str, args: list[str], *, sender: str, nonce: int, fee: int = 2000
) -> tuple[str, str]:
    """A contract call signed by @stacks/transactions with a devnet key: (hex, 0x txid)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tx.json"
        proc = await asyncio.create_subprocess_exec(
            "node", "vectors/relay.mjs", "--call", call, "--args", json.dumps(args),
            "--sender", sender, "--nonce", str(nonce), "--fee", str(fee), "--out", str(out),
            cwd=CONTRACTS, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await proc.communicate()
        assert proc.returncode == 0, output.decode(errors="replace")
        doc = json.loads(out.read_text())
    return doc["hex"], "0x" + doc["txid"].removeprefix("0x")


def uint_cv(n: int) -> str:
    return "01" + n.to_bytes(16, "big").hex()


def _env(db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECCHAIN_")}
    env.pop("DATABASE_URL", None)
    env.update(RECCHAIN_DATABASE_URL=db_url, RECCHAIN_NETWORK="testnet", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


@dataclass
class RelayProcess:
    url: str
    pid: int
    lines: list[str]


@asynccontextmanager
async def relay_process(
    db_url: str, node_url: str, *, log_level: str = "WARNING", **env: str
) -> AsyncIterator[RelayProcess]:
    """`recchain relay` on a free port. Killed with SIGKILL on exit (if still running)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recchain.cli", "relay", "--port", "0", "--node-url", node_url,
        cwd=PROJECT_ROOT, env=_env(db_url, RECCHAIN_LOG_LEVEL=log_level, **env),
        stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        while True:
            raw = await asyncio.wait_for(proc.stderr.readline(), 120)
            assert raw, "relay exited before listening:\n" + "".join(lines)
            line = raw.decode(errors="replace")
            lines.append(line)
            if RELAY_READY in line:
                break
    except BaseException:
        proc.kill()
        await proc.wait()
        raise

    async def drain() -> None:  # an unread pipe would block the relay's logging
        assert proc.stderr is not None
        while raw := await proc.stderr.readline():
            lines.append(raw.decode(errors="replace"))

    drainer = asyncio.create_task(drain())
    base = line[line.index(RELAY_READY) + len(RELAY_READY) :].strip()
    try:
        yield RelayProcess(base, proc.pid, lines)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
        await drainer


@asynccontextmanager
async def index_process(db_url: str, port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    """`recchain index --source observer` listening on `port`; killed on exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recchain.cli", "index", "--source", "observer",
        "--listen", f"127.0.0.1:{port}",
        cwd=PROJECT_ROOT, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env=_env(db_url, RECCHAIN_INDEXER__METRICS_PORT=str(free_port()),
                 RECCHAIN_LOG_LEVEL="WARNING"),
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        with contextlib.suppress(ProcessLookupError):
            await proc.wait()
