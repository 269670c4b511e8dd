"""Webhook delivery (`recchain webhooks send`) and the relay's `/v1/webhooks` routes: the
outbox the indexer fills (`db/webhooks`) moved to the endpoints, signed, in order."""
