"""The dev gateway as `make dev` runs it: its own process, the demo block directory."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from indexer.metadata.cid import verify_block
from ops.bench.e2e import free_port
from tests.metadata.conftest import Store


def test_module_serves_blocks_files_and_kubo_rpc(store: Store) -> None:
    cid = store.doc(name="served by the module")
    dag = store.file(b'{"sip":16,"name":"multi"}' + b" " * 300_000)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "indexer.metadata.devgateway",
            "--dir",
            str(store.root),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=5) as client:
            for _ in range(100):
                try:
                    client.get(f"{base}/_dev/hits")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            raw = client.get(f"{base}/ipfs/{cid}", headers={"Accept": "application/vnd.ipld.raw"})
            assert raw.headers["content-type"] == "application/vnd.ipld.raw"
            verify_block(cid, raw.content)
            root_block = client.get(f"{base}/ipfs/{dag.root}?format=raw").content
            verify_block(dag.root, root_block)
            whole = client.get(f"{base}/ipfs/{dag.root}").content
            assert whole.startswith(b'{"sip":16') and len(whole) == 300_025
            assert client.post(f"{base}/api/v0/cat?arg={dag.root}").content == whole
            missing = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
            assert client.get(f"{base}/ipfs/{missing}?format=raw").status_code == 404
            kubo_err = client.post(f"{base}/api/v0/block/get?arg={missing}")
            assert kubo_err.status_code == 500 and kubo_err.json()["Type"] == "error"
            switch = client.post(
                f"{base}/_dev/behaviour", json={"cid": str(cid), "mode": "error500"}
            )
            assert switch.status_code == 200
            assert client.get(f"{base}/ipfs/{cid}?format=raw").status_code == 500
            bad = client.post(f"{base}/_dev/behaviour", json={"mode": "explode"})
            assert bad.status_code == 400
    finally:
        proc.terminate()
        proc.wait(timeout=10)
