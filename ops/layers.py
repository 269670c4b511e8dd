"""The import picture of the project's packages, and its one-way rule.

    python -m ops.layers            # the picture: layers, arrows between packages, violations
    python -m ops.layers --check    # the same; exit status 1 if an arrow breaks the rule
    python -m ops.layers --root DIR # another checkout (e.g. an older commit's worktree)

The packages stand in layers, the ground first. A module may import packages of lower layers
only: none of its own layer but its own package, none above. So the roles (indexer, API, relay)
never import each other, nothing imports the CLI but `ops`, and nothing of the system imports
`ops`. Every import counts, also one inside a function (the CLI's lazy imports) and one made by
name: a string constant that is the dotted name of a project module (`importlib.import_module`,
`python -m x.y` in a subprocess) is an arrow too.

Tests, fixtures and contracts are no part of the picture. `make lint` runs `--check`.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# The ground first. `infra` is what every process runs on and that knows nothing of the chain
# or the domain (settings, logging, HTTP serving, rate limits, listening ports, outbound
# network guards); `stacks` the chain's wire formats.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("stacks", "infra"),
    ("db",),
    ("indexer", "graphql_api", "writers"),
    ("recchain",),
    ("ops",),
)
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Arrow:
    """`module` (in file `path`, at `line`) imports `target` (a module name)."""

    module: str
    path: str
    line: int
    target: str
    by_name: bool  # named in a string rather than an import statement

    @property
    def source_package(self) -> str:
        return self.module.split(".")[0]

    @property
    def target_package(self) -> str:
        return self.target.split(".")[0]


def layer_of(package: str) -> int:
    for i, names in enumerate(LAYERS):
        if package in names:
            return i
    raise KeyError(package)


def packages() -> list[str]:
    return [p for names in LAYERS for p in names]


def modules(root: Path) -> dict[str, Path]:
    """Every module of the project's packages under `root`: dotted name -> file."""
    found: dict[str, Path] = {}
    for package in packages():
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The module a relative `from . import x` names."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def arrows(root: Path) -> Iterator[Arrow]:
    """Every import of a project module by a module of another package."""
    known = modules(root)
    tops = set(packages())
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = str(path.relative_to(root))
        own = module.split(".")[0]
        for node in ast.walk(tree):
            targets: list[tuple[str, bool]] = []
            if isinstance(node, ast.Import):
                targets = [(a.name, False) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                name = (
                    _absolute(module, path.name == "__init__.py", node)
                    if node.level
                    else node.module or ""
                )
                targets = [(name, False)]
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and "." in node.value
                and node.value in known
            ):
                targets = [(node.value, True)]
            for target, by_name in targets:
                top = target.split(".")[0]
                if top in tops and top != own:
                    yield Arrow(module, rel, getattr(node, "lineno", 0), target, by_name)


def violations(found: list[Arrow]) -> list[Arrow]:
    """The arrows that do not point to a lower layer."""
    return [a for a in found if layer_of(a.target_package) >= layer_of(a.source_package)]


def lines_of(root: Path, package: str) -> int:
    return sum(
        len(p.read_text(encoding="utf-8").splitlines())
        for m, p in modules(root).items()
        if m.split(".")[0] == package
    )


def picture(root: Path) -> tuple[str, list[Arrow]]:
    """The picture as text, and the arrows that break the rule."""
    found = list(arrows(root))
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for a in found:
        counts[a.source_package][a.target_package] += 1
    out = ["Layers, top first; `A -> B (n)`: n imports of package B by modules of A."]
    for i in reversed(range(len(LAYERS))):
        out.append(f"layer {i + 1}")
        for package in LAYERS[i]:
            present = (root / package).is_dir()
            size = f"{lines_of(root, package):>6} lines" if present else "   (absent)"
            targets = sorted(counts[package].items(), key=lambda kv: (-layer_of(kv[0]), kv[0]))
            shown = ", ".join(f"{t} ({n})" for t, n in targets) or "-"
            out.append(f"  {package:<12}{size}  -> {shown}")
    bad = violations(found)
    if bad:
        out.append(f"{len(bad)} imports break the one-way rule (to the same layer or above):")
        for a in sorted(bad, key=lambda a: (a.path, a.line)):
            how = " (by name)" if a.by_name else ""
            out.append(f"  {a.path}:{a.line}  {a.module} -> {a.target}{how}")
    else:
        out.append("Every arrow points down.")
    return "\n".join(out), bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ops.layers", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT, help="checkout to read")
    parser.add_argument("--check", action="store_true", help="exit 1 if the rule is broken")
    args = parser.parse_args(argv)
    text, bad = picture(args.root.resolve())
    print(text)
    return 1 if args.check and bad else 0


if __name__ == "__main__":
    sys.exit(main())
