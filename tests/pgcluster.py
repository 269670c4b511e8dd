"""Fixtures of a real PostgreSQL primary and hot standby (ops/pgcluster.py), for tests of the
replica topology (the API reading `api.read_database_url`). Registered for the whole suite by
tests/conftest.py; they skip with the reason where the server binaries or pg_basebackup are
missing.

- `pg_cluster` (session): the running pair (`PgCluster`: `pause_replay`, `resume_replay`,
  `wait_replayed`, `primary_dsn`, `standby_dsn`...); one per test process.
- `replica_db` (function): a fresh database migrated on the primary (a copy of a template
  migrated once per session), visible on the standby; `.primary` and `.standby` are SQLAlchemy
  URLs of it. Replay is resumed at teardown if a test paused it.
- `own_server` (function): a server of the test's own (`PgCluster(standby=False)`) with one
  migrated database, as `(cluster, SQLAlchemy URL)`: for outage tests, which stop and start it
  (`stop_primary`, `start_primary`) and so cannot share it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from db.migrate import upgrade
from ops.pgcluster import PgCluster, find_bindir, throwaway_server

__all__ = ["PgCluster", "ReplicaDb", "own_server", "pg_cluster", "replica_db"]


@dataclass(frozen=True)
class ReplicaDb:
    """One database of the cluster, by its SQLAlchemy URLs on each server."""

    cluster: PgCluster
    name: str

    @property
    def primary(self) -> str:
        return self.cluster.primary_url(self.name)

    @property
    def standby(self) -> str:
        return "postgresql+psycopg" + self.cluster.standby_dsn(self.name)[len("postgresql") :]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server binaries with pg_basebackup (initdb, pg_ctl, postgres,"
            " pg_basebackup) found; set RECCHAIN_PG_BINDIR to their directory"
        )
    cluster = PgCluster(bindir).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def _replica_template(pg_cluster: PgCluster) -> str:
    name = f"recchain_rtmpl_{uuid.uuid4().hex[:8]}"
    pg_cluster.create_database(name)
    upgrade(ReplicaDb(pg_cluster, name).primary)
    return name


@pytest.fixture
def replica_db(pg_cluster: PgCluster, _replica_template: str) -> Iterator[ReplicaDb]:
    name = f"recchain_r_{uuid.uuid4().hex[:8]}"
    pg_cluster.create_database(name, template=_replica_template)
    try:
        yield ReplicaDb(pg_cluster, name)
    finally:
        pg_cluster.resume_replay()
        pg_cluster.drop_database(name)


@pytest.fixture
def own_server() -> Iterator[tuple[PgCluster, str]]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl, postgres) found")
    with throwaway_server(bindir) as server:
        yield server
