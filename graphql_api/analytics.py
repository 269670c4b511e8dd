"""Domain queries answered in SQL: ownership history, holdings, search, compliance, market."""

from __future__ import annotations

import strawberry


@strawberry.type
class AnalyticsQuery:
    @strawberry.field(description="Placeholder")
    def version(self) -> str:
        return "1"
