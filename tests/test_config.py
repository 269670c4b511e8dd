from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.config import Settings


def test_defaults_run_on_embedded_testnet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("RECCHAIN_DATABASE_URL", raising=False)
    s = Settings()
    assert s.database_url is None
    assert s.chain_id == 0x80000000
    assert "ST1PQHQKV0RJXZFY1DGX8MNSNYVE3VGZJSRTPGZGM.rec-nft" in s.watched_contracts


def test_env_nested_and_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:secret@db:5432/x")
    monkeypatch.setenv("RECCHAIN_API__PORT", "9001")
    monkeypatch.setenv("RECCHAIN_NETWORK", "mainnet")
    s = Settings()
    assert s.api.port == 9001
    assert s.chain_id == 1
    assert s.database_url is not None
    # Secrets never appear in reprs or dumps that end up in logs.
    assert "secret" not in repr(s)
    assert "secret" not in str(s.model_dump())


def test_toml_file_below_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "recchain.toml"
    cfg.write_text('network = "mainnet"\n[relay]\nmax_fee = 42\n[api]\nport = 7000\n')
    monkeypatch.setenv("RECCHAIN_CONFIG", str(cfg))
    monkeypatch.setenv("RECCHAIN_API__PORT", "7100")
    s = Settings()
    assert s.network == "mainnet"
    assert s.relay.max_fee == 42
    assert s.api.port == 7100  # the environment wins over the file


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECCHAIN_NETWORK", "regtest")
    with pytest.raises(ValidationError):
        Settings()
