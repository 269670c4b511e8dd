"""Typed errors of the chain follower. Each carries a reason that is stored and returned as is."""

from __future__ import annotations


class IndexerError(Exception):
    """Base class: something the indexer refused or could not do."""


class PayloadError(IndexerError, ValueError):
    """A source delivered a payload that does not have the documented shape.

    The request is stored with this reason (raw_requests.error) and nothing else is written.
    """


class EventSchemaError(PayloadError):
    """A watched contract printed a value that does not match the event schema (EVENTS.md)."""


class FinalityError(IndexerError):
    """A fork reaches below the configured finality horizon; refusing it loudly beats silently
    rewriting history that consumers were told is final."""


class SourceError(IndexerError):
    """A remote source misbehaved in a way retries will not fix."""
