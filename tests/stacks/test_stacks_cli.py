"""`recchain stacks ...` through recchain.cli.main."""

from __future__ import annotations

import io
import json

import pytest

from recchain.cli import main
from tests.stacks.vectors import load

TXS = {v["name"]: v for v in load("transactions")}
VALUES = load("clarity")


def test_decode_then_encode_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    vector = next(v for v in VALUES if v["name"] == "tuple REC mint event")
    assert main(["stacks", "decode-value", vector["hex"], "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == vector["json"]
    assert main(["stacks", "encode-value", json.dumps(printed)]) == 0
    assert capsys.readouterr().out.strip() == vector["hex"]


def test_readable_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["stacks", "decode-value", "0x0c0000000201610100000000000000000000000000000005016203"])
        == 0
    )
    assert capsys.readouterr().out.strip() == "{a: u5, b: true}"


def test_stdin_argument(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("0x0a0100000000000000000000000000000007\n"))
    assert main(["stacks", "decode-value", "-"]) == 0
    assert capsys.readouterr().out.strip() == "(some u7)"


def test_decode_tx_json(capsys: pytest.CaptureFixture[str]) -> None:
    vector = TXS["sponsored contract call mainnet #1"]
    assert main(["stacks", "decode-tx", vector["hex"], "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["txid"] == vector["txid"]
    assert out["signature_valid"] is True
    assert out["sponsor"]["signer_address"] == vector["sponsor"]["signer_address"]
    assert out["payload"]["args"] == vector["payload"]["args"]


def test_decode_tx_readable_flags_tampering(capsys: pytest.CaptureFixture[str]) -> None:
    vector = TXS["tampered fee"]
    assert main(["stacks", "decode-tx", vector["hex"]]) == 0
    out = capsys.readouterr().out
    assert f"0x{vector['txid']}" in out
    assert "signature_valid: NO" in out
    assert vector["origin"]["signer_address"] in out


def test_address_commands(capsys: pytest.CaptureFixture[str]) -> None:
    vector = load("addresses")[7]
    assert main(["stacks", "address", "encode", str(vector["version"]), vector["hash160"]]) == 0
    assert capsys.readouterr().out.strip() == vector["address"]
    assert main(["stacks", "address", "decode", f"{vector['address']}.rec-market", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hash160"] == vector["hash160"]
    assert out["contract_name"] == "rec-market"


@pytest.mark.parametrize(
    "argv",
    [
        ["stacks", "decode-value", "0x0f"],
        ["stacks", "decode-value", "zz"],
        ["stacks", "encode-value", "{not json"],
        ["stacks", "encode-value", '{"type": "uint", "value": "-1"}'],
        ["stacks", "decode-tx", "0x00"],
        ["stacks", "address", "decode", "SP000000000000000000002Q6VF79"],
        ["stacks", "address", "encode", "22", "abcd"],
    ],
)
def test_bad_input_exits_2_with_one_message(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ")
    assert len(captured.err.strip().splitlines()) == 1
    assert "Traceback" not in captured.err
