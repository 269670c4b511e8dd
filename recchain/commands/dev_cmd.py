"""`recchain dev`: the whole system on one machine with embedded defaults.

It checks every port it needs first (naming a port in use and the setting that moves it),
starts (or reuses) the embedded PostgreSQL, migrates it, indexes the bundled devnet chain, then
runs every role as its own child process (exactly the processes a deployment runs) and, once
each answers, prints where it listens. The devnet node replays its scenario before it listens:
its URL is printed when it answers, with progress meanwhile. If any role exits, the others are
stopped and the command exits non-zero. Ctrl-C stops them all. `--stop-db` stops the embedded
PostgreSQL, which otherwise keeps running between runs so the next start is quick.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from recchain.commands.failures import CommandError

if TYPE_CHECKING:
    from infra.config import Settings
    from infra.listen import Listener

PROGRESS_EVERY_S = 10.0
LOOPBACK = '["127.0.0.1", "::1", "localhost"]'
START_TIMEOUT_S = 180.0
DEVNET_TIMEOUT_S = 600.0


@dataclass
class Role:
    name: str
    argv: list[str]
    # What `recchain dev` prints for it, and the URL that must answer first (None: only alive).
    shown: str | None = None
    ready_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    ready: bool = False


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _recchain(*args: str) -> list[str]:
    return [sys.executable, "-m", "recchain.cli", *args]


def _answers(url: str) -> bool:
    """True once `url` gives any HTTP answer but a 5xx (an answer means the server is up)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (urllib.error.URLError, OSError):
        return False


