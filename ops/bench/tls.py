"""One TLS context for the HTTP clients that the tests and benches create, per process.

httpx builds a new SSL context for every client it creates with `verify=True`, reading the CA
bundle again: about 25 ms of CPU, a hundred times the loopback request it is made for. Readiness
polls create a client per probe (tens per started process, several per second) and the suite
starts hundreds of processes, so on a loaded machine this was CPU taken from the tests. A shared
context verifies exactly as the default one does; each client still opens its own connections.
"""

from __future__ import annotations

import ssl
from functools import cache

import httpx


@cache
def tls() -> ssl.SSLContext:
    """httpx's default verifying context, built once (pass it as `verify=`)."""
    return httpx.create_ssl_context()
