"""`recchain dev`: the whole system on one machine with embedded defaults.

It starts (or reuses) the embedded PostgreSQL, migrates it, indexes the bundled devnet chain,
then runs every role as its own child process — exactly the processes a deployment runs — and
prints where each one listens. Roles whose parts are not installed are skipped with a note.
Ctrl-C stops them all.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from db.migrate import upgrade
from db.session import database_url, to_libpq_url
from recchain.config import PROJECT_ROOT, get_settings

DEMO_DIR = PROJECT_ROOT / "tests" / "fixtures" / "demo"


@dataclass
class Role:
    name: str
    argv: list[str]
    url: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _recchain(*args: str) -> list[str]:
    return [sys.executable, "-m", "recchain.cli", *args]


def _wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError as exc:
            # Any HTTP answer means the server is up; only 5xx means it is not ready yet.
            if exc.code < 500:
                return True
            time.sleep(0.3)
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    return False


META_QUERY = "{ _meta { block { height hash } } }"
METADATA_QUERY = "{ certificates(first: 1) { edges { node { tokenId metadata { name cid } } } } }"


def _graphql(graphql_url: str, query: str) -> dict[str, object] | None:
    body = json.dumps({"query": query}).encode()
    req = urllib.request.Request(
        graphql_url, data=body, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return dict(json.load(resp))
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _show_resolved_metadata(graphql_url: str, timeout: float = 60.0) -> None:
    """Wait for the metadata workers to resolve the first certificate's IPFS document, so the
    demo shows a verified SIP-016 name coming back through GraphQL."""
    deadline = time.monotonic() + timeout
    answer: dict[str, object] | None = None
    while time.monotonic() < deadline:
        answer = _graphql(graphql_url, METADATA_QUERY)
        if answer is not None and '"metadata": null' not in json.dumps(answer):
            break
        time.sleep(1.0)
    if answer is not None:
        print(f"  {METADATA_QUERY}\n  -> {json.dumps(answer)}")


def _roles(args: argparse.Namespace) -> list[Role]:
    s = get_settings()
    roles: list[Role] = []
    observer = f"{s.indexer.listen_host}:{s.indexer.listen_port}"
    if _have("indexer.observer") or _have("recchain.commands.index_cmd"):
        roles.append(
            Role(
                "indexer",
                _recchain("index", "--source", "observer", "--listen", observer),
                f"http://{observer}  (stacks-node event observer)",
            )
        )
    ipfs_dir = DEMO_DIR / "ipfs"
    gateway = s.metadata.gateways[0] if s.metadata.gateways else "http://127.0.0.1:8080"
    if _have("indexer.metadata.devgateway") and ipfs_dir.is_dir():
        port = gateway.rsplit(":", 1)[-1].strip("/")
        roles.append(
            Role(
                "ipfs-gateway",
                [
                    sys.executable,
                    "-m",
                    "indexer.metadata.devgateway",
                    "--dir",
                    str(ipfs_dir),
                    "--port",
                    port,
                ],
                f"{gateway}/ipfs/<cid>  (local IPFS gateway with the demo metadata)",
            )
        )
    if _have("recchain.commands.metadata_cmd"):
        roles.append(Role("metadata", _recchain("metadata", "work", "--workers", "4")))
    if _have("graphql_api.app"):
        roles.append(
            Role(
                "api",
                _recchain("serve", "--host", s.api.host, "--port", str(s.api.port)),
                f"http://{s.api.host}:{s.api.port}/graphql  (GraphQL + GraphiQL)",
            )
        )
    node_script = PROJECT_ROOT / "contracts" / "devnet" / "node.mjs"
    if not args.no_devnet and node_script.is_file() and shutil.which("node"):
        node_port = s.relay.node_url.rsplit(":", 1)[-1].strip("/")
        roles.append(
            Role(
                "devnet",
                ["node", str(node_script), "--port", node_port, "--observer", f"http://{observer}"]
                + (["--activity"] if args.activity else []),
                f"{s.relay.node_url}/v2/info  (devnet stacks-node RPC)",
            )
        )
    if _have("recchain.commands.relay_cmd"):
        roles.append(
            Role(
                "relay",
                _recchain("relay", "--host", s.relay.host, "--port", str(s.relay.port)),
                f"http://{s.relay.host}:{s.relay.port}/v1/transactions  (transaction relay)",
            )
        )
    return roles


def _dev(args: argparse.Namespace) -> int:
    url = database_url()
    child_env = dict(os.environ)
    child_env["DATABASE_URL"] = to_libpq_url(url)
    print("REC-Chain dev: preparing the database ...", flush=True)
    upgrade(url)

    chain = Path(args.chain) if args.chain else DEMO_DIR / "chain.tsv"
    if chain.is_file() and _have("recchain.commands.index_cmd"):
        print(f"REC-Chain dev: indexing the bundled chain {chain.relative_to(PROJECT_ROOT)} ...")
        subprocess.run(_recchain("replay", str(chain)), env=child_env, check=True)

    procs: list[tuple[Role, subprocess.Popen[bytes]]] = []
    for role in _roles(args):
        proc = subprocess.Popen(role.argv, env={**child_env, **role.env}, cwd=PROJECT_ROOT)
        procs.append((role, proc))

    s = get_settings()
    graphql_url = f"http://{s.api.host}:{s.api.port}/graphql"
    if any(r.name == "api" for r, _ in procs):
        print("REC-Chain dev: waiting for the API ...", flush=True)
        if not _wait_http(f"http://{s.api.host}:{s.api.port}/healthz", 180):
            print("REC-Chain dev: the API did not answer within 180 s", file=sys.stderr)
    print("\nREC-Chain is running:")
    print(f"  database        {child_env['DATABASE_URL']}")
    for role, _ in procs:
        if role.url:
            print(f"  {role.name:<15} {role.url}")
    metrics = [
        f"http://{s.api.host}:{s.api.port}/metrics (api)",
        f"http://127.0.0.1:{s.indexer.metrics_port}/metrics (indexer)",
        f"http://127.0.0.1:{s.metadata.metrics_port}/metrics (metadata)",
        f"http://127.0.0.1:{s.relay.metrics_port}/metrics (relay)",
    ]
    print("  metrics         " + "\n                  ".join(metrics))
    meta = _graphql(graphql_url, META_QUERY)
    if meta is not None:
        print(f"\n  {META_QUERY}\n  -> {json.dumps(meta)}")
        _show_resolved_metadata(graphql_url)
    print("\nPress Ctrl-C to stop.", flush=True)

    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping:
            for role, proc in procs:
                if proc.poll() is not None:
                    print(
                        f"REC-Chain dev: {role.name} exited with {proc.returncode}", file=sys.stderr
                    )
                    stopping = True
            if args.exit_after is not None and not stopping:
                time.sleep(args.exit_after)
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for _, proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for _, proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dev", help="run the whole system locally on embedded defaults")
    p.add_argument("--chain", help="observer TSV to index first (default: the bundled demo)")
    p.add_argument("--no-devnet", action="store_true", help="do not start the devnet node")
    p.add_argument("--activity", action="store_true", help="synthetic market activity on devnet")
    p.add_argument(
        "--exit-after", type=float, default=None, help=argparse.SUPPRESS
    )  # used by the smoke test: start everything, check, stop
    p.set_defaults(handler=_dev)
