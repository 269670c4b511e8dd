"""Scalars for values GraphQL's 32-bit Int and Float cannot carry exactly."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import NewType

import strawberry

from graphql_api.errors import BadUserInput


def _parse_bigint(value: object) -> int:
    if isinstance(value, bool):
        raise BadUserInput("BigInt expects an integer or a decimal string")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    raise BadUserInput(f"BigInt expects an integer or a decimal string, got {value!r}")


def _parse_bigdecimal(value: object) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise BadUserInput(f"BigDecimal expects a decimal string, got {value!r}") from exc


# Wh amounts, serials and Clarity uint amounts exceed 2^31; they travel as decimal strings.
BigInt = strawberry.scalar(
    NewType("BigInt", int),
    serialize=lambda v: str(int(v)),
    parse_value=_parse_bigint,
    description="An arbitrary-size integer, serialized as a decimal string (accepted as an "
    "integer or a string).",
)
BigDecimal = strawberry.scalar(
    NewType("BigDecimal", Decimal),
    serialize=lambda v: format(Decimal(v).normalize(), "f"),
    parse_value=_parse_bigdecimal,
    description="An exact decimal number serialized as a string (e.g. MWh, price per MWh).",
)
