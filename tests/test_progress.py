"""A progress bar and log lines never share a line: `recchain replay` of the demo chain (its
forks log warnings while the bar is drawn) on a real pseudo-terminal, its output rendered the
way a terminal renders it (carriage return, erase to end of line)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time

import pytest

from db.session import to_libpq_url
from indexer.replay import Progress, ReplayStats
from infra.config import PROJECT_ROOT
from tests.clirun import RECCHAIN, recchain_env

DEMO = PROJECT_ROOT / "tests" / "fixtures" / "demo"
BAR = re.compile(r"\[[#.]{30}\] \d+/\d+ req")


def render(output: str) -> list[str]:
    """The lines a terminal shows for `output` (only what a status line writes: text, \\r,
    \\n and ESC[K)."""
    lines: list[str] = []
    line: list[str] = []
    col = 0
    for token in re.split(r"(\r|\n|\x1b\[K)", output):
        if token == "\n":
            lines.append("".join(line))
            line, col = [], 0
        elif token == "\r":
            col = 0
        elif token == "\x1b[K":
            del line[col:]
        else:
            for ch in token:
                if col < len(line):
                    line[col] = ch
                else:
                    line.append(ch)
                col += 1
    if line:
        lines.append("".join(line))
    return lines


def test_render_shows_a_shared_line_as_it_was_before() -> None:
    # The old bar: "\r[...]" then a log record written after it, on the same terminal line.
    old = "\r[##############################] 3/3 req 1 blocks/s ETA 0s   2026 WARNING x\n"
    assert len(render(old)) == 1 and BAR.search(render(old)[0]) and "WARNING" in render(old)[0]


@pytest.mark.skipif(not (DEMO / "chain.tsv").is_file(), reason="no bundled demo chain")
def test_log_lines_and_the_progress_bar_never_share_a_line(db_url: str) -> None:
    leader, follower = pty.openpty()
    env = recchain_env(DATABASE_URL=to_libpq_url(db_url), RECCHAIN_LOG_LEVEL="INFO")
    proc = subprocess.Popen(
        [*RECCHAIN, "replay", "--batch", "8", str(DEMO / "chain.tsv")],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=follower,
        stdin=subprocess.DEVNULL,
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: the other end closed
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    screen = render(b"".join(chunks).decode("utf-8", errors="replace").replace("\r\n", "\n"))
    logged = [ln for ln in screen if re.search(r" (INFO|WARNING|ERROR) ", ln)]
    assert any("fork: rolling back" in ln for ln in logged), screen  # logged while the bar ran
    assert any(BAR.search(ln) for ln in screen), screen
    assert [ln for ln in logged if BAR.search(ln)] == []


def test_off_a_terminal_the_bar_writes_whole_lines(tmp_path: object) -> None:
    out = tmp_path / "bar.txt"  # type: ignore[operator]
    with open(out, "w") as stream:
        bar = Progress(10, stream=stream)
        stats = ReplayStats()
        for n in range(1, 11):
            stats.requests = n
            bar.update(stats, force=True)
        bar.close(stats)
    text = out.read_text()
    assert "\r" not in text and "\x1b" not in text and text.endswith("\n")
    assert all(BAR.match(line) for line in text.splitlines())
