from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.config import Settings
from writers.policy import Policy

MAINNET_DEPLOYER = "SPD1M6GT38D1M6GT38D1M6GT38D1M6GT3BS184AQ"
SBTC_MAINNET = "SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4.sbtc-token"


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
    monkeypatch.setenv("RECCHAIN_DEPLOYER", MAINNET_DEPLOYER)
    s = Settings()
    assert s.api.port == 9001
    assert s.chain_id == 1
    assert s.database_url is not None
    # Secrets never appear in reprs or dumps that end up in logs.
    assert "secret" not in repr(s)
    assert "secret" not in str(s.model_dump())


def test_toml_file_below_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "recchain.toml"
    cfg.write_text(
        f'network = "mainnet"\ndeployer = "{MAINNET_DEPLOYER}"\n[relay]\nmax_fee = 42\n'
        "[api]\nport = 7000\n"
    )
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


def test_a_network_and_addresses_that_disagree_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The devnet deployer on mainnet, or a mainnet contract on testnet, would match nothing
    the chain sends: refused at start with a line naming the setting."""
    monkeypatch.setenv("RECCHAIN_NETWORK", "mainnet")
    with pytest.raises(ValidationError, match=r"deployer: .* testnet address but network is"):
        Settings()
    with pytest.raises(ValidationError, match=r"contracts: .* mainnet address but network is"):
        Settings(network="testnet", contracts=[SBTC_MAINNET])
    with pytest.raises(ValidationError, match="not a contract id"):
        Settings(network="mainnet", contracts=[f"{MAINNET_DEPLOYER}.a.b"])
    with pytest.raises(ValidationError, match="not a c32 address"):
        Settings(network="mainnet", contracts=["SPlowercase-not-c32-at-all-xx.rec-nft"])


def test_contracts_at_real_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mainnet with the market's contracts listed by their fully qualified ids, the deployer
    left at its (testnet) default: short names elsewhere (the relay's allowed functions)
    resolve to the listed contract of that name."""
    ids = [f"{MAINNET_DEPLOYER}.{n}" for n in ("verification", "rec-nft", "marketplace")]
    monkeypatch.setenv("RECCHAIN_NETWORK", "mainnet")
    monkeypatch.setenv("RECCHAIN_CONTRACTS", json.dumps(ids))
    s = Settings()
    assert s.watched_contracts == frozenset(ids)
    assert s.contract_id("rec-nft") == f"{MAINNET_DEPLOYER}.rec-nft"
    assert (s.chain_id, s.network) == (0x00000001, "mainnet")
    policy = Policy.from_settings(s)
    assert (f"{MAINNET_DEPLOYER}.rec-nft", "transfer") in policy.allowed
    assert policy.network_version == 0x00 and policy.chain_id == 0x00000001
