"""Network statistics in Stats: one entry per interface of the container's own network
namespace, read over netlink by the node's helper (pyrunc.oci.netstats). The Go shim leaves them
out; `ctr task metrics` shows pyrunc's."""

from __future__ import annotations

import json
from typing import Any

from tests.integration.conftest import IMAGE, unique_id
from tests.support import Containerd
from tests.support.names import PYRUNC_RUNTIME


def network(ctd: Containerd, id: str) -> dict[str, dict[str, Any]]:
    data = json.loads(ctd.ctr("task", "metrics", "--format", "json", id).stdout)
    return {entry["name"]: entry for entry in data.get("network") or []}


def test_traffic_inside_the_container_moves_its_counters(containerd: Containerd) -> None:
    id = unique_id("net")
    containerd.ctr("run", "-d", "--runtime", PYRUNC_RUNTIME, IMAGE, id, "sleep", "600")
    try:
        before = network(containerd, id)
        assert list(before) == ["lo"]  # a namespace of its own, with only its loopback
        containerd.ctr("task", "exec", "--exec-id", "ping", id, "ping", "-c", "3", "-i", "0.2",
                       "127.0.0.1")
        after = network(containerd, id)["lo"]
        for counter in ("rx_packets", "tx_packets"):  # 3 requests and 3 replies, both ways
            assert after.get(counter, 0) >= before["lo"].get(counter, 0) + 6, (before, after)
        assert after["rx_bytes"] > before["lo"].get("rx_bytes", 0)
    finally:
        containerd.remove(id)


def test_a_container_on_the_hosts_network_has_no_entries(containerd: Containerd) -> None:
    id = unique_id("net")
    containerd.ctr("run", "-d", "--net-host", "--runtime", PYRUNC_RUNTIME, IMAGE, id, "sleep",
                   "600")
    try:
        assert network(containerd, id) == {}
    finally:
        containerd.remove(id)
