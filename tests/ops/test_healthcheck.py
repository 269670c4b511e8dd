"""The container probe (`python -m ops.healthcheck`) against a real HTTP server."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from infra.config import PROJECT_ROOT


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _probe(*urls: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.healthcheck", *urls],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_healthy_url_exits_zero(server: str) -> None:
    assert _probe(f"{server}/healthz").returncode == 0


def test_unready_url_exits_one_with_the_status(server: str) -> None:
    result = _probe(f"{server}/healthz", f"{server}/readyz")
    assert result.returncode == 1
    assert "HTTP 503" in result.stderr and "/readyz" in result.stderr


def test_nothing_listening_exits_one() -> None:
    assert _probe(f"http://127.0.0.1:{_closed_port()}/healthz").returncode == 1


def test_no_url_is_a_usage_error() -> None:
    assert _probe().returncode == 2
