"""All tables. Importing this package registers every model on `Base.metadata`."""

from db.models.base import FACT_TABLES, VERSIONED_TABLES, Base, Versioned
from db.models.chain import Block, Checkpoint, Event, MempoolTx, RawRequest, Transaction
from db.models.domain import (
    Bid,
    Certificate,
    ExpiryRule,
    Facility,
    GenerationReport,
    Listing,
    Retirement,
    Sale,
    Transfer,
    Verifier,
)
from db.models.metadata import MetadataDocument, MetadataJob, MetadataUri  # noqa: F401
from db.models.relay import RelayAttempt, RelayTx  # noqa: F401
from db.models.webhooks import (  # noqa: F401
    WebhookAttempt,
    WebhookEndpoint,
    WebhookEvent,
    WebhookFilter,
)

__all__ = [
    "FACT_TABLES",
    "VERSIONED_TABLES",
    "Base",
    "Bid",
    "Block",
    "Certificate",
    "Checkpoint",
    "Event",
    "ExpiryRule",
    "Facility",
    "GenerationReport",
    "Listing",
    "MempoolTx",
    "RawRequest",
    "Retirement",
    "Sale",
    "Transaction",
    "Transfer",
    "Verifier",
    "Versioned",
]
