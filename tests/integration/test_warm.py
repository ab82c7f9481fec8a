"""The warm parent: shims forked ready-made, looking and behaving like shims started afresh."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyrunc.protos import shim_pb2
from pyrunc.shim import warm
from tests.integration.conftest import IMAGE, unique_id
from tests.support import Containerd
from tests.support.containerd import warm_parents
from tests.support.names import PYRUNC_RUNTIME
from tests.support.shim_client import call


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])




def ensure_warm_parent(ctd: Containerd) -> int:
    """A first container starts the warm parent (it is itself started the slow way)."""
    ctd.ctr("run", "--rm", "--runtime", PYRUNC_RUNTIME, IMAGE, unique_id("warmup"), "true")
    deadline = time.monotonic() + 10
    while not os.path.exists(warm.socket_path()):
        assert time.monotonic() < deadline, "no warm parent came up"
        time.sleep(0.05)
    (pid,) = [p for p in warm_parents() if parent_of(p) != 0]
    return pid


def test_shims_are_forked_from_the_warm_parent(containerd: Containerd) -> None:
    warm_pid = ensure_warm_parent(containerd)
    ids = [unique_id("forked") for _ in range(2)]
    try:
        for id in ids:
            containerd.ctr("run", "-d", "--runtime", PYRUNC_RUNTIME, IMAGE, id, "sleep", "600")
        shims = [call(containerd, id, "Connect", shim_pb2.ConnectRequest(id=id)).shim_pid
                 for id in ids]
        assert len(set(shims)) == 2  # one shim per container, as the Go shim
        for id, shim in zip(ids, shims, strict=True):
            assert parent_of(shim) == warm_pid
            title = Path(f"/proc/{shim}/cmdline").read_bytes().decode()
            assert f"containerd-shim-pyrunc-v1 -namespace {containerd.namespace} -id {id} " \
                   f"-address {containerd.address}" in title
            assert os.readlink(f"/proc/{shim}/cwd").endswith(f"/{id}")  # its bundle
            assert os.getsid(shim) == shim  # a session of its own
        assert containerd.ctr("task", "exec", "--exec-id", "e", ids[0], "echo", "ok").stdout \
            == b"ok\n"
    finally:
        for id in ids:
            containerd.remove(id)


def ksm_marks(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/ksm_stat").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)
            if k in ("ksm_merge_any", "ksm_mergeable")}


# Samepage merging is a kernel build option; without it there is nothing to offer memory to.
needs_ksm = pytest.mark.skipif(not Path("/sys/kernel/mm/ksm/run").exists(),
                               reason="this kernel has no samepage merging (CONFIG_KSM)")


@needs_ksm
def test_shims_offer_their_memory_to_ksm_and_containers_do_not(containerd: Containerd) -> None:
    warm_pid = ensure_warm_parent(containerd)
    id = unique_id("ksm")
    try:
        containerd.ctr("run", "-d", "--runtime", PYRUNC_RUNTIME, IMAGE, id, "sleep", "600")
        shim = call(containerd, id, "Connect", shim_pb2.ConnectRequest(id=id)).shim_pid
        init = call(containerd, id, "State", shim_pb2.StateRequest(id=id)).pid
        assert parent_of(shim) == warm_pid
        for pid in (warm_pid, shim):  # its regions are marked, not the whole process
            assert ksm_marks(pid) == {"ksm_merge_any": "no", "ksm_mergeable": "yes"}
        # Nothing of it reaches the container through runc's exec.
        assert ksm_marks(init) == {"ksm_merge_any": "no", "ksm_mergeable": "no"}
    finally:
        containerd.remove(id)


KSM_RUN = Path("/sys/kernel/mm/ksm/run")


@needs_ksm
def test_with_ksm_running_the_shims_pages_are_merged_again(containerd: Containerd) -> None:
    """What the marks are for: ksmd shares again pages the shims copied from the warm parent."""
    warm_pid = ensure_warm_parent(containerd)
    ids = [unique_id("merge") for _ in range(3)]
    before = KSM_RUN.read_text().strip()
    try:
        KSM_RUN.write_text("1\n")
        for id in ids:
            containerd.ctr("run", "-d", "--runtime", PYRUNC_RUNTIME, IMAGE, id, "sleep", "600")
        shims = [call(containerd, id, "Connect", shim_pb2.ConnectRequest(id=id)).shim_pid
                 for id in ids]
        deadline = time.monotonic() + 90
        merged: dict[int, int] = {}
        while time.monotonic() < deadline:
            merged = {pid: int(Path(f"/proc/{pid}/ksm_merging_pages").read_text())
                      for pid in (warm_pid, *shims)}
            if all(pages >= 64 for pages in merged.values()):
                break
            time.sleep(1)
        assert all(pages >= 64 for pages in merged.values()), merged
    finally:
        for id in ids:
            containerd.remove(id)
        if before == "0":
            KSM_RUN.write_text("2\n")  # unmerge what this test merged, then stop as before
        KSM_RUN.write_text(before + "\n")


def test_the_warm_parent_refuses_peers_with_other_credentials(containerd: Containerd) -> None:
    ensure_warm_parent(containerd)
    probe = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])\n"
        "try:\n"
        "    socket.send_fds(s, [b'{}\\n'], [0])\n"
        "    print('closed' if not s.recv(100) else 'answered')\n"
        "except ConnectionError:\n"
        "    print('closed')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe, warm.socket_path()],
                            capture_output=True, text=True, timeout=10, group=4321,
                            extra_groups=[])
    assert result.stdout.strip() == "closed", result.stderr


def test_the_warm_parent_holds_no_bundle_and_starts_with_a_clean_environment(
        containerd: Containerd) -> None:
    # (It takes on each request's environment just before forking that request's shim.)
    pid = ensure_warm_parent(containerd)
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"TTRPC_ADDRESS" not in environ
    assert str(containerd.base).encode() not in environ


REHEARSAL_PROBE = """
import os, sys
from pyrunc.shim.rehearsal import rehearse
work = sys.argv[1]
fds = sorted(os.listdir("/proc/self/fd"))
rehearse(work, rounds=2)
left = {"files": os.listdir(work), "fds": sorted(os.listdir("/proc/self/fd")) != fds}
try:
    os.waitpid(-1, os.WNOHANG)
    left["children"] = True
except ChildProcessError:
    pass
print(left)
"""


def test_the_rehearsal_runs_the_shim_paths_and_leaves_nothing_behind(tmp_path: Path) -> None:
    # In a process of its own: the rehearsal's reaper waits for any child, as a shim's does.
    result = subprocess.run([sys.executable, "-I", "-c", REHEARSAL_PROBE, str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{'files': [], 'fds': False}", result.stderr
