"""Fixtures for integration tests: one private containerd per session, with the busybox image.

After every test, whatever it left behind (shim processes, mounts, bundles, runc state, cgroups,
shim sockets, tasks, containers) is reported as a failure and removed, so the next test starts
clean.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.support import (
    ALL_SHIMS,
    IMAGE,
    RUNTIMES,
    Containerd,
    build_busybox_image,
    make_rootfs_dir,
    unique_id,
)
from tests.support.names import CONTAINERD_VERSION, DROP_IN, containerd_binaries

__all__ = ["IMAGE", "both_runtimes", "unique_id"]

THIS_DIR = Path(__file__).parent
LEFTOVER_WAIT = 10.0  # seconds a shim may take to clean up after a test
LEFTOVER_WAIT_AFTER_FAILURE = 2.0

# Run one test with each runtime: @both_runtimes on a test that takes the `runtime` fixture.
both_runtimes = pytest.mark.parametrize("runtime", RUNTIMES, indirect=True)

_CALL_REPORT = pytest.StashKey[pytest.TestReport]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration tests need root: they run containerd and runc")
    for item in items:
        if THIS_DIR in item.path.parents:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_CALL_REPORT] = report
    return report


@pytest.fixture(scope="session")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """A private containerd with IMAGE imported. Set PYRUNC_TEST_LOG_LEVEL=debug for more log."""
    base = os.environ.get("PYRUNC_TEST_BASE_DIR")  # a fixed dir is kept after the run
    try:
        binary, ctr = containerd_binaries(CONTAINERD_VERSION)
    except FileNotFoundError as e:
        pytest.fail(str(e))
    ctd = Containerd(
        Path(base) if base else None,
        log_level=os.environ.get("PYRUNC_TEST_LOG_LEVEL", "info"),
        containerd_binary=binary, ctr_binary=ctr, drop_in=DROP_IN,
    )
    with ctd:
        tar = build_busybox_image(tmp_path_factory.mktemp("image") / "busybox.tar", IMAGE)
        ctd.import_image(tar, IMAGE)
        yield ctd


@pytest.fixture
def runtime(request: pytest.FixtureRequest) -> str:
    """The runtime under test: a parametrized value (see `both_runtimes`), else --runtime."""
    return str(getattr(request, "param", None) or request.config.getoption("--runtime"))


@pytest.fixture
def rootfs_dir(tmp_path: Path) -> Path:
    """A fresh copy of the image's tree as a directory, for `ctr run --rootfs DIR ID ...`.

    Without an image there is no image config, so the spec has no PATH: name the command by its
    absolute path (`/bin/sh`) or pass `--env PATH=/bin`.
    """
    return make_rootfs_dir(tmp_path / "rootfs")


@pytest.fixture(autouse=True)
def no_leftovers(request: pytest.FixtureRequest, containerd: Containerd) -> Iterator[None]:
    """Fail a test that leaves anything behind, and clean it up for the next test."""
    yield
    call = request.node.stash.get(_CALL_REPORT, None)
    failed = call is not None and call.failed
    # After a failure leftovers are likely and expected: no need to give them the full time.
    wait = LEFTOVER_WAIT_AFTER_FAILURE if failed else LEFTOVER_WAIT
    found = containerd.wait_no_leftovers(ALL_SHIMS, timeout=wait)
    if not found:
        return
    containerd.cleanup_leftovers(ALL_SHIMS)
    still = containerd.leftovers(ALL_SHIMS)
    message = f"left behind after {wait:.0f} s (now cleaned up):\n  " + "\n  ".join(found)
    if still:
        message += "\nand could not be cleaned up:\n  " + "\n  ".join(still)
    message += f"\n--- containerd log (tail) ---\n{containerd.log_tail(40)}"
    if failed and not still:
        # The test has already failed; its leftovers are a consequence, not news.
        warnings.warn(pytest.PytestWarning(f"{request.node.nodeid}: {message}"), stacklevel=1)
        return
    pytest.fail(message, pytrace=False)
