"""A container's whole life through `ctr`, as a user drives it, with pyrunc and the Go shim.

Every scenario runs with both runtimes (`both_runtimes`): pyrunc must behave as
containerd-shim-runc-v2 does. After each test the harness checks that no shim process, mount,
bundle, runc state or socket is left.
"""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.integration.conftest import IMAGE, both_runtimes, unique_id
from tests.support import Containerd
from tests.support.names import PYRUNC_RUNTIME


def run(ctd: Containerd, runtime: str, *args: str,
        timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """`ctr run --rm --runtime RUNTIME IMAGE ID ARGS…`"""
    return ctd.ctr("run", "--rm", "--runtime", runtime, IMAGE, unique_id("run"), *args,
                   timeout=timeout, check=False)




@both_runtimes
def test_output_reaches_ctr(containerd: Containerd, runtime: str) -> None:
    result = run(containerd, runtime, "echo", "hello from a container")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello from a container\n"


@both_runtimes
def test_exit_code_is_the_containers(containerd: Containerd, runtime: str) -> None:
    assert run(containerd, runtime, "sh", "-c", "exit 3").returncode == 3


@both_runtimes
def test_stderr_is_kept_apart_from_stdout(containerd: Containerd, runtime: str) -> None:
    result = run(containerd, runtime, "sh", "-c", "echo out; echo err >&2")
    assert (result.stdout, result.stderr) == (b"out\n", b"err\n")


@both_runtimes
def test_stdin_reaches_the_container_and_ends(containerd: Containerd, runtime: str) -> None:
    # Typed once the task runs: ctr only turns its stdin's EOF into CloseIO after the task is
    # created (an EOF before that is lost by ctr itself, with either shim).
    id = unique_id("stdin")
    ctr = subprocess.Popen(
        [containerd.ctr_binary, "-a", containerd.address, "-n", containerd.namespace, "run", "--rm",
         "--runtime", runtime, IMAGE, id, "sh", "-c", "cat; echo done"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        containerd.wait_for_status(id, "RUNNING")
        out, err = ctr.communicate(b"line one\nline two\n", timeout=30)
    finally:
        if ctr.poll() is None:
            ctr.kill()
            ctr.wait()
    assert ctr.returncode == 0, err
    assert out == b"line one\nline two\ndone\n"


@both_runtimes
def test_large_output_arrives_whole(containerd: Containerd, runtime: str) -> None:
    result = run(containerd, runtime, "sh", "-c", "head -c 8388608 /dev/zero | tr '\\0' x")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == 8 << 20
    assert set(result.stdout) == {ord("x")}


@both_runtimes
def test_rootfs_directory_without_image(containerd: Containerd, runtime: str,
                                        rootfs_dir: Path) -> None:
    result = containerd.ctr(
        "run", "--rm", "--runtime", runtime, "--rootfs", str(rootfs_dir), unique_id("rootfs"),
        "/bin/sh", "-c", "echo from rootfs; exit 4", check=False,
    )
    assert (result.returncode, result.stdout) == (4, b"from rootfs\n"), result.stderr


@both_runtimes
def test_image_rootfs_is_an_overlay_mounted_in_the_bundle(containerd: Containerd,
                                                          runtime: str) -> None:
    id = unique_id("overlay")
    containerd.ctr("run", "-d", "--runtime", runtime, IMAGE, id, "sleep", "60")
    try:
        bundle = containerd.state / "io.containerd.runtime.v2.task" / containerd.namespace / id
        rootfs = bundle / "rootfs"
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split() for line in f]
        types = [m[m.index("-") + 1] for m in mounts if m[4] == str(rootfs)]
        assert types == ["overlay"]
        # the container sees the image's files
        result = containerd.ctr("task", "exec", "--exec-id", "probe", id, "cat", "/etc/passwd")
        assert result.stdout.startswith(b"root:x:0:0:")
    finally:
        containerd.remove(id)
    assert not rootfs.exists() or not os.path.ismount(rootfs)


@both_runtimes
def test_detached_container_is_killed_and_removed(containerd: Containerd, runtime: str) -> None:
    id = unique_id("detached")
    containerd.ctr("run", "-d", "--runtime", runtime, IMAGE, id, "sleep", "600")
    containerd.wait_for_status(id, "RUNNING")
    containerd.ctr("task", "kill", "-s", "SIGKILL", id)
    containerd.wait_for_status(id, "STOPPED")
    deleted = containerd.ctr("task", "delete", id)
    assert b"exit code 137" in deleted.stderr  # ctr task delete warns of a non-zero status
    containerd.ctr("container", "rm", id)
    assert id not in containerd.containers()


@both_runtimes
def test_sigkill_gives_137_to_a_waiting_client(containerd: Containerd, runtime: str) -> None:
    id = unique_id("killed")
    waiter: list[subprocess.CompletedProcess[bytes]] = []
    containerd.ctr("container", "create", "--runtime", runtime, IMAGE, id, "sleep", "600")
    try:
        runner = threading.Thread(target=lambda: waiter.append(containerd.ctr(
            "task", "start", id, check=False, timeout=60)))
        runner.start()
        containerd.wait_for_status(id, "RUNNING")
        containerd.ctr("task", "kill", "-s", "SIGKILL", id)
        runner.join(30)
        assert waiter and waiter[0].returncode == 137
    finally:
        containerd.remove(id)


@both_runtimes
def test_kill_of_a_stopped_task_is_not_found(containerd: Containerd, runtime: str) -> None:
    id = unique_id("stopped")
    containerd.ctr("run", "-d", "--runtime", runtime, IMAGE, id, "true")
    try:
        containerd.wait_for_status(id, "STOPPED")
        result = containerd.ctr("task", "kill", id, check=False)
        assert result.returncode != 0
        assert b"not found" in result.stderr
    finally:
        containerd.remove(id)


@both_runtimes
def test_task_list_pids_and_status(containerd: Containerd, runtime: str) -> None:
    id = unique_id("ps")
    containerd.ctr("container", "create", "--runtime", runtime, IMAGE, id, "sleep", "600")
    try:
        containerd.ctr("task", "start", "-d", id)
        containerd.wait_for_status(id, "RUNNING")
        (task,) = [t for t in containerd.tasks() if t.id == id]
        ps = containerd.ctr("task", "ps", id).stdout.decode()
        assert str(task.pid) in ps
    finally:
        containerd.remove(id)


@both_runtimes
def test_several_containers_at_once(containerd: Containerd, runtime: str) -> None:
    results: dict[int, subprocess.CompletedProcess[bytes]] = {}

    # The pause: ctr's copy of stdout stops (and drops what it has not read) as soon as the task
    # exits if its blocking open(2) of the fifo, woken by the shim's writer at Create, has not
    # yet returned in ctr. With five at once on a busy 2-CPU machine that took longer than the
    # ~15 ms an echo lives, and the Go shim lost the output as often as pyrunc (about 1 in 70
    # under two busy loops). The shims' part, relaying every byte, is the same with or without it.
    def one(n: int) -> None:
        results[n] = run(containerd, runtime, "sh", "-c",
                         f"sleep 0.3; echo container {n}; exit {n}")

    threads = [threading.Thread(target=one, args=(n,)) for n in range(1, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert {n: (r.returncode, r.stdout, r.stderr) for n, r in results.items()} == {
        n: (n, f"container {n}\n".encode(), b"") for n in range(1, 6)
    }


def test_shim_socket_is_a_private_file(containerd: Containerd) -> None:
    id = unique_id("sock")
    containerd.ctr("run", "-d", "--runtime", PYRUNC_RUNTIME, IMAGE, id, "sleep", "600")
    try:
        bundle = containerd.state / "io.containerd.runtime.v2.task" / containerd.namespace / id
        address = (bundle / "address").read_text()
        assert address == "unix://" + containerd.shim_socket_path(id)
        mode = os.stat(address.removeprefix("unix://")).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    finally:
        containerd.remove(id)


@pytest.mark.parametrize("bundle_state", ["missing", "empty"])
def test_delete_action_is_idempotent_and_fast(tmp_path: Path, bundle_state: str) -> None:
    """containerd runs `delete` after every teardown, also for bundles that are gone."""
    bundle = tmp_path / "bundle"
    if bundle_state == "empty":
        bundle.mkdir()
    from pyrunc.protos import shim_pb2

    for _ in range(2):
        started = time.monotonic()
        result = subprocess.run(
            ["containerd-shim-pyrunc-v1", "-namespace", "pyrunc-test", "-address",
             "/run/containerd/containerd.sock", "-id", "gone-1", "-bundle", str(bundle),
             "delete"],
            capture_output=True, timeout=10, cwd=tmp_path, env=_shim_env(),
        )
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - started < 2.0
        response = shim_pb2.DeleteResponse.FromString(result.stdout)
        assert response.exit_status == 137
        assert response.exited_at.seconds > 0


def _shim_env() -> dict[str, str]:
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env
