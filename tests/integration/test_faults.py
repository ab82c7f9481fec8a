"""What production does to a shim: containerd restarts, a killed shim, pods, hostile peers."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyrunc.protos import mount_pb2, shim_pb2
from pyrunc.shim.ttrpc.status import TTRPCError
from tests.integration.conftest import IMAGE, unique_id
from tests.support import Containerd
from tests.support.events import event_log
from tests.support.names import CONTAINERD_VERSION, PYRUNC_RUNTIME
from tests.support.shim_client import bundle_of, call


def run_detached(ctd: Containerd, *args: str, annotations: dict[str, str] | None = None,
                 id: str = "") -> str:
    id = id or unique_id("fault")
    extra = [f"--annotation={k}={v}" for k, v in (annotations or {}).items()]
    ctd.ctr("run", "-d", "--runtime", PYRUNC_RUNTIME, *extra, IMAGE, id, *args)
    return id






def wait_until(predicate, timeout: float = 15, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def shim_pid(ctd: Containerd, id: str) -> int:
    return int(call(ctd, id, "Connect", shim_pb2.ConnectRequest(id=id)).shim_pid)


def socket_of(ctd: Containerd, id: str) -> str:
    return (bundle_of(ctd, id) / "address").read_text().strip().removeprefix("unix://")


# --- containerd restarts -------------------------------------------------------------------


def assert_no_logging_errors(ctd: Containerd) -> None:
    """What the shim logged while nobody read its log fifo is dropped quietly: no report of a
    failed write (such as Python's logging made, "--- Logging error ---" with a traceback),
    which containerd would copy into its log once it is back."""
    tail = ctd.log_tail(400)
    assert "Logging error" not in tail and "Traceback" not in tail, ctd.log_tail(60)


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_containers_survive_a_containerd_restart(containerd: Containerd, how: str) -> None:
    id = run_detached(containerd, "sleep", "600")
    try:
        before = shim_pid(containerd, id)
        containerd.restart(kill=how == "kill")
        assert containerd.status(id) == "RUNNING"
        assert shim_pid(containerd, id) == before
        result = containerd.ctr("task", "exec", "--exec-id", "after", id, "echo", "still here")
        assert result.stdout == b"still here\n"
        containerd.ctr("task", "kill", "-s", "SIGKILL", id)
        containerd.wait_for_status(id, "STOPPED")
    finally:
        containerd.remove(id)


def test_exit_while_containerd_is_down_is_reported_after(containerd: Containerd) -> None:
    id = run_detached(containerd, "sh", "-c", "sleep 1; exit 7")
    try:
        containerd.restart(down_for=2.5)  # the exit happens while containerd is away
        if CONTAINERD_VERSION != "1.6":
            # containerd 1.7 and later take a shim whose task has no process left when they
            # load it as leaked ("cleaning leaked shim process"), and remove the task: the Go
            # shim's and pyrunc's alike. Nothing may be left of it.
            containerd.wait_for_status(id, None)
            assert_no_logging_errors(containerd)
            return
        containerd.wait_for_status(id, "STOPPED")
        # The shim queued TaskExit while containerd was away and forwarded it once containerd
        # was back. A subscriber (`ctr events`) can only start after that too, and may start
        # after the event went by (it did under the cgroup v2 guest's emulation), so the
        # shim's own log line, which containerd copies into its log, tells that it arrived.
        delivered = f"forward /tasks/exit of {id} delivered after"
        deadline = time.monotonic() + 15
        while delivered not in containerd.log_tail(400):
            assert time.monotonic() < deadline, containerd.log_tail(40)
            time.sleep(0.1)
        deleted = containerd.ctr("task", "delete", id)
        assert b"exit code 7" in deleted.stderr
        assert_no_logging_errors(containerd)
    finally:
        containerd.remove(id)


def test_output_written_while_nobody_reads_is_kept(containerd: Containerd) -> None:
    id = run_detached(containerd, "sh", "-c", "sleep 1.5; echo written while away; sleep 600")
    try:
        containerd.restart(down_for=2.5)
        attach = subprocess.Popen(
            [containerd.ctr_binary, "-a", containerd.address, "-n", containerd.namespace, "task",
             "attach", id],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            assert attach.stdout is not None
            os.set_blocking(attach.stdout.fileno(), False)
            seen = b""
            deadline = time.monotonic() + 10
            while b"written while away\n" not in seen and time.monotonic() < deadline:
                seen += attach.stdout.read() or b""
                time.sleep(0.05)
            assert b"written while away\n" in seen
        finally:
            attach.kill()
            attach.wait()
    finally:
        containerd.remove(id)


# --- a shim killed outright ----------------------------------------------------------------


def test_a_killed_shim_is_cleaned_up_by_delete(containerd: Containerd) -> None:
    id = run_detached(containerd, "sleep", "600")
    try:
        pid = shim_pid(containerd, id)
        init = next(t.pid for t in containerd.tasks() if t.id == id)
        sock = socket_of(containerd, id)
        with event_log(containerd) as events:
            os.kill(pid, signal.SIGKILL)
            events.wait_for(id, "/tasks/delete", timeout=15)  # containerd cleaned up after it
            exit = next(e for t, e in events.events if t == "/tasks/exit")
        assert exit["exit_status"] == 137
        wait_until(lambda: not os.path.exists(f"/proc/{init}"), what="container process gone")
        assert not os.path.exists(sock)
        assert containerd.status(id) is None
    finally:
        containerd.remove(id)


def test_delete_of_a_half_made_bundle_is_fast(tmp_path: Path) -> None:
    bundle = tmp_path / "half"
    bundle.mkdir()
    (bundle / "config.json").write_text("{}")
    (bundle / "rootfs").mkdir()
    started = time.monotonic()
    result = subprocess.run(
        ["containerd-shim-pyrunc-v1", "-namespace", "pyrunc-test", "-id", "half-1",
         "-bundle", str(bundle), "delete"],
        capture_output=True, timeout=10,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 2.0
    assert shim_pb2.DeleteResponse.FromString(result.stdout).exit_status == 137


# --- pods: one shim for a group ------------------------------------------------------------


@pytest.mark.parametrize("annotation", ["io.kubernetes.cri.sandbox-id",
                                        "io.containerd.runc.v2.group"])
def test_a_group_shares_one_shim_until_its_last_container(containerd: Containerd,
                                                          annotation: str) -> None:
    group = {annotation: unique_id("pod")}
    first = run_detached(containerd, "sleep", "600", annotations=group)
    second = ""
    try:
        second = run_detached(containerd, "sleep", "600", annotations=group)
        pid = shim_pid(containerd, first)
        assert shim_pid(containerd, second) == pid
        assert socket_of(containerd, first) == socket_of(containerd, second)
        containerd.remove(first)  # Delete and Shutdown of one leave the other served
        assert containerd.status(second) == "RUNNING"
        assert containerd.ctr("task", "exec", "--exec-id", "e", second, "true").returncode == 0
        assert os.path.exists(f"/proc/{pid}")
        containerd.remove(second)
        wait_until(lambda: not os.path.exists(f"/proc/{pid}/cmdline")
                   or not Path(f"/proc/{pid}/cmdline").read_bytes(), what="shim exit")
    finally:
        containerd.remove(first)
        if second:
            containerd.remove(second)


# --- the socket is private -----------------------------------------------------------------


def test_a_peer_with_other_credentials_is_closed_before_anything_is_read(
        containerd: Containerd) -> None:
    id = run_detached(containerd, "sleep", "600")
    try:
        probe = (
            "import socket,sys\n"
            "s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(5)\n"
            "try:\n"
            "    s.sendall(bytes.fromhex('0000001200000001010012176a'))\n"
            "    print('closed' if s.recv(100) == b'' else 'answered')\n"
            "except ConnectionError:\n"
            "    print('closed')\n"
        )
        result = subprocess.run([sys.executable, "-c", probe, socket_of(containerd, id)],
                                capture_output=True, text=True, timeout=10, group=4321,
                                extra_groups=[])
        assert result.stdout.strip() == "closed", result.stderr  # nothing answered
        assert containerd.status(id) == "RUNNING"  # and the shim serves on
    finally:
        containerd.remove(id)


# --- hostile input -------------------------------------------------------------------------


def frame(length: int, stream: int, kind: int, data: bytes = b"") -> bytes:
    return struct.pack(">IIBB", length, stream, kind, 0) + data


@pytest.mark.parametrize("garbage", [
    b"\x00" * 3,                                   # a truncated header
    b"GET / HTTP/1.1\r\n\r\n",                     # not ttrpc at all
    frame(5 << 20, 1, 1),                          # over 4 MiB, then nothing
    frame(4, 2, 1, b"\x0a\x02xx"),                 # an even stream id
    frame(3, 1, 1, b"\xff\xff\xff"),               # an undecodable Request
    frame(30, 1, 1, b"\x0a\x0cno.such.Svc\x12\x06Method\x1a\x00" + b"\x00" * 6),
    frame(10, 1, 7, b"0123456789"),                # an unknown message type
])
def test_hostile_bytes_never_break_the_shim(containerd: Containerd, garbage: bytes) -> None:
    id = run_detached(containerd, "sleep", "600")
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(socket_of(containerd, id))
            s.sendall(garbage)
            s.shutdown(socket.SHUT_WR)
            try:
                while s.recv(65536):
                    pass
            except TimeoutError:
                pass
        state = call(containerd, id, "State", shim_pb2.StateRequest(id=id))
        assert state.status == 2  # RUNNING: the shim serves every other connection on
    finally:
        containerd.remove(id)


# --- clean errors --------------------------------------------------------------------------


def test_error_codes_name_the_container(containerd: Containerd) -> None:
    id = run_detached(containerd, "sleep", "600")
    try:
        cases = [
            ("State", shim_pb2.StateRequest(id="nobody"), 5, "container nobody"),
            ("State", shim_pb2.StateRequest(id=id, exec_id="none"), 5,
             f"container {id}: process does not exist none"),
            ("Create", shim_pb2.CreateTaskRequest(id=id, bundle=str(bundle_of(containerd, id))),
             6, f"container {id}"),
            ("Create", shim_pb2.CreateTaskRequest(id="../escape", bundle="/tmp"), 3, "escape"),
            ("Exec", shim_pb2.ExecProcessRequest(id=id, exec_id="a/b"), 3, f"container {id}"),
            ("Create", shim_pb2.CreateTaskRequest(
                id="escape-1", bundle=str(bundle_of(containerd, id)),
                rootfs=[mount_pb2.Mount(type="bind", source="../../etc", options=["rbind"])]),
             3, "refusing mount"),
            ("Delete", shim_pb2.DeleteRequest(id=id), 9,
             f"container {id}: cannot delete a running process"),
            ("Start", shim_pb2.StartRequest(id=id), 9,
             f"container {id}: cannot start a running process"),
        ]
        for method, request, code, words in cases:
            with pytest.raises(TTRPCError) as error:
                call(containerd, id, method, request)
            assert (error.value.code, words in error.value.message) == (code, True), (
                method, error.value)
    finally:
        containerd.remove(id)
