"""The harness itself, proven with the Go shim (io.containerd.runc.v2), so it needs no pyrunc.

If these fail, the failures elsewhere in tests/integration say nothing about pyrunc.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import (
    IMAGE,
    RUNC_RUNTIME,
    RUNC_SHIM,
    Containerd,
    build_busybox_image,
    image_digest,
    unique_id,
)


def wait_for_task_status(
    containerd: Containerd, cid: str, status: str, timeout: float = 10
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(t.id == cid and t.status == status for t in containerd.tasks()):
            return
        time.sleep(0.05)
    raise AssertionError(f"task {cid} not {status} after {timeout} s: {containerd.tasks()}")


def test_image_build_is_deterministic(tmp_path: Path) -> None:
    a = build_busybox_image(tmp_path / "a.tar", IMAGE)
    b = build_busybox_image(tmp_path / "b.tar", IMAGE)
    assert a.read_bytes() == b.read_bytes()
    assert image_digest(a).startswith("sha256:")


def test_image_is_imported(containerd: Containerd) -> None:
    assert IMAGE in containerd.images()


def test_run_echo_hello(containerd: Containerd) -> None:
    res = containerd.ctr(
        "run", "--rm", "--runtime", RUNC_RUNTIME, IMAGE, unique_id("echo"), "echo", "hello"
    )
    assert res.stdout == b"hello\n"


def test_run_with_rootfs_dir(containerd: Containerd, rootfs_dir: Path) -> None:
    res = containerd.ctr(
        "run",
        "--rm",
        "--runtime",
        RUNC_RUNTIME,
        "--rootfs",
        str(rootfs_dir),
        unique_id("rootfs"),
        "/bin/sh",
        "-c",
        "id -un; ls /bin/busybox",
    )
    assert res.stdout == b"root\n/bin/busybox\n"


def test_run_returns_the_exit_code(containerd: Containerd) -> None:
    res = containerd.ctr(
        "run",
        "--rm",
        "--runtime",
        RUNC_RUNTIME,
        IMAGE,
        unique_id("exit"),
        "sh",
        "-c",
        "exit 3",
        check=False,
    )
    assert res.returncode == 3, res


def test_nothing_left_after_run_rm(containerd: Containerd) -> None:
    containerd.ctr("run", "--rm", "--runtime", RUNC_RUNTIME, IMAGE, unique_id("rm"), "true")
    assert containerd.wait_no_leftovers(RUNC_SHIM) == []
    assert containerd.tasks() == []
    assert containerd.containers() == []


def test_leftovers_finds_a_detached_container(containerd: Containerd) -> None:
    cid = unique_id("detached")
    containerd.ctr("run", "-d", "--runtime", RUNC_RUNTIME, IMAGE, cid, "/bin/sleep", "300")
    bundle = containerd.state / "io.containerd.runtime.v2.task" / containerd.namespace / cid

    found = containerd.leftovers(runtime_binary=RUNC_SHIM)
    assert f"task bundle {bundle}" in found
    assert f"runc state /run/containerd/runc/{containerd.namespace}/{cid}" in found
    assert f"mount overlay overlay on {bundle}/rootfs" in found
    assert f"shim socket {containerd.shim_socket_path(cid)}" in found
    assert any(line.startswith("shim process") and f"-id {cid} " in line for line in found)
    assert any(line.startswith(f"task {cid} (RUNNING") for line in found)
    assert f"container {cid}" in found

    # The proper way out, as a user would type it.
    containerd.ctr("task", "kill", "-s", "SIGKILL", cid)
    wait_for_task_status(containerd, cid, "STOPPED")
    containerd.ctr("task", "delete", cid)
    containerd.ctr("container", "rm", cid)
    assert containerd.wait_no_leftovers(RUNC_SHIM) == []


def test_cleanup_leftovers_removes_a_running_container(containerd: Containerd) -> None:
    cid = unique_id("forgotten")
    containerd.ctr("run", "-d", "--runtime", RUNC_RUNTIME, IMAGE, cid, "/bin/sleep", "300")
    pid = next(t.pid for t in containerd.tasks() if t.id == cid)

    found = containerd.cleanup_leftovers(RUNC_SHIM)

    assert any(cid in line for line in found)
    assert containerd.leftovers(RUNC_SHIM) == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_restart_on_a_crashed_base_dir_removes_its_leftovers(rootfs_dir: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="pyrunc-crash-", dir="/tmp"))
    cid = unique_id("crash")
    crashed = Containerd(base, namespace="pyrunc-test-crash")
    crashed.start()
    try:
        crashed.ctr(
            "run",
            "-d",
            "--runtime",
            RUNC_RUNTIME,
            "--rootfs",
            str(rootfs_dir),
            cid,
            "/bin/sleep",
            "300",
        )
        assert crashed.pid is not None
        os.kill(crashed.pid, signal.SIGKILL)  # containerd dies; its shim and container live on
        assert crashed.leftovers(RUNC_SHIM, metadata=False) != []

        with Containerd(base, namespace="pyrunc-test-crash") as restarted:
            assert restarted.leftovers(RUNC_SHIM, metadata=False) == []
            # The record of the container is in containerd's own database, which is kept.
            assert restarted.containers() == [cid]
            restarted.ctr("container", "rm", cid)
    finally:
        crashed.stop()
        crashed.cleanup_leftovers(RUNC_SHIM)
        crashed.remove_base_dir()
    assert not base.exists()
