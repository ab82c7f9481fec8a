"""Many container lifecycles through one long-running shim: nothing may accumulate."""

from __future__ import annotations

import os
from pathlib import Path

from pyrunc.protos import shim_pb2
from tests.integration.conftest import IMAGE, unique_id
from tests.support import Containerd
from tests.support.names import PYRUNC_RUNTIME
from tests.support.shim_client import call

CYCLES = 25
RSS_SLACK_KIB = 3 * 1024  # allocator and protobuf caches settle, but must not keep growing


def census(pid: int) -> tuple[int, int, int, list[int]]:
    """(open fds, threads, RSS in KiB, zombie children) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    zombies = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] == "Z" and int(fields[1]) == pid:
                zombies.append(int(entry))
    return fds, int(status["Threads"]), int(status["VmRSS"].split()[0]), zombies


def test_lifecycles_leave_the_shim_as_they_found_it(containerd: Containerd) -> None:
    group = f"--annotation=io.containerd.runc.v2.group={unique_id('soak')}"
    anchor = unique_id("anchor")  # keeps the group's shim alive between cycles
    containerd.ctr("run", "-d", "--runtime", PYRUNC_RUNTIME, group, IMAGE, anchor, "sleep", "600")

    def cycle() -> None:
        id = unique_id("cyc")
        containerd.ctr("run", "-d", "--runtime", PYRUNC_RUNTIME, group, IMAGE, id, "sleep", "60")
        assert containerd.ctr("task", "exec", "--exec-id", "x", id, "sh", "-c",
                              "echo hi").stdout == b"hi\n"
        containerd.ctr("task", "kill", "-s", "SIGKILL", id)
        # Kill returns once the signal is sent; ctr refuses to delete a task it still sees
        # running (with either shim), so wait for the exit, as a client must.
        containerd.wait_for_status(id, "STOPPED")
        containerd.ctr("task", "delete", id, timeout=30)
        containerd.ctr("container", "rm", id)

    try:
        shim = call(containerd, anchor, "Connect", shim_pb2.ConnectRequest(id=anchor)).shim_pid
        for _ in range(3):  # warm up: first uses fill caches and pools
            cycle()
        fds0, threads0, rss0, _ = census(shim)
        for _ in range(CYCLES):
            cycle()
        fds, threads, rss, zombies = census(shim)
        assert zombies == []
        assert (fds, threads) == (fds0, threads0)
        assert rss - rss0 < RSS_SLACK_KIB, f"RSS grew from {rss0} to {rss} KiB"
    finally:
        containerd.ctr("task", "kill", "-s", "SIGKILL", anchor, check=False)
        containerd.ctr("task", "delete", anchor, check=False, timeout=30)
        containerd.ctr("container", "rm", anchor, check=False)
