"""The soak's fixtures: the integration suite's private containerd and leftover check, a report.

The soak takes minutes, so `pytest tests` (and so `make test`) must not run it: unless PYRUNC_SOAK=1
(which `make soak` sets), its tests are deselected (not skipped: a skip would look like something
this machine cannot do) and the terminal summary says where the soak went.

The integration fixtures are imported by name: a non-root conftest may not declare
`pytest_plugins`, and a star import would take only tests.integration.conftest's `__all__`.
`pytest_runtest_makereport` comes too, because `no_leftovers` reads the report it stashes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import containerd, no_leftovers, pytest_runtest_makereport
from tests.soak.report import SoakReport

__all__ = ["containerd", "no_leftovers", "pytest_runtest_makereport", "soak_report"]

THIS_DIR = Path(__file__).parent
ENABLED = os.environ.get("PYRUNC_SOAK") == "1"
STARTED = time.monotonic()  # conftests load before collection: the whole run, containerd too

_DESELECTED = pytest.StashKey[int]()
_SUMMARY = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    # Registered here rather than in pyproject.toml: the marker only means something to this dir.
    config.addinivalue_line("markers", "soak: the long soak of `make soak` (PYRUNC_SOAK=1)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if THIS_DIR in item.path.parents]
    for item in ours:
        item.add_marker(pytest.mark.soak)
    if ENABLED or not ours:
        return
    items[:] = [item for item in items if THIS_DIR not in item.path.parents]
    config.hook.pytest_deselected(items=ours)
    config.stash[_DESELECTED] = len(ours)


@pytest.fixture(scope="session")
def soak_report(request: pytest.FixtureRequest) -> Iterator[SoakReport]:
    """The samples of the whole soak; written to .cache/soak/ and summarised at the end."""
    report = SoakReport()
    try:
        yield report
    finally:
        report.durations["total"] = report.elapsed()
        path = report.write()
        request.config.stash[_SUMMARY] = [
            *report.table(),
            "phases: " + ", ".join(f"{k} {v:.0f} s" for k, v in report.durations.items()),
            f"report: {path}",
        ]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    deselected = config.stash.get(_DESELECTED, 0)
    if deselected:
        terminalreporter.write_line(
            f"tests/soak: {deselected} test(s) deselected; the soak is left to `make soak` "
            "(PYRUNC_SOAK=1)")
    summary = config.stash.get(_SUMMARY, None)
    if summary:
        terminalreporter.section("soak")
        for line in summary:
            terminalreporter.write_line(line)
        minutes, seconds = divmod(time.monotonic() - STARTED, 60)
        terminalreporter.write_line(
            f"the soak took {minutes:.0f} min {seconds:.0f} s (containerd's start included)")
