"""Fields over other roles' tables: resolved metadata and the relay outbox."""

from __future__ import annotations

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from db.models.metadata import MetadataDocument, MetadataUri
from db.models.relay import RelayTx
from tests.graphql_api.builder import Chain
from tests.graphql_api.conftest import Api
from tests.graphql_api.wsclient import Subscriber, wait_for

TXID = "0x" + "ab" * 32


async def test_certificate_metadata_once_resolved(api: Api, engine: AsyncEngine) -> None:
    chain = Chain()
    chain.block()
    token = chain.mint(chain.facility(), "ST1A", 10)
    await chain.write(engine)
    q = "query($t: Int!) { certificate(tokenId: $t) { metadata { cid name document } } }"
    assert (await api.data(q, {"t": token}))["certificate"]["metadata"] is None
    doc = {"name": "REC #1", "description": "1 MWh", "image": "ipfs://img"}
    async with engine.begin() as conn:
        await conn.execute(
            insert(MetadataDocument).values(
                cid="bafyx", document=doc, raw_size=10, resolved_by="test"
            )
        )
        await conn.execute(
            insert(MetadataUri).values(uri=f"ipfs://cid{token}", cid="bafyx", resolved_by="test")
        )
    meta = (await api.data(q, {"t": token}))["certificate"]["metadata"]
    assert meta == {"cid": "bafyx", "name": "REC #1", "document": doc}


async def test_relayed_transaction_and_its_status_subscription(
    api: Api, engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(RelayTx).values(
                txid=TXID,
                raw_tx=b"\x00",
                sender="ST1A",
                nonce=1,
                fee=1000,
                contract_id="ST1.rec-nft",
                function_name="transfer",
            )
        )
    got = await api.data(
        "query($t: String!) { relayedTransaction(txid: $t) { status functionName fee } }",
        {"t": TXID},
    )
    assert got["relayedTransaction"] == {
        "status": "received",
        "functionName": "transfer",
        "fee": "1000",
    }
    sub = await Subscriber.connect(api.ws_url)
    await sub.subscribe(
        "subscription($t: String!) { relayStatus(txid: $t) { status blockHeight } }", {"t": TXID}
    )
    assert (await sub.next())["data"]["relayStatus"] == {"status": "received", "blockHeight": None}
    await wait_for(lambda: api.app.state.hub.subscriber_count == 1, "subscribed")
    # The outbox's trigger NOTIFYs every status change.
    async with engine.begin() as conn:
        await conn.execute(update(RelayTx).where(RelayTx.txid == TXID).values(status="broadcast"))
    assert (await sub.next())["data"]["relayStatus"]["status"] == "broadcast"
    await sub.close()
