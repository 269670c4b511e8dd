"""A real dev gateway on a loopback ephemeral port, serving blocks the tests write."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from indexer.metadata.cid import Cid, raw_cid
from indexer.metadata.dagpb import BuiltDag, build_directory, build_file
from indexer.metadata.devgateway import RunningGateway
from infra.config import MetadataSettings


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root

    def raw(self, content: bytes) -> Cid:
        cid = raw_cid(content)
        (self.root / cid.key).write_bytes(content)
        return cid

    def doc(self, **fields: Any) -> Cid:
        return self.raw(json.dumps({"sip": 16, **fields}).encode())

    def file(self, content: bytes, **kw: Any) -> BuiltDag:
        dag = build_file(content, **kw)
        for key, block in dag.blocks.items():
            (self.root / key).write_bytes(block)
        return dag

    def directory(self, entries: dict[str, tuple[Cid, int]]) -> Cid:
        cid, block = build_directory(entries)
        (self.root / cid.key).write_bytes(block)
        return cid


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("ipfs"))


@pytest.fixture(scope="session")
def _gateways(store: Store) -> Iterator[tuple[RunningGateway, RunningGateway]]:
    with RunningGateway(store.root) as first, RunningGateway(store.root) as second:
        yield first, second


@pytest.fixture
def gw(_gateways: tuple[RunningGateway, RunningGateway]) -> Iterator[RunningGateway]:
    """The first gateway, behaving unless a test says otherwise."""
    yield _gateways[0]
    for g in _gateways:
        g.gateway.behaviours.clear()
        g.gateway.set_behaviour(None, "ok")


@pytest.fixture
def gw2(_gateways: tuple[RunningGateway, RunningGateway], gw: RunningGateway) -> RunningGateway:
    return _gateways[1]


def fast_settings(*gateways: str, **extra: Any) -> MetadataSettings:
    base: dict[str, Any] = {
        "gateways": list(gateways),
        "kubo_rpc_url": None,
        # Generous for a busy machine; the stall tests set tighter bounds themselves.
        "request_timeout_s": 5.0,
        "total_timeout_s": 8.0,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "poll_interval_s": 0.05,
        "max_attempts": 3,
        "lease_s": 30.0,
    }
    base.update(extra)
    return MetadataSettings(**base)
