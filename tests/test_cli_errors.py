"""Failures a user causes get one clear line and a non-zero exit, never a traceback: the real
`recchain` command in a subprocess, against the machine's real PostgreSQL (or none)."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import make_url

from db.session import to_libpq_url
from indexer.tsv import write_requests
from infra.config import PROJECT_ROOT
from ops.bench.chaingen import Chain, to_requests
from ops.bench.e2e import free_port
from recchain.cli import EXIT_BROKEN_PIPE
from tests.clirun import RECCHAIN, error_lines, recchain_env, run
from tests.indexer.test_holds import _unstorable
from tests.stacks.vectors import load

DEMO = PROJECT_ROOT / "tests" / "fixtures" / "demo"
DB_COMMANDS = [
    ["migrate"],
    ["expiry", "list"],
    ["metadata", "retry", "--all-failed"],
    ["replay", str(DEMO / "chain.tsv")],
    ["webhooks", "list"],
    ["webhooks", "send", "--metrics-port", "0"],
]
# Left out of the unmigrated case: with the database reached, it checks its URL's host (DNS).
WEBHOOKS_ADD = ["webhooks", "add", "https://example.com/hook", "--filter", "block"]


def _id(argv: list[str]) -> str:
    """A case's name without the checkout's path, so that it is the same in every clone."""
    return " ".join(argv[:2]).replace(f"{PROJECT_ROOT}/", "")


def _one_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


@contextlib.contextmanager
def _listening() -> Iterator[int]:
    """A port another process (this test) listens on."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("argv", [*DB_COMMANDS, WEBHOOKS_ADD], ids=_id)
def test_an_unreachable_database_is_one_line(argv: list[str]) -> None:
    port = free_port()  # nothing listens there
    proc = run(*argv, env=recchain_env(DATABASE_URL=f"postgresql://u:s3cret@127.0.0.1:{port}/x"))
    line = _one_error(proc)
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{port}: connection refused" in line
    assert "DATABASE_URL" in line and "s3cret" not in proc.stderr


@pytest.mark.parametrize("argv", [["migrate"], ["webhooks", "send", "--metrics-port", "0"]])
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a url", "not a valid PostgreSQL URL"),
        ("mysql://u:pw@127.0.0.1/x", "the scheme 'mysql' is not PostgreSQL's"),
        ("postgresql://u@127.0.0.1:notaport/x", "not a valid PostgreSQL URL"),
    ],
)
def test_a_bad_database_url_is_one_line(argv: list[str], url: str, expected: str) -> None:
    line = _one_error(run(*argv, env=recchain_env(DATABASE_URL=url)))
    assert expected in line and "DATABASE_URL" in line


def test_a_database_that_does_not_exist_is_named(server_url: str) -> None:
    name = f"recchain_missing_{uuid.uuid4().hex[:8]}"
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    for argv in [*DB_COMMANDS, WEBHOOKS_ADD]:
        line = _one_error(run(*argv, env=recchain_env(DATABASE_URL=to_libpq_url(url))))
        assert f'database "{name}" does not exist' in line, (argv, line)


@pytest.mark.parametrize(
    "argv",
    [
        *DB_COMMANDS[1:],
        ["serve", "--port", "0"],
        ["relay", "--port", "0"],
        ["index", "--listen", "127.0.0.1:0"],
        ["metadata", "work"],
    ],
    ids=_id,
)
def test_an_unmigrated_database_says_run_migrate(empty_db_url: str, argv: list[str]) -> None:
    env = recchain_env(DATABASE_URL=to_libpq_url(empty_db_url), RECCHAIN_INDEXER__METRICS_PORT="0")
    line = _one_error(run(*argv, env=env))
    assert "run recchain migrate" in line


@pytest.mark.parametrize(
    ("argv", "env", "setting"),
    [
        (["serve"], "RECCHAIN_API__PORT", "RECCHAIN_API__PORT"),
        (["relay"], "RECCHAIN_RELAY__PORT", "RECCHAIN_RELAY__PORT"),
        (["index"], "RECCHAIN_INDEXER__METRICS_PORT", "RECCHAIN_INDEXER__METRICS_PORT"),
    ],
)
def test_a_port_in_use_is_named_with_its_setting(
    db_url: str, argv: list[str], env: str, setting: str
) -> None:
    with _listening() as port:
        extra = {env: str(port), "DATABASE_URL": to_libpq_url(db_url)}
        line = _one_error(run(*argv, env=recchain_env(**extra), timeout=120))
    assert f"port {port} on 127.0.0.1 is already in use" in line
    assert setting in line


def test_the_observer_port_in_use_is_named_before_anything_starts(db_url: str) -> None:
    with _listening() as port:
        env = recchain_env(DATABASE_URL=to_libpq_url(db_url), RECCHAIN_INDEXER__METRICS_PORT="0")
        line = _one_error(run("index", "--listen", f"127.0.0.1:{port}", env=env, timeout=120))
    assert f"port {port} on 127.0.0.1 is already in use" in line and "--listen" in line


def test_a_bad_setting_is_one_line() -> None:
    line = _one_error(run("serve", env=recchain_env(RECCHAIN_API__PORT="eighty")))
    assert "invalid setting: api.port" in line


def _raw_requests(db_url: str) -> int:
    with psycopg.connect(to_libpq_url(db_url)) as conn:
        row = conn.execute("SELECT count(*) FROM raw_requests").fetchone()
        assert row is not None
        return int(row[0])


