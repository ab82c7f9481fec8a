"""Where the `cgroup2` tests run: on a cgroup v2 host with systemd as PID 1, and nowhere else.

A pytest plugin, loaded by `pytest_plugins` in the test modules that have such tests (so it acts
whenever they are collected, and the shared conftest files need not know about it). Tests marked
`@pytest.mark.cgroup2` need the unified hierarchy at /sys/fs/cgroup and systemd managing it; on
another host (this project's machines are cgroup v1 hybrid without systemd) they are
**deselected**, not skipped, and the run's summary says how many were left to the guest lane
(`make test-cgroup2`, tests/guest/). With PYRUNC_TEST_CGROUP2=1 (the guest lane sets it) they
must run: a host without the platform is then a usage error rather than a quiet deselection.
"""

from __future__ import annotations

import os

import pytest

MARKER = "cgroup2"
LANE_ENV = "PYRUNC_TEST_CGROUP2"
CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP2_SUPER_MAGIC = 0x63677270

_SELECTION = pytest.StashKey[tuple[int, str | None]]()  # (how many cgroup2 tests, why not here)


def missing_platform() -> str | None:
    """Why this host cannot run the cgroup2 tests, or None if it can."""
    if not os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")):
        return f"{CGROUP_ROOT} is not the cgroup v2 unified hierarchy"
    if not os.path.isdir("/run/systemd/system"):  # as sd_booted(3) tells
        return "systemd is not PID 1"
    return None


@pytest.hookimpl(trylast=True)  # after -k and -m: count what they left
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if item.get_closest_marker(MARKER)]
    if not marked:
        return
    problem = missing_platform()
    config.stash[_SELECTION] = (len(marked), problem)
    if problem is None:
        return
    if os.environ.get(LANE_ENV, "") not in ("", "0"):
        raise pytest.UsageError(f"{LANE_ENV} is set, but {problem}: the cgroup2 tests cannot run")
    chosen = set(marked)
    items[:] = [item for item in items if item not in chosen]
    config.hook.pytest_deselected(items=marked)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    count, problem = terminalreporter.config.stash.get(_SELECTION, (0, None))
    if not count:
        return
    if problem is None:
        terminalreporter.write_line(
            f"cgroup2 lane: {count} cgroup2 tests selected (cgroup v2, systemd as PID 1)")
    else:
        terminalreporter.write_line(
            f"cgroup2 lane: {count} cgroup2 tests deselected here ({problem}): "
            "they run in the guest lane, `make test-cgroup2`")
