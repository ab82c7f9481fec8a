"""Network statistics (pyrunc.oci.netstats): the reply format, and the helper against a real
network namespace made with unshare(1)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrunc.oci import netstats
from pyrunc.shim.reaper import Reaper


def test_replies_round_trip_and_errors_are_raised() -> None:
    interfaces = [("lo", dict.fromkeys(netstats.COUNTERS, 7)),
                  ("eth0", {c: i for i, c in enumerate(netstats.COUNTERS)})]
    assert netstats.decode_reply(netstats.encode_reply(interfaces)) == interfaces
    assert netstats.decode_reply(b"end\n") == []
    with pytest.raises(netstats.NetstatsError, match=r"^NetlinkError: no such namespace$"):
        netstats.decode_reply(b"error NetlinkError: no such namespace\n")
    with pytest.raises(netstats.NetstatsError, match="no answer"):
        netstats.decode_reply(b"lo\t1\t2\n")  # cut short
    with pytest.raises(netstats.NetstatsError, match="not a network statistics line"):
        netstats.decode_reply(b"lo\t1\t2\nend\n")


def test_this_process_shares_the_hosts_network_namespace() -> None:
    assert not netstats.has_own_netns(os.getpid())
    assert not netstats.has_own_netns(2**22 + 1)  # no such process


@pytest.fixture
def isolated() -> Iterator[int]:
    """A process in a network namespace of its own (with only lo)."""
    proc = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        deadline = time.monotonic() + 5
        while not netstats.has_own_netns(proc.pid):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_the_helper_is_started_on_demand_and_reads_the_namespaces_interfaces(
        tmp_path: Path, isolated: int) -> None:
    path = str(tmp_path / "netstats.sock")
    reaper = Reaper()
    subprocess.run(["nsenter", "-t", str(isolated), "-n", "ip", "link", "set", "lo", "up"],
                   check=True)
    try:
        first = netstats.read(isolated, reaper, path)  # no helper yet: this starts one
        assert [name for name, _ in first] == ["lo"]
        subprocess.run(["nsenter", "-t", str(isolated), "-n", "busybox", "ping", "-c", "3",
                        "-i", "0.2", "127.0.0.1"], check=True, capture_output=True)
        (_, after), = netstats.read(isolated, reaper, path)  # the same helper answers
        assert after["rx_packets"] >= first[0][1]["rx_packets"] + 6  # 3 requests, 3 replies
        assert after["tx_bytes"] > first[0][1]["tx_bytes"]
        # This process never entered the namespace.
        assert os.readlink("/proc/self/ns/net") != os.readlink(f"/proc/{isolated}/ns/net")
    finally:
        subprocess.run(["pkill", "-f", f"pyrunc.oci.netstats {path}"], check=False)
        reaper.reap()


def test_the_helper_exits_after_its_idle_time(tmp_path: Path) -> None:
    path = str(tmp_path / "netstats.sock")
    code = ("import sys; from pyrunc.oci import netstats; "
            f"sys.exit(netstats.serve({path!r}, idle_exit=0.5))")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 0.5
    assert not os.path.exists(path) and not os.path.exists(path + ".lock")