def test_a_tsv_line_without_4_columns_is_named_and_nothing_is_indexed(
    db_url: str, tmp_path: Path
) -> None:
    good = (DEMO / "chain.tsv").read_text().splitlines(keepends=True)[:5]
    bad = tmp_path / "bad.tsv"
    bad.write_text("".join(good) + "999\t2026-01-01 00:00:00+00\t/new_block\n")
    proc = run("replay", str(bad), env=recchain_env(DATABASE_URL=to_libpq_url(db_url)))
    line = _one_error(proc)
    assert f"line {len(good) + 1}: expected 4 tab-separated columns, got 3" in line
    assert _raw_requests(db_url) == 0  # the good lines before it were not indexed either


def test_replay_says_why_each_request_was_rejected_and_what_it_skipped(
    db_url: str, tmp_path: Path
) -> None:
    good = (DEMO / "chain.tsv").read_text().splitlines(keepends=True)[:3]
    last_id = int(good[-1].split("\t", 1)[0])
    path = tmp_path / "rejects.tsv"
    with path.open("w") as f:
        f.write("".join(good))
        write_requests(
            f,
            [
                (last_id + 1, "2026-01-05 12:00:40+00", "/new_block", '{"not": "a block"}'),
                (last_id + 2, "2026-01-05 12:00:41+00", "/new_block", "not json"),
            ],
        )
    env = recchain_env(DATABASE_URL=to_libpq_url(db_url))
    first = run("replay", "--quiet", str(path), env=env)
    assert first.returncode == 0, first.stderr
    rejected = [ln for ln in first.stderr.splitlines() if " rejected: " in ln]
    assert len(rejected) == 2, first.stderr
    assert rejected[0].startswith(f"replay: request {last_id + 1} (/new_block) rejected: ")
    assert "malformed JSON" in rejected[1]
    assert "replay: skipped" not in first.stderr
    summary = json.loads(first.stderr.strip().splitlines()[-1])
    assert summary["rejected"] == 2 and summary["skipped"] == 0

    again = run("replay", "--quiet", str(path), env=env)
    assert again.returncode == 0, again.stderr
    lines = len(good) + 2
    assert f"replay: skipped {lines} request(s) already indexed by an earlier run" in again.stderr
    assert json.loads(again.stderr.strip().splitlines()[-1])["skipped"] == lines


def test_replay_of_a_cut_short_archive_indexes_nothing(db_url: str, tmp_path: Path) -> None:
    """An interrupted download of a gzipped archive: its lines up to the cut are well formed, so
    only the gzip stream says the file is incomplete; nothing of it may be indexed."""
    packed = gzip.compress((DEMO / "chain.tsv").read_bytes())
    path = tmp_path / "cut.tsv.gz"
    path.write_bytes(packed[: len(packed) * 3 // 4])
    result = run(
        "replay", "--quiet", str(path), env=recchain_env(DATABASE_URL=to_libpq_url(db_url))
    )
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result.stderr)
    assert "the gzip stream is corrupt" in line and "nothing was indexed" in line, line
    with psycopg.connect(to_libpq_url(db_url)) as conn:
        assert conn.execute("SELECT count(*) FROM raw_requests").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM blocks").fetchone() == (0,)


def test_replay_prints_requests_refused_when_their_batch_is_redone(
    db_url: str, tmp_path: Path
) -> None:
    """A value PostgreSQL cannot store is found only when the catch-up batch commits, after its
    requests were answered; the batch is redone request by request and the culprit is printed
    with its reason like any other rejected request."""
    blocks = Chain(seed=85).grow(None, 6, "main")
    k = next(
        i for i, b in enumerate(blocks) if any(e["type"] == "nft_mint_event" for e in b["events"])
    )
    bad = _unstorable(blocks[k], lambda v: v.update(vintage=2**40))  # vintage is an integer
    delivered = [*blocks[:k], bad, *blocks[k + 1 :]]
    path = tmp_path / "unstorable.tsv"
    with path.open("w") as f:
        rows = to_requests(delivered)
        write_requests(f, [(i, "2026-01-05 12:00:00+00", p, b) for i, (p, b) in enumerate(rows, 1)])
    proc = run("replay", "--quiet", str(path), env=recchain_env(DATABASE_URL=to_libpq_url(db_url)))
    assert proc.returncode == 0, proc.stderr
    rejected = [ln for ln in proc.stderr.splitlines() if " rejected: " in ln]
    assert len(rejected) == 1, proc.stderr
    assert rejected[0].startswith(
        f"replay: request {k + 1} (/new_block) rejected: cannot be stored"
    )
    assert json.loads(proc.stderr.strip().splitlines()[-1])["rejected"] == 1


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_decode_tx_into_a_closed_pipe_is_one_line(json_flag: list[str]) -> None:
    raw = next(v for v in load("transactions"))["hex"]
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head` does once it has what it wants
    try:
        proc = subprocess.run(
            [*RECCHAIN, "stacks", "decode-tx", raw, *json_flag],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env=recchain_env(),
        )
    finally:
        os.close(write_end)
    assert proc.returncode == EXIT_BROKEN_PIPE
    assert proc.stderr.strip().splitlines() == [
        "error: output closed by its reader (broken pipe); stopped"
    ]
