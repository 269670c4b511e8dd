"""Typed client errors. Anything else raised while executing is masked as an internal error."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request the API refuses, with a stable machine-readable `code` in the error extensions."""

    code = "BAD_REQUEST"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        # graphql-core copies `extensions` of the original exception onto the GraphQL error.
        self.extensions: dict[str, Any] = {"code": self.code, **details}


class BadUserInput(ApiError):
    code = "BAD_USER_INPUT"


class BlockNotFound(ApiError):
    code = "BLOCK_NOT_FOUND"


class LimitExceeded(ApiError):
    code = "LIMIT_EXCEEDED"


class NotAvailable(ApiError):
    code = "NOT_AVAILABLE"
