"""Scalars for values GraphQL's 32-bit Int and Float cannot carry exactly."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, NewType

import strawberry
from strawberry.schema.config import StrawberryConfig

from graphql_api.errors import BadUserInput

# Wh amounts, serials and Clarity uint amounts exceed 2^31; they travel as decimal strings.
# To the type checker they are plain int/Decimal; to Strawberry, distinct types (scalar_map).
if TYPE_CHECKING:
    BigInt = int
    BigDecimal = Decimal
else:
    BigInt = NewType("BigInt", int)
    BigDecimal = NewType("BigDecimal", Decimal)


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


SCALAR_MAP: dict[object, Any] = {
    BigInt: strawberry.scalar(
        name="BigInt",
        serialize=lambda v: str(int(v)),
        parse_value=_parse_bigint,
        description="An arbitrary-size integer, serialized as a decimal string (accepted as"
        " an integer or a string).",
    ),
    BigDecimal: strawberry.scalar(
        name="BigDecimal",
        serialize=lambda v: format(Decimal(v).normalize(), "f"),
        parse_value=_parse_bigdecimal,
        description="An exact decimal number serialized as a string (e.g. MWh, price per MWh).",
    ),
}


def schema_config() -> StrawberryConfig:
    return StrawberryConfig(scalar_map=SCALAR_MAP)
