"""Token URI forms, data: URIs, hostile JSON and the SIP-016 per-field check."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from indexer.metadata.errors import DocumentError, SchemaError, TooLargeError, UriError
from indexer.metadata.sip016 import load_json, parse_document, rec_claims, validate
from indexer.metadata.uri import (
    DataTarget,
    HttpTarget,
    IpfsTarget,
    expand_token_id,
    parse_uri,
)

HW = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
HW_V0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        (f"ipfs://{HW}", ()),
        (f"ipfs://ipfs/{HW}", ()),
        (f"ipfs://{HW}/meta/1.json", ("meta", "1.json")),
        (f"/ipfs/{HW}/a%20b", ("a b",)),
        (f"https://gateway.example/ipfs/{HW}/x", ("x",)),
        (f"https://{HW}.ipfs.dweb.example/x", ("x",)),
        (HW, ()),
    ],
)
def test_ipfs_forms_become_verifiable_targets(uri: str, path: tuple[str, ...]) -> None:
    target = parse_uri(uri)
    assert isinstance(target, IpfsTarget)
    assert target.cid.key == HW
    assert target.path == path


def test_cidv0_in_uri() -> None:
    target = parse_uri(f"ipfs://{HW_V0}")
    assert isinstance(target, IpfsTarget) and target.cid.version == 0


def test_plain_https_and_token_id_expansion() -> None:
    uri = expand_token_id("https://example.org/meta/{id}.json", 42)
    assert uri == "https://example.org/meta/42.json"
    assert parse_uri(uri) == HttpTarget(uri)


def test_data_uris_base64_and_percent() -> None:
    doc = b'{"sip":16,"name":"\xc3\xa9"}'
    b64 = parse_uri("data:application/json;base64," + base64.b64encode(doc).decode())
    pct = parse_uri("data:application/json,%7B%22sip%22%3A16%2C%22name%22%3A%22%C3%A9%22%7D")
    assert isinstance(b64, DataTarget) and b64.content == doc
    assert isinstance(pct, DataTarget) and pct.content == doc
    assert b64.media_type == "application/json"


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "ftp://x/y",
        "ipfs://not-a-cid",
        f"ipfs://{HW}/../etc/passwd",
        "data:application/json;base64,!!!",
        "data:nocomma",
    ],
)
def test_bad_uris_are_typed_errors(uri: str) -> None:
    with pytest.raises(UriError):
        parse_uri(uri)


def test_oversized_data_uri() -> None:
    with pytest.raises(TooLargeError):
        parse_uri("data:," + "a" * 2000, max_data_bytes=1000)


def test_json_depth_bomb_refused_before_parsing() -> None:
    with pytest.raises(DocumentError) as err:
        load_json(b"[" * 500_000 + b"]" * 500_000)
    assert err.value.reason == "json_bomb"


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    doc = load_json(json.dumps({"sip": 16, "name": "[" * 1000}).encode())
    assert doc["name"] == "[" * 1000


@pytest.mark.parametrize(
    "raw",
    [b'{"sip":16,"name":"x","n":' + b"9" * 5000 + b"}", b'{"n": 1e999}', b'{"n": NaN}'],
)
def test_huge_numbers_refused(raw: bytes) -> None:
    with pytest.raises(DocumentError) as err:
        load_json(raw)
    assert err.value.reason in ("huge_number", "invalid_json")


def test_too_many_values_refused() -> None:
    with pytest.raises(DocumentError) as err:
        load_json(b"[" + b"0," * 200_000 + b"0]")
    assert err.value.reason == "json_bomb"


def test_duplicate_keys_and_invalid_json() -> None:
    with pytest.raises(DocumentError):
        load_json(b'{"sip":16,"sip":17,"name":"x"}')
    with pytest.raises(DocumentError) as err:
        load_json(b'{"sip":16,')
    assert err.value.reason == "invalid_json"
    with pytest.raises(DocumentError):
        load_json(b"\xff\xfe{}")


def test_schema_reports_every_wrong_field() -> None:
    with pytest.raises(SchemaError) as err:
        validate(
            {
                "sip": True,
                "description": 5,
                "attributes": [{"trait_type": "a", "value": 1}, {"value": [1]}, 3],
                "properties": [],
                "localization": {"uri": "x"},
            }
        )
    fields = {e.field for e in err.value.errors}
    assert fields == {
        "sip",
        "name",
        "description",
        "attributes[1].trait_type",
        "attributes[1].value",
        "attributes[2]",
        "properties",
        "localization.default",
        "localization.locales",
    }


def test_valid_document_passes() -> None:
    raw = json.dumps(
        {
            "sip": 16,
            "name": "REC #1",
            "image": "ipfs://x",
            "attributes": [{"trait_type": "Energy (Wh)", "value": 1000, "display_type": "n"}],
            "properties": {"facility_id": 7},
            "localization": {"uri": "ipfs://x/{locale}.json", "default": "en", "locales": ["en"]},
        }
    ).encode()
    assert parse_document(raw)["name"] == "REC #1"


def test_rec_claims_from_attributes_and_properties() -> None:
    doc = {
        "sip": 16,
        "name": "x",
        "attributes": [
            {"trait_type": "Energy Source", "value": "ES100"},
            {"trait_type": "Country", "value": "de"},
            {"trait_type": "Energy (Wh)", "value": "5"},
        ],
        "properties": {
            "facility_id": "7",
            "period_start": 1_700_000_000,
            "period_end": "2023-11-14T23:13:20Z",
            "energy_wh": 1_000_000,
        },
    }
    claims = rec_claims(doc)
    assert claims.facility_id == 7
    assert claims.wh == 1_000_000  # properties win over attributes
    assert claims.energy_source == "ES100"
    assert claims.country == "DE"
    assert claims.period_start == datetime.fromtimestamp(1_700_000_000, UTC)
    assert claims.period_end == datetime(2023, 11, 14, 23, 13, 20, tzinfo=UTC)
