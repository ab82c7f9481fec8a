"""Exec processes: their own stdio, exit codes, events and place in the container's life."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.integration.conftest import IMAGE, both_runtimes, unique_id
from tests.support import Containerd
from tests.support.events import event_log
from tests.support.names import PYRUNC_RUNTIME


@pytest.fixture
def running(containerd: Containerd, runtime: str):  # type: ignore[no-untyped-def]
    """A running container (`sleep 600`) of the runtime under test; removed afterwards."""
    id = unique_id("exec")
    containerd.ctr("run", "-d", "--runtime", runtime, IMAGE, id, "sleep", "600")
    yield id
    containerd.remove(id)


def exec_(ctd: Containerd, id: str, *args: str, exec_id: str = "",
          input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return ctd.ctr("task", "exec", "--exec-id", exec_id or unique_id("e"), id, *args,
                   input=input, check=False, timeout=60)


@both_runtimes
def test_exec_output_and_exit_code(containerd: Containerd, running: str) -> None:
    result = exec_(containerd, running, "sh", "-c", "echo out; echo err >&2; exit 5")
    assert (result.returncode, result.stdout, result.stderr) == (5, b"out\n", b"err\n")


@both_runtimes
def test_exec_stdin_ends_with_closeio(containerd: Containerd, running: str) -> None:
    result = exec_(containerd, running, "sh", "-c", "cat; echo end", input=b"to the exec\n")
    assert (result.returncode, result.stdout) == (0, b"to the exec\nend\n")


@both_runtimes
def test_exec_of_a_missing_binary_fails_with_runcs_message(containerd: Containerd,
                                                           running: str) -> None:
    result = exec_(containerd, running, "/no/such/binary")
    assert result.returncode != 0
    assert b"no such file or directory" in result.stderr.lower()
    pids = containerd.ctr("task", "ps", running).stdout.decode().split("\n")[1:]
    assert len([line for line in pids if line.strip()]) == 1  # only the init is left


@both_runtimes
def test_exec_events_and_exit_id(containerd: Containerd, running: str) -> None:
    exec_id = unique_id("ev")
    with event_log(containerd) as events:
        assert exec_(containerd, running, "true", exec_id=exec_id).returncode == 0
        events.wait_for(running, "/tasks/exit")
        mine = [(t, e) for t, e in events.events if e.get("container_id") == running]
    assert [t for t, _ in mine] == ["/tasks/exec-added", "/tasks/exec-started", "/tasks/exit"]
    assert mine[0][1]["exec_id"] == exec_id
    assert mine[2][1]["id"] == exec_id
    assert mine[2][1]["pid"] == mine[1][1]["pid"]


@both_runtimes
def test_pids_name_exec_processes(containerd: Containerd, running: str) -> None:
    exec_id = unique_id("ps")
    containerd.ctr("task", "exec", "-d", "--exec-id", exec_id, running, "sleep", "600")
    ps = containerd.ctr("task", "ps", running).stdout.decode()
    assert exec_id in ps
    containerd.ctr("task", "kill", "-s", "SIGKILL", "--exec-id", exec_id, running)


@both_runtimes
def test_exec_into_a_stopped_container_is_refused(containerd: Containerd, runtime: str) -> None:
    id = unique_id("stopped")
    containerd.ctr("run", "-d", "--runtime", runtime, IMAGE, id, "true")
    try:
        containerd.wait_for_status(id, "STOPPED")
        result = exec_(containerd, id, "true")
        assert result.returncode != 0
        assert b"stopped" in result.stderr
    finally:
        containerd.remove(id)


def test_exec_exits_are_published_before_the_init_exit(containerd: Containerd) -> None:
    """containerd#9719: the Go shim of containerd 1.6.20 may publish them the other way round."""
    id = unique_id("order")
    containerd.ctr("run", "-d", "--runtime", PYRUNC_RUNTIME, IMAGE, id, "sleep", "600")
    try:
        exec_ids = [unique_id("x") for _ in range(3)]
        for exec_id in exec_ids:
            containerd.ctr("task", "exec", "-d", "--exec-id", exec_id, id, "sleep", "600")
        with event_log(containerd) as events:
            containerd.ctr("task", "kill", "-s", "SIGKILL", id)
            events.wait_for(id, "/tasks/exit")
            time.sleep(0.3)
            exits = [e["id"] for t, e in events.events
                     if t == "/tasks/exit" and e.get("container_id") == id]
        assert sorted(exits[:-1]) == sorted(exec_ids)
        assert exits[-1] == id
    finally:
        containerd.remove(id)
