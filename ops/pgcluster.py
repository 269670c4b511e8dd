"""A real PostgreSQL primary and a hot standby streaming from it, on loopback: for the tests of
the replica topology (tests/pgcluster.py's fixtures) and `python -m ops.bench subscribe --replica`.

`PgCluster.start()` runs `initdb` for the primary (`wal_level = replica`), starts it on a free
loopback port, clones it with `pg_basebackup -R -X stream` (the standby's `standby.signal` and
`primary_conninfo`) and starts the standby on another free port, each in its own temporary
directory. PostgreSQL refuses to run as root, so when the tests run as root the server
processes run as the unprivileged `postgres` user (or `nobody`). The server binaries are taken
from the machine's PostgreSQL (`/usr/lib/postgresql/*/bin`, `pg_config --bindir`) or from the
embedded server's install (`find_bindir`; None without `initdb`, `pg_ctl`, `postgres` and
`pg_basebackup`). `durable=False` (tests) turns fsync off; a benchmark keeps the defaults.
`standby=False` starts the primary alone: one throw-away server that an outage test stops and
starts again (`stop_primary`, `start_primary`); `throwaway_server()` is that server with one
migrated database (the outage tests' `own_server`, `python -m ops.bench faults --fault restart-*`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

TOOLS = ("initdb", "pg_ctl", "postgres", "pg_basebackup")
START_TIMEOUT_S = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def find_bindir() -> Path | None:
    """A directory holding every server tool, the machine's PostgreSQL first."""
    candidates: list[Path] = []
    env = os.environ.get("RECCHAIN_PG_BINDIR")
    if env:
        candidates.append(Path(env))
    candidates += sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10
            )
            candidates.append(Path(out.stdout.strip()))
    for path in candidates:
        if _has_tools(path):
            return path
    with contextlib.suppress(ImportError):
        import pgserver

        embedded = Path(pgserver.__file__).parent / "pginstall" / "bin"
        if _has_tools(embedded):
            return embedded
    return None


def _has_tools(path: Path) -> bool:
    return all((path / tool).is_file() and os.access(path / tool, os.X_OK) for tool in TOOLS)


