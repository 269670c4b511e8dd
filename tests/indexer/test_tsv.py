"""Reading observer archives: plain and gzipped files, COPY-escaped and raw JSON payload columns
(decided per line, `auto`), and the explicit formats for files that cannot be told apart."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from indexer.errors import PayloadError
from indexer.tsv import check_file, count_lines, read_requests, write_requests

PAYLOADS = [
    {"memo": 'say "hi"\tand\\ leave', "n": 1},
    {"plain": "no escapes at all"},
    {"unicode": "caf\u00e9 \u2603", "newline": "a\nb"},
]


def _copy_file(path: Path) -> None:
    rows = [(i, "2026-01-01 00:00:00+00", "/new_block", json.dumps(p)) for i, p in
            enumerate(PAYLOADS, start=1)]  # fmt: skip
    with path.open("w", encoding="utf-8") as out:
        write_requests(out, rows)


def _raw_file(path: Path, payloads: list[str]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for i, p in enumerate(payloads, start=1):
            out.write(f"{i}\t2026-01-01 00:00:00+00\t/new_block\t{p}\n")


def _payloads(path: Path, fmt: str = "auto") -> list[object]:
    return [json.loads(r.payload) for r in read_requests(path, fmt)]  # type: ignore[arg-type]


def test_copy_text_plain_and_gzipped(tmp_path: Path) -> None:
    plain = tmp_path / "a.tsv"
    _copy_file(plain)
    packed = tmp_path / "a.tsv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert _payloads(plain) == PAYLOADS
    assert _payloads(packed) == PAYLOADS
    assert [r.id for r in read_requests(packed)] == [1, 2, 3]
    assert count_lines(plain) == 3
    assert count_lines(packed) is None  # not decompressed twice just for the ETA


def test_raw_json_lines_are_recognised(tmp_path: Path) -> None:
    path = tmp_path / "raw.tsv"
    # The first line holds `\"` (JSON's escape, never written by COPY): the file is raw from
    # there on, so the later `\\` stays JSON's own escaped backslash.
    _raw_file(path, [json.dumps(PAYLOADS[0]), json.dumps({"path": "C:\\new"})])
    assert _payloads(path) == [PAYLOADS[0], {"path": "C:\\new"}]


def test_ambiguous_raw_file_needs_its_format_named(tmp_path: Path) -> None:
    path = tmp_path / "ambiguous.tsv"
    text = json.dumps({"path": "C:\\new"})  # only `\\`: valid COPY text too
    _raw_file(path, [text])
    assert _payloads(path, "raw") == [{"path": "C:\\new"}]
    assert _payloads(path, "auto") == [{"path": "C:\new"}]  # read as COPY text
    with pytest.raises(ValueError, match="payload_format"):
        list(read_requests(path, "json"))  # type: ignore[arg-type]


def test_copy_format_named_never_reads_raw(tmp_path: Path) -> None:
    path = tmp_path / "copy.tsv"
    _raw_file(path, ['{"a": "\\"q\\""}'])
    (request,) = read_requests(path, "copy")
    assert request.payload == '{"a": ""q""}'  # COPY: `\"` stands for `"`
    with pytest.raises(json.JSONDecodeError):
        json.loads(request.payload)


def test_bad_lines_are_typed_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv.gz"
    path.write_bytes(gzip.compress(b"1\tonly three\tcolumns\n"))
    with pytest.raises(PayloadError, match="line 1: expected 4"):
        list(read_requests(path))


def test_multi_member_archive_reads_whole(tmp_path: Path) -> None:
    # `cat a.gz b.gz` is a valid gzip file (zcat reads both): an archive appended to in parts.
    rows = [(i, "2024-01-01 00:00:00+00", "/new_block", json.dumps({"n": i})) for i in (1, 2)]
    parts = []
    for row in rows:
        plain = tmp_path / f"part{row[0]}.tsv"
        with plain.open("w", encoding="utf-8", newline="\n") as f:
            write_requests(f, [row])
        parts.append(gzip.compress(plain.read_bytes()))
    path = tmp_path / "joined.tsv.gz"
    path.write_bytes(b"".join(parts))
    assert [r.payload for r in read_requests(path)] == [row[3] for row in rows]
    assert check_file(path) == 2


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_damaged_gzip_is_a_typed_error(tmp_path: Path, damage: str) -> None:
    lines = b"".join(b"%d\t2024-01-01\t/new_burn_block\t{}\n" % i for i in range(1, 20_001))
    packed = gzip.compress(lines)
    path = tmp_path / "damaged.tsv.gz"
    if damage == "truncated":  # an interrupted download
        path.write_bytes(packed[: len(packed) // 2])
    else:
        path.write_bytes(packed[:10] + bytes(b ^ 0x5A for b in packed[10:200]) + packed[200:])
    with pytest.raises(PayloadError, match="the gzip stream is corrupt"):
        check_file(path)
