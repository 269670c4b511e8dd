"""The primary + hot standby fixture itself: streaming, read-only standby, pausable replay."""

from __future__ import annotations

import psycopg
import pytest

from db.session import to_libpq_url
from tests.pgcluster import PgCluster, ReplicaDb


def test_standby_streams_the_primary_and_replay_can_be_paused(
    pg_cluster: PgCluster, replica_db: ReplicaDb
) -> None:
    primary, standby = to_libpq_url(replica_db.primary), to_libpq_url(replica_db.standby)
    with psycopg.connect(standby, autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        # Migrated on the primary, so present on the standby.
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() != (0,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE nope (x int)")
    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute("CREATE TABLE probe (x int)")
        conn.execute("INSERT INTO probe VALUES (1)")
    pg_cluster.wait_replayed()
    with psycopg.connect(standby, autocommit=True) as conn:
        assert conn.execute("SELECT x FROM probe").fetchall() == [(1,)]
        pg_cluster.pause_replay()
        with psycopg.connect(primary, autocommit=True) as writer:
            writer.execute("INSERT INTO probe VALUES (2)")
        lsn = pg_cluster.primary_lsn()
        assert not pg_cluster.replayed(lsn)
        assert conn.execute("SELECT x FROM probe").fetchall() == [(1,)]
        pg_cluster.resume_replay()
        pg_cluster.wait_replayed()
        assert conn.execute("SELECT x FROM probe ORDER BY x").fetchall() == [(1,), (2,)]
