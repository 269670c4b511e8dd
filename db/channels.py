"""NOTIFY channels: the only runtime link between the indexer, the API and the relay.

Payloads are JSON objects; they name what changed, never the data itself, so a listener that
misses one can always re-read the tables.
"""

# {"height", "hash", "canonical_tip", "rolled_back": [hash...], "changes": {"listings": [ids],
#  "certificates": [ids], ...}} after every committed block or rollback.
BLOCKS = "recchain_blocks"
# {"txid", "status"} when a relayed transaction changes status.
RELAY = "recchain_relay"
# {"uri", "status"} when a metadata job finishes.
METADATA = "recchain_metadata"
# "" when the indexer (or a redelivery) queued webhook events: wakes the senders.
WEBHOOKS = "recchain_webhooks"