def _port_of(url: str, default: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default


META_QUERY = "{ _meta { block { height hash } } }"
METADATA_QUERY = "{ certificates(first: 1) { edges { node { tokenId metadata { name cid } } } } }"


def _graphql(graphql_url: str, query: str) -> dict[str, object] | None:
    import urllib.error
    import urllib.request

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


def _demo_dir() -> Path:
    from infra.config import PROJECT_ROOT

    return PROJECT_ROOT / "tests" / "fixtures" / "demo"


def _plan(args: argparse.Namespace, s: Settings) -> tuple[list[Role], list[Listener]]:
    """The roles to start and every address they will listen on."""
    from infra.config import PROJECT_ROOT
    from infra.listen import Listener

    roles: list[Role] = []
    listeners: list[Listener] = []
    ix = s.indexer
    observer = f"{ix.listen_host}:{ix.listen_port}"
    metrics_index = f"http://{ix.metrics_host}:{ix.metrics_port}/metrics"
    roles.append(
        Role(
            "indexer",
            _recchain("index", "--source", "observer", "--listen", observer),
            f"{observer}  (stacks-node event observer: [[events_observer]] endpoint)",
            metrics_index,
        )
    )
    listeners += [
        Listener(
            "the indexer's event observer",
            ix.listen_host,
            ix.listen_port,
            "indexer.listen_port",
            host_setting="indexer.listen_host",
        ),
        Listener(
            "the indexer's metrics",
            ix.metrics_host,
            ix.metrics_port,
            "indexer.metrics_port",
            host_setting="indexer.metrics_host",
        ),
    ]
    ipfs_dir = _demo_dir() / "ipfs"
    gateway = (s.metadata.gateways[0] if s.metadata.gateways else "http://127.0.0.1:8080").rstrip(
        "/"
    )
    if _have("indexer.metadata.devgateway") and ipfs_dir.is_dir():
        host, port = _port_of(gateway, 80)
        cid = next((p.name for p in sorted(ipfs_dir.iterdir()) if p.is_file()), None)
        roles.append(
            Role(
                "ipfs-gateway",
                [
                    sys.executable,
                    "-m",
                    "indexer.metadata.devgateway",
                    "--dir",
                    str(ipfs_dir),
                    "--host",
                    host,
                    "--port",
                    str(port),
                ],
                f"{gateway}/ipfs/{cid}  (local IPFS gateway with the demo metadata)",
                f"{gateway}/ipfs/{cid}" if cid else f"{gateway}/_dev/hits",
            )
        )
        listeners.append(
            Listener(
                "the local IPFS gateway",
                host,
                port,
                "metadata.gateways",
                hint="RECCHAIN_METADATA__GATEWAYS='[\"http://127.0.0.1:PORT\"]'",
            )
        )
    md = s.metadata
    roles.append(
        Role(
            "metadata",
            _recchain("metadata", "work", "--workers", "4"),
            None,
            f"http://{md.metrics_host}:{md.metrics_port}/metrics" if md.metrics_port else None,
        )
    )
    if md.metrics_port:
        listeners.append(
            Listener(
                "the metadata workers' metrics",
                md.metrics_host,
                md.metrics_port,
                "metadata.metrics_port",
                host_setting="metadata.metrics_host",
            )
        )
    api = s.api
    roles.append(
        Role(
            "api",
            _recchain("serve", "--host", api.host, "--port", str(api.port)),
            f"http://{api.host}:{api.port}/graphql  (GraphQL + GraphiQL)",
            f"http://{api.host}:{api.port}/healthz",
        )
    )
    listeners.append(Listener("the API", api.host, api.port, "api.port", host_setting="api.host"))
    node_script = PROJECT_ROOT / "contracts" / "devnet" / "node.mjs"
    if not args.no_devnet and not (node_script.is_file() and shutil.which("node")):
        print("REC-Chain dev: no Node (or no contracts/devnet): the devnet node is skipped")
    elif not args.no_devnet:
        node_url = s.relay.node_url.rstrip("/")
        host, port = _port_of(node_url, 20443)
        roles.append(
            Role(
                "devnet",
                ["node", str(node_script), "--host", host, "--port", str(port)]
                + ["--observer", f"http://{observer}"]
                + (["--activity"] if args.activity else [])
                + (["--scenario", args.devnet_scenario] if args.devnet_scenario else []),
                f"{node_url}/v2/info  (devnet stacks-node RPC)",
                f"{node_url}/v2/info",
            )
        )
        listeners.append(
            Listener(
                "the devnet node",
                host,
                port,
                "relay.node_url",
                hint="RECCHAIN_RELAY__NODE_URL=http://127.0.0.1:PORT (or --no-devnet)",
            )
        )
    relay = s.relay
    relay_base = f"http://{relay.host}:{relay.port}"
    roles.append(
        Role(
            "relay",
            _recchain("relay", "--host", relay.host, "--port", str(relay.port)),
            f"POST {relay_base}/v1/transactions  (transaction relay)",
            f"{relay_base}/healthz",
        )
    )
    listeners.append(
        Listener("the relay", relay.host, relay.port, "relay.port", host_setting="relay.host")
    )
    wh = s.webhooks
    # Local receivers are what a developer registers: the dev sender may reach loopback
    # (`recchain webhooks add` needs the same setting in the shell that runs it).
    allow = os.environ.get("RECCHAIN_WEBHOOKS__ALLOW_INTERNAL_HOSTS", LOOPBACK)
    roles.append(
        Role(
            "webhooks",
            _recchain("webhooks", "send"),
            "webhook sender (`recchain webhooks add URL --filter block`; writers/WEBHOOKS.md)",
            f"http://{wh.metrics_host}:{wh.metrics_port}/metrics" if wh.metrics_port else None,
            env={"RECCHAIN_WEBHOOKS__ALLOW_INTERNAL_HOSTS": allow},
        )
    )
    if wh.metrics_port:
        listeners.append(
            Listener(
                "the webhook sender's metrics",
                wh.metrics_host,
                wh.metrics_port,
                "webhooks.metrics_port",
                host_setting="webhooks.metrics_host",
            )
        )
    return roles, listeners


def _metrics_lines(s: Settings, roles: list[Role]) -> list[str]:
    names = {r.name for r in roles}
    lines = [f"http://{s.api.host}:{s.api.port}/metrics (api)"]
    if "indexer" in names:
        lines.append(f"http://{s.indexer.metrics_host}:{s.indexer.metrics_port}/metrics (indexer)")
    if "metadata" in names and s.metadata.metrics_port:
        md = s.metadata
        lines.append(f"http://{md.metrics_host}:{md.metrics_port}/metrics (metadata)")
    if "relay" in names:
        lines.append(f"http://{s.relay.host}:{s.relay.port}/metrics (relay)")
    if "webhooks" in names and s.webhooks.metrics_port:
        wh = s.webhooks
        lines.append(f"http://{wh.metrics_host}:{wh.metrics_port}/metrics (webhooks)")
    return lines


class RoleDied(CommandError):
    pass


def _check_alive(roles: list[Role]) -> None:
    for role in roles:
        if role.proc is not None and role.proc.poll() is not None:
            raise RoleDied(
                f"{role.name} exited with {role.proc.returncode} (its output is above); "
                "stopped the other roles"
            )


def _wait_ready(roles: list[Role], names: set[str], timeout: float) -> None:
    """Until every role in `names` answers its ready URL (or, without one, is alive); a role
    that exits meanwhile fails the start."""
    deadline = time.monotonic() + timeout
    while True:
        _check_alive(roles)
        waiting = [r for r in roles if r.name in names and not r.ready]
        for role in waiting:
            if role.ready_url is None or _answers(role.ready_url):
                role.ready = True
        if all(r.ready for r in roles if r.name in names):
            return
        if time.monotonic() > deadline:
            late = ", ".join(r.name for r in roles if r.name in names and not r.ready)
            raise CommandError(f"{late} did not answer within {timeout:.0f} s")
        time.sleep(0.3)


def _stop(roles: list[Role]) -> None:
    for role in roles:
        if role.proc is not None and role.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                role.proc.terminate()
    for role in roles:
        if role.proc is None:
            continue
        try:
            role.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            role.proc.kill()
            role.proc.wait()


def _stop_db(_: argparse.Namespace) -> int:
    from db.embedded import stop_embedded_server
    from infra.config import get_settings

    data_dir = get_settings().data_dir
    pid = stop_embedded_server(data_dir)
    if pid is None:
        print(f"REC-Chain dev: no embedded PostgreSQL running in {data_dir / 'pg'}")
    else:
        print(f"REC-Chain dev: stopped the embedded PostgreSQL (pid {pid}) in {data_dir / 'pg'}")
    return 0


def _dev(args: argparse.Namespace) -> int:
    if args.stop_db:
        return _stop_db(args)
    from db.migrate import upgrade
    from db.session import database_url, to_libpq_url
    from infra.config import PROJECT_ROOT, get_settings
    from infra.listen import check_free
    from recchain.commands.failures import check_database, shown_url

    s = get_settings()
    roles, listeners = _plan(args, s)
    # Before anything starts: a taken port would otherwise be found by a role after the others
    # started, or be answered by whatever holds it.
    check_free(listeners)

    print("REC-Chain dev: preparing the database ...", flush=True)
    url = database_url()
    check_database(url, migrated=False)
    child_env = dict(os.environ)
    child_env["DATABASE_URL"] = to_libpq_url(url)
    upgrade(url)

    chain = Path(args.chain) if args.chain else _demo_dir() / "chain.tsv"
    if chain.is_file():
        shown = chain.relative_to(PROJECT_ROOT) if chain.is_relative_to(PROJECT_ROOT) else chain
        print(f"REC-Chain dev: indexing the bundled chain {shown} ...", flush=True)
        done = subprocess.run(_recchain("replay", str(chain)), env=child_env, check=False)
        if done.returncode != 0:
            raise CommandError(f"indexing {shown} failed (exit {done.returncode}; see above)")

    stopping = False

    def _on_term(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _on_term)
    try:
        for role in roles:
            role.proc = subprocess.Popen(role.argv, env={**child_env, **role.env}, cwd=PROJECT_ROOT)
            role.started = time.monotonic()
        print("REC-Chain dev: waiting for the roles to answer ...", flush=True)
        # Everything but the devnet node, which replays its scenario before it listens.
        _wait_ready(roles, {r.name for r in roles if r.name != "devnet"}, START_TIMEOUT_S)
        graphql_url = f"http://{s.api.host}:{s.api.port}/graphql"
        print("\nREC-Chain is running:")
        print(f"  {'database':<15} {shown_url(child_env['DATABASE_URL'])}")
        for role in roles:
            if role.shown and role.name != "devnet":
                print(f"  {role.name:<15} {role.shown}")
        print("  metrics         " + "\n                  ".join(_metrics_lines(s, roles)))
        meta = _graphql(graphql_url, META_QUERY)
        if meta is not None:
            print(f"\n  {META_QUERY}\n  -> {json.dumps(meta)}")
            _show_resolved_metadata(graphql_url)
        print("\nPress Ctrl-C to stop.", flush=True)
        return _run(args, roles, lambda: stopping)
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(roles)


def _run(args: argparse.Namespace, roles: list[Role], stopping: Callable[[], bool]) -> int:
    """Watch the roles: report the devnet node once it answers (with progress while it
    replays), fail as soon as any role exits, stop after `--exit-after` seconds."""
    started = time.monotonic()
    devnet = next((r for r in roles if r.name == "devnet"), None)
    last_note = float("-inf")
    while not stopping():
        _check_alive(roles)
        now = time.monotonic()
        if devnet is not None and not devnet.ready:
            if devnet.ready_url and _answers(devnet.ready_url):
                devnet.ready = True
                print(f"REC-Chain dev: devnet node ready: {devnet.shown}", flush=True)
            elif now - devnet.started > DEVNET_TIMEOUT_S:
                raise CommandError(f"the devnet node did not answer within {DEVNET_TIMEOUT_S} s")
            elif now - last_note >= PROGRESS_EVERY_S:
                last_note = now
                print(
                    f"REC-Chain dev: the devnet node is replaying its scenario "
                    f"({now - devnet.started:.0f} s) ...",
                    flush=True,
                )
        waited = args.exit_after is not None and now - started >= args.exit_after
        if waited and (devnet is None or devnet.ready or not args.wait_devnet):
            return 0
        time.sleep(0.5)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "dev",
        help="run the whole system locally on embedded defaults",
        description="Every role on one machine: the embedded PostgreSQL (unless DATABASE_URL is "
        "set), the bundled demo chain, the indexer, metadata workers with a local IPFS gateway, "
        "the API, the devnet node, the relay and the webhook sender. Ports are checked before "
        "anything starts; if a role exits, the others are stopped and the command fails.",
    )
    p.add_argument("--chain", help="observer TSV to index first (default: the bundled demo)")
    p.add_argument("--no-devnet", action="store_true", help="do not start the devnet node")
    p.add_argument("--activity", action="store_true", help="synthetic market activity on devnet")
    p.add_argument(
        "--stop-db",
        action="store_true",
        help="stop the embedded PostgreSQL (it keeps running between runs) and exit",
    )
    # Used by the tests: start everything, check, stop after N seconds (with --wait-devnet, not
    # before the devnet node answers).
    p.add_argument("--exit-after", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--wait-devnet", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--devnet-scenario", default=None, help=argparse.SUPPRESS)
    p.set_defaults(handler=_dev)
