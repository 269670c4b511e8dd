"""The transaction relay: verify -> outbox -> broadcast -> track (see writers/README.md)."""
