"""The bundled front door (ops/nginx/nginx.conf) run by a real nginx on loopback, for tests
of several processes behind it.

The configuration is the file compose mounts, with only what names the compose network
rewritten: the `api`, `relay` and `indexer` upstream servers, the listen ports, and the pid,
temp and log paths (into a temporary directory). A rewrite that no longer finds its line fails
loudly, so the test follows the real file. nginx is looked up on PATH and in /usr/sbin (Debian's
`nginx-light` or `nginx`); without it `require_nginx` skips with the reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from infra.config import PROJECT_ROOT

CONF = PROJECT_ROOT / "ops" / "nginx" / "nginx.conf"


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def require_nginx() -> str:
    path = find_nginx()
    if path is None:
        pytest.skip("nginx is not installed (Debian: apt-get install -y nginx-light)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _sub(pattern: str, replacement: str, text: str) -> str:
    out, n = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert n, f"ops/nginx/nginx.conf no longer has a line matching {pattern!r}"
    return out


def render(
    conf: str,
    workdir: Path,
    port: int,
    api: list[int],
    relay: int,
    indexer: list[int] | None = None,
    observer_port: int | None = None,
) -> str:
    conf = _sub(r"^pid \S+;", f"pid {workdir}/nginx.pid;", conf)
    conf = _sub(r"^(\s*)(\w+_temp_path) /tmp/(\w+);", rf"\1\2 {workdir}/\3;", conf)
    conf = _sub(r"access_log /dev/stdout json;", f"access_log {workdir}/access.log json;", conf)
    conf = _sub(r"error_log /dev/stderr warn;", f"error_log {workdir}/error.log warn;", conf)
    servers = "".join(f"    server 127.0.0.1:{p} max_fails=3 fail_timeout=10s;\n" for p in api)
    conf = _sub(
        r"^    server api-\d+:8000[^\n]*\n(?:    server api-\d+:8000[^\n]*\n)*", servers, conf
    )
    conf = _sub(r"server relay:8010;", f"server 127.0.0.1:{relay};", conf)
    conf = _sub(r"listen 8080;", f"listen 127.0.0.1:{port};", conf)
    ports = indexer or [_free_port()]
    indexers = "".join(f"    server 127.0.0.1:{p} max_fails=0;\n" for p in ports)
    conf = _sub(
        r"^    server indexer-\d+:3700[^\n]*\n(?:    server indexer-\d+:3700[^\n]*\n)*",
        indexers,
        conf,
    )
    conf = _sub(r"listen 3700;", f"listen 127.0.0.1:{observer_port or _free_port()};", conf)
    return conf


class NginxProxy:
    """nginx serving ops/nginx/nginx.conf in front of `api` ports (and a `relay` port)."""

    def __init__(
        self, api: list[int], relay: int | None = None, indexer: list[int] | None = None
    ) -> None:
        self.binary = require_nginx()
        self.workdir = Path(tempfile.mkdtemp(prefix="recchain-nginx-"))
        os.chmod(self.workdir, 0o755)  # workers run as nobody when the master is root
        self.port = _free_port()
        self.observer_port = _free_port()
        text = render(
            CONF.read_text(), self.workdir, self.port, api, relay or _free_port(),
            indexer, self.observer_port,
        )  # fmt: skip
        self.conf = self.workdir / "nginx.conf"
        self.conf.write_text(text)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def observer_url(self) -> str:
        """The event-observer address in front of the `indexer` ports."""
        return f"http://127.0.0.1:{self.observer_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def start(self) -> NginxProxy:
        cmd = [self.binary, "-p", str(self.workdir), "-c", str(self.conf)]
        cmd += ["-e", str(self.workdir / "error.log")]
        check = subprocess.run([*cmd, "-t"], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen([*cmd, "-g", "daemon off;"])
        deadline = time.monotonic() + 30
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return self
            assert self.proc.poll() is None, self.errors()
            assert time.monotonic() < deadline, "nginx did not listen"
            time.sleep(0.05)

    def errors(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "error.log").read_text()[-4000:]
        return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)
