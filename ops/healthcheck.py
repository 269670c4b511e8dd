"""Container health probe: `python -m ops.healthcheck URL [URL ...]`.

Exits 0 when every URL answers 2xx within the timeout, 1 otherwise. Images carry no curl or
wget, and starting the full CLI for a probe every few seconds would cost more than this.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

TIMEOUT_S = 4.0


def check(url: str, timeout: float = TIMEOUT_S) -> str | None:
    """None if `url` is healthy, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {exc}"
    return None if 200 <= status < 300 else f"{url}: HTTP {status}"


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m ops.healthcheck URL [URL ...]", file=sys.stderr)
        return 2
    failures = [reason for reason in map(check, argv) if reason]
    for reason in failures:
        print(reason, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
