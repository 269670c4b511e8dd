"""`python -m ops.bench skip [FILE]`: the skip path. How fast `recchain replay` goes through an
archive that is mostly others' traffic, against `zcat FILE | wc -l` on the same file in the same
run (reading and decompressing it, nothing more); the target is at least half of that.

Without FILE, a mainnet-shaped archive is generated (and kept in the temp directory): blocks of
`--txs` transactions of others, each with its bytes and three events of foreign contracts (a
print, an FT and an STX transfer), gzipped like the public archives. Both commands run as real
processes; the replay writes into a fresh database of its own. MB/s counts uncompressed bytes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from db.session import database_url, to_libpq_url
from indexer.tsv import write_requests
from infra.config import get_settings
from ops.bench import chaingen
from ops.bench.ingest import BackendCpu, _create_db, _drop_db

FOREIGN = "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.arkadiko-swap-v2-1"


def foreign_block(height: int, parent: str, txs: int, rng: random.Random) -> dict[str, Any]:
    """A `/new_block` of `txs` transactions of others, none touching the watched contracts."""
    block = chaingen.new_block(height, parent, "foreign", [])
    for i in range(txs):
        txid = chaingen.h32("ftx", height, i)
        raw = "0x" + rng.randbytes(300).hex()
        block["transactions"].append(
            {"txid": txid, "tx_index": i, "status": "success", "raw_result": "0x0703",
             "raw_tx": raw, "execution_cost": {"read_count": 12, "read_length": 9000,
             "runtime": 120000, "write_count": 3, "write_length": 300},
             "microblock_sequence": None, "contract_abi": None, "vm_error": None}
        )  # fmt: skip
        value = "0x" + rng.randbytes(120).hex()
        asset = f"{FOREIGN}::lp-token"
        sender, recipient = chaingen.account(700 + i % 11), chaingen.account(800 + i % 13)
        block["events"] += [
            {"txid": txid, "event_index": 0, "committed": True, "type": "contract_event",
             "contract_event": {"contract_identifier": FOREIGN, "topic": "print",
                                "raw_value": value, "value": {"repr": "..."}}},
            {"txid": txid, "event_index": 1, "committed": True, "type": "ft_transfer_event",
             "ft_transfer_event": {"asset_identifier": asset, "sender": sender,
                                   "recipient": recipient, "amount": str(rng.randrange(10**9))}},
            {"txid": txid, "event_index": 2, "committed": True, "type": "stx_transfer_event",
             "stx_transfer_event": {"sender": sender, "recipient": recipient,
                                    "amount": str(rng.randrange(10**6)), "memo": ""}},
        ]  # fmt: skip
    return block


def generate(blocks: int, txs: int) -> Path:
    path = Path(tempfile.gettempdir()) / "recchain-bench-skip" / f"foreign-{blocks}x{txs}.tsv.gz"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(blocks * 1000 + txs)
    parent = chaingen.GENESIS
    tmp = path.with_suffix(".part")
    with gzip.open(tmp, "wt", compresslevel=6) as f:
        for h in range(1, blocks + 1):
            block = foreign_block(h, parent, txs, rng)
            parent = block["index_block_hash"]
            body = json.dumps(block, separators=(",", ":"))
            burn = json.dumps({"burn_block_hash": block["burn_block_hash"],
                               "burn_block_height": block["burn_block_height"],
                               "reward_recipients": [], "reward_slot_holders": []})  # fmt: skip
            ts = "2026-01-05 12:00:00+00"
            rows = [(2 * h - 1, ts, "/new_burn_block", burn), (2 * h, ts, "/new_block", body)]
            write_requests(f, rows)
    tmp.rename(path)
    return path


def _raw_bytes(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    n = 0
    with opener(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += len(chunk)
    return n


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(path: Path | None, blocks: int, txs: int, replay_cwd: Path | None = None) -> dict[str, Any]:
    file = path or generate(blocks, txs)
    size = _raw_bytes(file)
    reader = "zcat" if file.suffix == ".gz" else "cat"
    cpu = _children_cpu()
    started = time.perf_counter()
    subprocess.run(f"{reader} '{file}' | wc -l", shell=True, check=True, capture_output=True)
    zcat_s = time.perf_counter() - started
    zcat_cpu = _children_cpu() - cpu
    server = database_url(get_settings())
    name = f"recchain_bench_skip_{uuid.uuid4().hex[:8]}"
    url = _create_db(server, name)
    try:
        env = {**os.environ, "DATABASE_URL": to_libpq_url(url)}
        # As an installed package runs: with its bytecode cached (compiling the project's
        # modules at each start would add a tenth of a second to the replay's start-up).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        cpu = _children_cpu()
        started = time.perf_counter()
        with BackendCpu(name) as pg:
            proc = subprocess.run(
                [sys.executable, "-m", "recchain.cli", "replay", "--quiet", str(file)],
                env=env, capture_output=True, text=True, check=False, cwd=replay_cwd,
            )  # fmt: skip
        replay_s = time.perf_counter() - started
        replay_cpu = _children_cpu() - cpu
    finally:
        _drop_db(server, name)
    if proc.returncode != 0:
        raise RuntimeError(f"replay failed: {proc.stderr[-2000:]}")
    summary = json.loads(proc.stderr.strip().splitlines()[-1])
    mb = size / 1e6
    return {
        "file": str(file),
        "mb": round(mb, 1),
        "requests": summary["requests"],
        "zcat_wc_s": round(zcat_s, 2),
        "replay_s": round(replay_s, 2),
        # The replay's own time (after start-up: imports, settings, the database checks).
        "replay_own_s": summary["seconds"],
        # CPU seconds: the steadier figures on a shared machine (pg: the backends serving the
        # replay, when the server runs on this host).
        "zcat_wc_cpu_s": round(zcat_cpu, 2),
        "replay_cpu_s": round(replay_cpu, 2),
        "replay_pg_cpu_s": pg.seconds,
        "zcat_wc_mb_per_s": round(mb / zcat_s, 1),
        "replay_mb_per_s": round(mb / replay_s, 1),
        "ratio": round(zcat_s / replay_s, 3),
        "ratio_own": round(zcat_s / summary["seconds"], 3),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def _cmd(args: argparse.Namespace) -> int:
    figures = run(args.file, args.blocks, args.txs, args.replay_cwd)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(
        f"{figures['file']}: {figures['mb']} MB, {figures['requests']} requests; "
        f"zcat | wc -l {figures['zcat_wc_mb_per_s']} MB/s, recchain replay "
        f"{figures['replay_mb_per_s']} MB/s: {figures['ratio']:.2f}x (target >= 0.5; "
        f"{figures['ratio_own']:.2f}x after start-up); "
        f"load {figures['load_avg_1m']}"
    )
    return 0


def register(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = bench_sub.add_parser("skip", help="replay MB/s of a mostly-foreign archive vs zcat | wc -l")
    p.add_argument("file", nargs="?", type=Path, help="an archive (default: a generated one)")
    p.add_argument("--blocks", type=int, default=400, help="blocks of the generated archive")
    p.add_argument("--txs", type=int, default=50, help="transactions per generated block")
    p.add_argument(
        "--replay-cwd",
        type=Path,
        help="run the replay from this checkout (to compare with the code before a change)",
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(handler=_cmd)
