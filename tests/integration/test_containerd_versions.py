"""pyrunc under containerd 1.7 (Debian 13) and 2.x (Debian sid), besides bookworm's 1.6.

`make test` fetches those containerd builds into .cache/ first (tests/support/fetch_containerd.sh);
each runs here as a private daemon of its own, in a namespace of its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import IMAGE, unique_id
from tests.support import Containerd, build_busybox_image
from tests.support.names import ALL_SHIMS, CONTAINERD_SUITES, PYRUNC_RUNTIME, containerd_binaries


@pytest.fixture(scope="module", params=sorted(CONTAINERD_SUITES))
def other_containerd(request: pytest.FixtureRequest,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    try:
        binary, ctr = containerd_binaries(request.param)
    except FileNotFoundError as e:
        pytest.fail(str(e))
    ctd = Containerd(namespace=f"pyrunc-{CONTAINERD_SUITES[request.param]}",
                     containerd_binary=binary, ctr_binary=ctr)
    with ctd:
        tar = build_busybox_image(tmp_path_factory.mktemp("image") / "busybox.tar", IMAGE)
        ctd.import_image(tar, IMAGE)
        yield ctd
        found = ctd.wait_no_leftovers(ALL_SHIMS, timeout=10)
        ctd.cleanup_leftovers(ALL_SHIMS)
        assert found == [], f"left behind under containerd {request.param}: {found}"


def test_run_prints_output_and_returns_the_exit_code(other_containerd: Containerd) -> None:
    result = other_containerd.ctr("run", "--rm", "--runtime", PYRUNC_RUNTIME, IMAGE,
                                  unique_id("v"), "sh", "-c", "echo from pyrunc; exit 3",
                                  check=False)
    assert (result.returncode, result.stdout) == (3, b"from pyrunc\n"), result.stderr


def test_detached_container_survives_a_restart_and_is_removed(
        other_containerd: Containerd) -> None:
    ctd = other_containerd
    id = unique_id("v")
    ctd.ctr("run", "-d", "--runtime", PYRUNC_RUNTIME, IMAGE, id, "sleep", "600")
    try:
        assert ctd.ctr("task", "exec", "--exec-id", "a", id, "echo", "one").stdout == b"one\n"
        ctd.restart()
        assert ctd.status(id) == "RUNNING"
        assert ctd.ctr("task", "exec", "--exec-id", "b", id, "echo", "two").stdout == b"two\n"
        ctd.ctr("task", "kill", "-s", "SIGKILL", id)
        ctd.wait_for_status(id, "STOPPED")
    finally:
        ctd.remove(id)
    assert id not in ctd.containers()
