"""IPFS / SIP-016 token metadata: resolved, verified, queued; indexing never waits for it."""
