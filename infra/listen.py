"""Ports a command is about to listen on, checked before anything starts.

A server that fails to bind after its siblings started (or, worse, a health check answered by
another process on that port) is what `recchain dev` used to report as success. Binding each
address once first, the way the servers bind (SO_REUSEADDR), names the port in use and the
setting that moves it before any role starts.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass


class ListenError(Exception):
    """A listener cannot bind; `message` is the one line to show (recchain.commands.failures)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PortInUse(ListenError):
    """The port is taken by another process."""


@dataclass(frozen=True)
class Listener:
    role: str  # who listens, for the message: "the API", "the indexer's metrics"
    host: str
    port: int
    setting: str  # the setting that holds the port, e.g. "api.port"
    # How to move it, when not `RECCHAIN_<SETTING>=PORT` (a URL or list setting).
    hint: str | None = None
    host_setting: str | None = None

    @property
    def env(self) -> str:
        return "RECCHAIN_" + self.setting.upper().replace(".", "__")

    @property
    def how_to_move(self) -> str:
        return self.hint or f"{self.env}=PORT ({self.setting})"


def check_free(listeners: Iterable[Listener]) -> None:
    """Raise `PortInUse` (or `ListenError`: an address that is not this machine's, a
    privileged port) for the first listener that cannot bind; port 0 (any free port) always
    can."""
    seen: dict[int, Listener] = {}
    for lst in listeners:
        if lst.port == 0:
            continue
        other = seen.get(lst.port)
        if other is not None:
            raise PortInUse(
                f"{other.role} and {lst.role} are both set to port {lst.port}: move one with "
                f"{lst.how_to_move}"
            )
        seen[lst.port] = lst
        _try_bind(lst)


def _try_bind(lst: Listener) -> None:
    try:
        infos = socket.getaddrinfo(lst.host, lst.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        where = lst.host_setting or "its host setting"
        raise ListenError(f"cannot listen on {lst.host!r} for {lst.role}: {exc} ({where})") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"port {lst.port} on {lst.host} is already in use, so {lst.role} cannot "
                    f"listen there: stop the other process or move it with {lst.how_to_move}"
                ) from exc
            if exc.errno == errno.EADDRNOTAVAIL:
                where = lst.host_setting or "its host setting"
                raise ListenError(
                    f"{lst.host} is not an address of this machine, so {lst.role} cannot listen "
                    f"there ({where})"
                ) from exc
            if exc.errno == errno.EACCES:
                raise ListenError(
                    f"port {lst.port} needs privileges to listen on, so {lst.role} cannot: "
                    f"move it with {lst.how_to_move}"
                ) from exc
            raise
