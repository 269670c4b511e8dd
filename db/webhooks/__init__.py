"""Webhooks in the database: event documents (`docs`), filters (`filters`), the outbox feed the
indexer calls in its transaction (`feed`) and the management SQL of endpoints and their history
(`store`). The sender (`writers/webhooks`) and every other caller reach the tables through
these modules."""
