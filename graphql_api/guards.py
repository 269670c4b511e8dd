"""Guards against expensive or abusive requests."""

from __future__ import annotations

from strawberry.extensions import SchemaExtension

from recchain.config import Settings


class CloseReader(SchemaExtension):
    """Ends the operation's read transaction once the result is built."""

    async def on_operation(self):  # type: ignore[no-untyped-def,override]
        try:
            yield
        finally:
            ctx = self.execution_context.context
            if ctx is not None and hasattr(ctx, "close"):
                await ctx.close()


def build_extensions(settings: Settings) -> list[object]:
    return [CloseReader]
