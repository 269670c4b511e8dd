"""The demo chain's metadata files: each is named by the CID of its bytes, is valid SIP-016,
carries the REC attributes, and resolves through the dev gateway like any IPFS content."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.metadata.cid import parse_cid, verify_block
from indexer.metadata.devgateway import RunningGateway
from indexer.metadata.resolver import Resolver
from indexer.metadata.sip016 import parse_document, rec_claims
from tests.metadata.conftest import fast_settings

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo" / "ipfs"
FILES = sorted(DEMO.iterdir()) if DEMO.is_dir() else []


@pytest.mark.skipif(not FILES, reason="demo fixtures not recorded")
def test_every_demo_file_matches_its_cid_and_is_sip016() -> None:
    for path in FILES:
        cid = parse_cid(path.name)
        content = path.read_bytes()
        verify_block(cid, content)
        doc = parse_document(content)
        claims = rec_claims(doc)
        if any(a.get("trait_type") == "wh" for a in doc.get("attributes", [])):
            assert claims.wh is not None and claims.wh > 0, path.name
            assert claims.facility_id is not None, path.name
            assert claims.period_start is not None and claims.period_end is not None
            assert claims.period_start < claims.period_end


@pytest.mark.skipif(not FILES, reason="demo fixtures not recorded")
async def test_demo_files_resolve_through_the_dev_gateway() -> None:
    with RunningGateway(DEMO) as gw:
        resolver = Resolver.create(fast_settings(gw.url))
        try:
            for path in FILES[:10]:
                res = await resolver.resolve(f"ipfs://{path.name}")
                assert res.cid == parse_cid(path.name).key
                assert res.raw_size == path.stat().st_size
        finally:
            await resolver.aclose()