def _server_user() -> pwd.struct_passwd | None:
    """The account the servers run as: None = ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


class PgCluster:
    """A primary and one hot standby on loopback, in a temporary directory."""

    def __init__(self, bindir: Path, durable: bool = False, *, standby: bool = True) -> None:
        self.bindir = bindir
        self.durable = durable
        self.with_standby = standby
        self.user = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="recchain-pgcluster-"))
        self.primary_port = _free_port()
        self.standby_port = _free_port()
        self.primary_dir = self.root / "primary"
        self.standby_dir = self.root / "standby"
        self.sockets = self.root / "sockets"
        self._started: list[Path] = []

    # -- processes ------------------------------------------------------------------------
    def _run(self, *args: str, timeout: float = START_TIMEOUT_S) -> None:
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        proc = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=self.root,
            **kwargs,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")

    def start(self) -> PgCluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.sockets.mkdir()
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
            os.chown(self.sockets, self.user.pw_uid, self.user.pw_gid)
        self._run(
            "initdb", "-D", str(self.primary_dir), "-U", "postgres", "--auth=trust",
            "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        with (self.primary_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# tests/pgcluster.py\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.sockets}'\n"
                "wal_level = replica\n"
                "max_wal_senders = 10\n"
                "max_connections = 200\n"
                "hot_standby = on\n"
                "hot_standby_feedback = on\n"
                "shared_buffers = 32MB\n"
            )
            if not self.durable:
                conf.write("fsync = off\nfull_page_writes = off\n")
        self._ctl_start(self.primary_dir, self.primary_port)
        if not self.with_standby:
            return
        self._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
            "-D", str(self.standby_dir), "-R", "-X", "stream", "--no-sync",
            "-c", "fast",
        )  # fmt: skip
        self._ctl_start(self.standby_dir, self.standby_port)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with (
                contextlib.suppress(psycopg.OperationalError),
                psycopg.connect(self.standby_dsn(), autocommit=True) as conn,
            ):
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                if row is not None and row[0]:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the standby did not come up in recovery")
            time.sleep(0.2)
        self.wait_replayed()

    def _ctl_start(self, datadir: Path, port: int) -> None:
        log = self.root / f"{datadir.name}.log"
        self._run(
            "pg_ctl", "-D", str(datadir), "-l", str(log), "-w", "-t", str(int(START_TIMEOUT_S)),
            "-o", f"-p {port} -k {self.sockets}", "start",
        )  # fmt: skip
        self._started.append(datadir)

    def stop_primary(self, mode: str = "fast") -> None:
        """Stop the primary, keeping its data: `start_primary()` brings it back on its port
        (a database that goes away and returns, for outage tests). `mode` is pg_ctl's: `fast`
        ends the sessions and checkpoints, `immediate` kills the server (crash recovery at the
        next start), `smart` waits for the sessions to end."""
        self._run("pg_ctl", "-D", str(self.primary_dir), "-m", mode, "-w", "stop", timeout=60)
        self._started.remove(self.primary_dir)

    def start_primary(self) -> None:
        self._ctl_start(self.primary_dir, self.primary_port)

    def stop(self) -> None:
        for datadir in reversed(self._started):
            with contextlib.suppress(Exception):
                self._run("pg_ctl", "-D", str(datadir), "-m", "immediate", "-w", "stop", timeout=60)
        self._started.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- addresses ------------------------------------------------------------------------
    def primary_dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.primary_port}/{database}"

    def primary_url(self, database: str) -> str:
        """The SQLAlchemy URL of `database` on the primary (what RECCHAIN_DATABASE_URL takes)."""
        return "postgresql+psycopg" + self.primary_dsn(database)[len("postgresql") :]

    def standby_dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.standby_port}/{database}"

    # -- replication ----------------------------------------------------------------------
    def primary_lsn(self) -> str:
        with psycopg.connect(self.primary_dsn(), autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
            assert row is not None
            return str(row[0])

    def replayed(self, lsn: str) -> bool:
        with psycopg.connect(self.standby_dsn(), autocommit=True) as conn:
            row = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()
            return bool(row and row[0])

    def wait_replayed(self, timeout_s: float = 60.0) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        target = self.primary_lsn()
        deadline = time.monotonic() + timeout_s
        while not self.replayed(target):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby did not replay up to {target}")
            time.sleep(0.02)

    def pause_replay(self) -> None:
        """Stop applying WAL on the standby (it keeps receiving it): its data stands still."""
        with psycopg.connect(self.standby_dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
            # Paused means the startup process took the request, not merely that it was asked.
            deadline = time.monotonic() + 30
            while True:
                row = conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()
                if row is not None and row[0] == "paused":
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError("replay did not pause")
                time.sleep(0.01)

    def resume_replay(self) -> None:
        with psycopg.connect(self.standby_dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")

    def create_database(self, name: str, template: str | None = None) -> None:
        with psycopg.connect(self.primary_dsn(), autocommit=True) as conn:
            tmpl = f' TEMPLATE "{template}"' if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{tmpl}')
        if self.with_standby:
            self.wait_replayed()

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.primary_dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def throwaway_server(bindir: Path) -> Iterator[tuple[PgCluster, str]]:
    """A server alone (no standby) with one migrated database: (cluster, its SQLAlchemy URL).
    Removed with its data on exit."""
    from db.migrate import upgrade

    cluster = PgCluster(bindir, standby=False).start()
    try:
        name = f"recchain_outage_{uuid.uuid4().hex[:8]}"
        cluster.create_database(name)
        url = cluster.primary_url(name)
        upgrade(url)
        yield cluster, url
    finally:
        cluster.stop()
