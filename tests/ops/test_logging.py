"""Structured logs: one JSON object per line, correlation ids from context, no secrets."""

from __future__ import annotations

import io
import json
import logging
import sys
from typing import Any

import pytest
from pydantic import SecretStr

from infra.config import Settings
from infra.logging import REDACTED, configure_logging, log_context

DB_PASSWORD = "s3cr3t-db-pass"
API_KEY = "relay-key-0123456789"


def _settings(**overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "database_url": f"postgresql://recchain:{DB_PASSWORD}@db:5432/recchain",
        "log_json": True,
        **overrides,
    }
    return Settings(**fields)


def _capture(settings: Settings) -> tuple[io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = configure_logging(settings, stream=stream)
    return stream, handler


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_request_and_block_context() -> None:
    stream, handler = _capture(_settings())
    try:
        log = logging.getLogger("recchain.test")
        with log_context(request_id="req-1"):
            log.info("handled %s", "query", extra={"field": "certificates"})
            with log_context(block_height=42, index_block_hash="0xabc"):
                log.warning("block applied")
        log.info("outside")
    finally:
        logging.getLogger().removeHandler(handler)
    first, second, third = _lines(stream)
    assert first["msg"] == "handled query" and first["level"] == "info"
    assert first["request_id"] == "req-1" and first["field"] == "certificates"
    assert first["logger"] == "recchain.test" and first["ts"].endswith("+00:00")
    assert second["request_id"] == "req-1" and second["block_height"] == 42
    assert second["index_block_hash"] == "0xabc"
    assert "request_id" not in third and "block_height" not in third


def test_secrets_never_reach_the_output() -> None:
    settings = _settings(
        relay={"api_keys": [API_KEY]},
        api={"read_database_url": "postgresql://reader:replica-pass-77@replica/recchain"},
    )
    stream, handler = _capture(settings)
    try:
        log = logging.getLogger("recchain.test")
        log.info("connecting to %s", settings.database_url.get_secret_value())  # type: ignore[union-attr]
        log.info("replica postgresql://reader:replica-pass-77@replica/recchain")
        log.info("request", extra={"api_key": API_KEY, "password": "x", "token": SecretStr("t")})
        log.info("header echoed: Authorization: Bearer %s", API_KEY)
        log.info("settings %s", settings)
        try:
            raise RuntimeError(f"bad key {API_KEY} for postgresql://u:other-pass@h/db")
        except RuntimeError:
            log.exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    out = stream.getvalue()
    for secret in (DB_PASSWORD, API_KEY, "replica-pass-77", "other-pass"):
        assert secret not in out
    lines = _lines(stream)
    assert lines[0]["msg"] == f"connecting to postgresql://recchain:{REDACTED}@db:5432/recchain"
    assert lines[2]["api_key"] == REDACTED and lines[2]["password"] == REDACTED
    assert "RuntimeError" in lines[-1]["exc"]


def test_text_mode_for_terminals_is_scrubbed_too() -> None:
    stream, handler = _capture(_settings(log_json=False))
    try:
        with log_context(request_id="r-9"):
            logging.getLogger("recchain.test").error("db %s", DB_PASSWORD)
    finally:
        logging.getLogger().removeHandler(handler)
    line = stream.getvalue().strip()
    assert line.endswith("request_id=r-9")
    assert DB_PASSWORD not in line and f"db {REDACTED}" in line
    assert "ERROR" in line


def test_level_from_settings_filters_debug() -> None:
    stream, handler = _capture(_settings(log_level="info"))
    try:
        logging.getLogger("recchain.test").debug("hidden")
        logging.getLogger("recchain.test").info("shown")
    finally:
        logging.getLogger().removeHandler(handler)
    assert [line["msg"] for line in _lines(stream)] == ["shown"]


def test_default_handler_follows_stderr_when_it_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    handler = configure_logging(_settings(log_json=False))
    try:
        logging.getLogger("recchain.test").warning("before")
        first.close()  # what a test harness does with a captured stream
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("recchain.test").warning("after")  # no "Logging error"
        assert "after" in second.getvalue()
    finally:
        logging.getLogger().removeHandler(handler)


def test_lines_are_bounded_whatever_a_client_sent() -> None:
    from infra.logging import MAX_EXC_CHARS, MAX_FIELD_CHARS, MAX_MESSAGE_CHARS

    stream, handler = _capture(_settings())
    huge = "z" * 200_000
    try:
        log = logging.getLogger("recchain.test")
        try:
            raise ValueError(f"block {huge} is unknown")
        except ValueError:
            log.exception(
                "query failed: %s", huge, extra={"query": huge, "ids": list(range(10**4))}
            )
    finally:
        logging.getLogger().removeHandler(handler)
    (line,) = _lines(stream)
    assert len(line["msg"]) <= MAX_MESSAGE_CHARS + 100 and line["msg"].startswith(
        "query failed: zz"
    )
    assert len(line["query"]) <= MAX_FIELD_CHARS + 100 and "characters cut" in line["query"]
    assert len(line["ids"]) == 101 and line["ids"][-1] == f"... {10**4 - 100} more"
    # The exception keeps its type (start) and the end of its message.
    assert len(line["exc"]) <= MAX_EXC_CHARS + 100
    assert line["exc"].startswith("Traceback") and line["exc"].endswith("z is unknown")
    assert len(stream.getvalue()) < MAX_MESSAGE_CHARS + MAX_EXC_CHARS + 3 * MAX_FIELD_CHARS


@pytest.mark.parametrize("offset", range(-20, 21, 3))
def test_a_clip_never_keeps_part_of_a_secret(offset: int) -> None:
    from infra.logging import MAX_MESSAGE_CHARS

    stream, handler = _capture(_settings(log_json=False))
    url_secret = "urlpass-9f8e7d6c5b4a"
    # Each secret straddles where the message is cut (head and tail), at several offsets.
    head_cut = MAX_MESSAGE_CHARS - MAX_MESSAGE_CHARS // 4
    message = (
        "x" * (head_cut + offset - len(DB_PASSWORD) // 2)
        + DB_PASSWORD
        + "y" * 50_000
        + f"postgresql://u:{url_secret}@h/db"
        + "w" * (MAX_MESSAGE_CHARS // 4 + offset - 10)
    )
    try:
        logging.getLogger("recchain.test").warning(message)
    finally:
        logging.getLogger().removeHandler(handler)
    out = stream.getvalue()
    assert "characters cut" in out
    for secret in (DB_PASSWORD, url_secret):
        for part in range(4, len(secret) + 1):
            assert secret[:part] not in out and secret[-part:] not in out, (secret, part)
