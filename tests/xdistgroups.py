"""Which tests share a worker under `pytest -n N --dist loadgroup` (what `make test` runs).

A test that uses an expensive shared fixture runs in the same worker as the others using it, so
the fixture starts once per run instead of once per worker: each of SHARED_SESSION_FIXTURES (the
primary + standby pair), and any module-scoped fixture (a devnet node, an API process) for the
tests of its module. `@pytest.mark.xdist_group(name)` adds a test to a group by hand.

pytest-xdist's own loadgroup scheduler finds the groups through a suffix it writes into each
test's node id, which pytest 9.2's structured node ids no longer take, so every test ran on its
own. Here each worker writes the groups of what it collected to a file in a folder the controller
made (named by RECCHAIN_TEST_GROUPS, which the workers inherit), before it reports its
collection; the controller's scheduler (xdist's load-by-scope scheduling, kept to the
collection's order) reads them once every worker has reported.

Work starts longest first, so the run does not end with one worker on a long test while the
others idle: a group by the sum of its tests' durations, a test on its own by its duration. The
durations are those the previous run kept in pytest's cache (`recchain/durations`) over those of
`tests/durations.json`, which is committed so that a fresh clone (CI's) orders its first run
well too (`python -m tests.xdistgroups` rewrites it from the cache); a test neither knows counts
as long. Without xdist nothing here runs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

SHARED_SESSION_FIXTURES = ("pg_cluster",)
GROUPS_ENV = "RECCHAIN_TEST_GROUPS"
DURATIONS_KEY = "recchain/durations"
BASELINE = Path(__file__).with_name("durations.json")

_groups: dict[str, str] = {}
_loaded: list[bool] = []
_controller: list[pytest.Config] = []
_durations: dict[str, float] = {}


def group_of(item: pytest.Item) -> str | None:
    marks = [
        m.args[0] if m.args else m.kwargs.get("name") for m in item.iter_markers("xdist_group")
    ]
    if marks and marks[0]:
        return str(marks[0])
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    shared = next((f for f in SHARED_SESSION_FIXTURES if f in info.names_closure), None)
    if shared is not None:
        return shared
    if any(defs[-1].scope == "module" for defs in info.name2fixturedefs.values() if defs):
        return item.nodeid.split("::", 1)[0]
    return None


def _distributed(config: pytest.Config) -> bool:
    return config.getoption("dist", "no") == "loadgroup" and not hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if _distributed(config):
        os.environ[GROUPS_ENV] = tempfile.mkdtemp(prefix="recchain-test-groups-")
        _controller.append(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _distributed(config) and GROUPS_ENV in os.environ:
        shutil.rmtree(os.environ.pop(GROUPS_ENV), ignore_errors=True)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if _controller:  # the controller sees every worker's reports
        _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration


def remember_durations(session: pytest.Session) -> None:
    """Keep this run's durations for the next run's order (from the controller, at its end)."""
    cache = session.config.cache
    if _controller and _durations and cache is not None:
        kept: dict[str, float] = cache.get(DURATIONS_KEY, {})
        cache.set(DURATIONS_KEY, {**kept, **{k: round(v, 2) for k, v in _durations.items()}})


def baseline() -> dict[str, float]:
    try:
        return {k: float(v) for k, v in json.loads(BASELINE.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    folder = os.environ.get(GROUPS_ENV)
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if folder is None or workerinput is None:
        return
    groups = {item.nodeid: g for item in items if (g := group_of(item)) is not None}
    # Every worker sorts alike (one cache, one baseline), so their collections stay identical,
    # as xdist needs; the scheduler keeps this order (see below).
    known = {**baseline(), **(config.cache.get(DURATIONS_KEY, {}) if config.cache else {})}
    if known:
        longest = max(known.values())
        own = {item.nodeid: known.get(item.nodeid, longest) for item in items}
        totals: dict[str, float] = {}
        for nodeid, seconds in own.items():
            scope = groups.get(nodeid, nodeid)
            totals[scope] = totals.get(scope, 0.0) + seconds
        items.sort(key=lambda i: (-totals[groups.get(i.nodeid, i.nodeid)], -own[i.nodeid]))
    target = Path(folder) / f"{workerinput['workerid']}.json"
    partial = target.with_suffix(".part")
    partial.write_text(json.dumps(groups))
    partial.replace(target)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getoption("dist", "no") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    # xdist would reorder the groups by their number of tests: a module of fifty quick tests
    # would start before a single test of a minute. The collection is already longest first.
    config.option.loadscopereorder = False

    class FixtureGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if not _loaded:
                for path in Path(os.environ[GROUPS_ENV]).glob("*.json"):
                    _groups.update(json.loads(path.read_text()))
                _loaded.append(True)
            return _groups.get(nodeid, nodeid)

    return FixtureGroupScheduling(config, log)


def write_baseline(cache_dir: Path, target: Path = BASELINE) -> int:
    """Write the durations of the cache's last runs as the committed baseline."""
    kept = json.loads((cache_dir / "v" / DURATIONS_KEY).read_text())
    collected = {k: round(float(v), 1) for k, v in sorted(kept.items())}
    target.write_text(json.dumps(collected, indent=0, sort_keys=True) + "\n")
    return len(collected)


if __name__ == "__main__":
    from infra.config import PROJECT_ROOT

    count = write_baseline(PROJECT_ROOT / ".pytest_cache")
    print(f"{BASELINE.relative_to(PROJECT_ROOT)}: the durations of {count} tests")
