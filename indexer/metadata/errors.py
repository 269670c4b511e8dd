"""Typed failures of metadata resolution.

Every failure carries a short, stable ``reason`` code: it is what the job queue stores, what the
metrics count and what the CLI prints, so operators can group failures without parsing prose.
"""

from __future__ import annotations


class MetadataError(Exception):
    """Base class: ``reason`` is a stable machine code, the message is for humans."""

    reason = "error"
    # Content-addressed failures (bad CID, invalid document behind a verified CID) can never
    # succeed on retry; transport failures can.
    permanent = False

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.reason


class UriError(MetadataError):
    reason = "bad_uri"
    permanent = True


class CidError(MetadataError):
    reason = "bad_cid"
    permanent = True


class UnsupportedError(MetadataError):
    reason = "unsupported"
    permanent = True


class DagPbError(MetadataError):
    """A block that hashed correctly but is not well-formed dag-pb/UnixFS."""

    reason = "bad_dagpb"
    permanent = True


class NotFoundError(MetadataError):
    """A path inside a verified directory does not exist (content-addressed, so final)."""

    reason = "not_found"
    permanent = True


class VerificationError(MetadataError):
    """Bytes that do not hash to the CID that was asked for: the source is lying or broken."""

    reason = "hash_mismatch"


class TooLargeError(MetadataError):
    reason = "too_large"


class FetchError(MetadataError):
    """Transport-level failure of one source (status, connection, protocol)."""

    reason = "fetch_failed"


class TimeoutError_(FetchError):
    reason = "timeout"


class RateLimitedError(FetchError):
    reason = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RedirectError(FetchError):
    reason = "too_many_redirects"


class HttpStatusError(FetchError):
    reason = "http_status"

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message, reason="not_found" if status in (404, 410) else None)
        self.status = status


class NotAllowedError(MetadataError):
    """A URI scheme or host the configuration does not allow fetching."""

    reason = "not_allowed"
    permanent = True


class DocumentError(MetadataError):
    """The bytes were obtained (and verified where possible) but are not acceptable JSON."""

    reason = "invalid_json"
    permanent = True


class FieldError(DocumentError):
    """One SIP-016 field is wrong; ``field`` is a JSON path such as ``attributes[2].value``."""

    reason = "schema"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class SchemaError(DocumentError):
    """All per-field problems of one document, reported together."""

    reason = "schema"

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = errors


class ResolutionFailed(MetadataError):
    """Every source failed; ``attempts`` keeps the reason per source for the operator."""

    reason = "all_sources_failed"

    def __init__(self, attempts: list[tuple[str, MetadataError]]) -> None:
        detail = "; ".join(f"{src}: {err.reason} ({err.message})" for src, err in attempts)
        super().__init__(detail or "no source configured")
        self.attempts = attempts
        reasons = {err.reason for _, err in attempts}
        if len(reasons) == 1:
            self.reason = next(iter(reasons))
        # Only final when every source agreed the content itself is bad.
        self.permanent = bool(attempts) and all(err.permanent for _, err in attempts)
        limited = [e.retry_after for _, e in attempts if isinstance(e, RateLimitedError)]
        self.retry_after: float | None = max(limited) if limited else None
