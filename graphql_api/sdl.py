"""The exported SDL (`graphql_api/schema.graphql`): `python -m graphql_api.sdl` rewrites it; a
test fails when the committed file and the code disagree."""

from __future__ import annotations

import sys
from pathlib import Path

SDL_PATH = Path(__file__).resolve().parent / "schema.graphql"


def render() -> str:
    from graphql_api.schema import build_schema

    return build_schema().as_str() + "\n"


def main() -> int:
    SDL_PATH.write_text(render())
    sys.stdout.write(f"wrote {SDL_PATH.name}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
