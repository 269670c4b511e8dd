"""The import picture's one-way rule (ops/layers.py): what it counts as an arrow, what breaks
the rule, on a small tree written here."""

from __future__ import annotations

from pathlib import Path

from ops import layers


def write(root: Path, files: dict[str, str]) -> None:
    for package in layers.packages():
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").write_text("")
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_only_arrows_to_lower_layers_are_allowed(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "stacks/c32.py": "",
            "infra/config.py": "",
            "db/session.py": "from infra.config import X\nfrom stacks import c32\n",
            "db/models.py": "from . import session\nfrom .session import y\n",
            # up: the ground must not know the roles
            "db/bad.py": "from indexer.pipeline import z\n",
            "indexer/pipeline.py": "import db.session\n",
            # sideways: the roles never import each other
            "indexer/api_leak.py": "import graphql_api.types\n",
            "graphql_api/types.py": "",
            # up, lazily inside a function
            "writers/lazy.py": "def f():\n    from recchain import cli\n",
            "recchain/cli.py": "from indexer import pipeline\n",
            # up, by name only (importlib / python -m)
            "recchain/bench.py": 'NAMES = ("ops.bench.ingest", "not.a.module", "indexer")\n',
            "ops/bench/__init__.py": "",
            "ops/bench/ingest.py": "import recchain.cli\nimport db.session\n",
        },
    )
    found = list(layers.arrows(tmp_path))
    bad = {(a.module, a.target, a.by_name) for a in layers.violations(found)}
    assert bad == {
        ("db.bad", "indexer.pipeline", False),
        ("indexer.api_leak", "graphql_api.types", False),
        ("writers.lazy", "recchain", False),
        ("recchain.bench", "ops.bench.ingest", True),
    }
    # Imports within a package (relative ones included) are no arrows; the allowed ones are.
    assert not any(a.source_package == a.target_package for a in found)
    allowed = {(a.module, a.target) for a in found} - {(m, t) for m, t, _ in bad}
    assert allowed == {
        ("db.session", "infra.config"),
        ("db.session", "stacks"),
        ("indexer.pipeline", "db.session"),
        ("recchain.cli", "indexer"),
        ("ops.bench.ingest", "recchain.cli"),
        ("ops.bench.ingest", "db.session"),
    }
    text, shown = layers.picture(tmp_path)
    assert shown and "4 imports break the one-way rule" in text
    assert "db/bad.py:1  db.bad -> indexer.pipeline" in text
    assert layers.main(["--root", str(tmp_path), "--check"]) == 1
    assert layers.main(["--root", str(tmp_path)]) == 0


def test_a_tree_that_keeps_the_rule_passes_the_check(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "infra/config.py": "",
            "db/session.py": "from infra import config\n",
            "writers/app.py": "from db.session import s\n",
            "recchain/cli.py": "def main():\n    import writers.app\n",
            "ops/bench.py": "CMD = ['-m', 'recchain.cli']\n",
        },
    )
    text, bad = layers.picture(tmp_path)
    assert bad == [] and "Every arrow points down." in text
    assert layers.main(["--root", str(tmp_path), "--check"]) == 0
