"""Network statistics in Stats: one entry per interface of the container's own network
namespace, read over netlink by the node's helper (pyrunc.oci.netstats). The Go shim leaves them
out.

They are read here from containerd's own Tasks API (Metrics), decoded with whichever of v1 or v2
Metrics the shim sent. `ctr task metrics` shows them on cgroup v1 (v1.Metrics has had the field
from the start); on cgroup v2 only a client built with a containerd/cgroups that knows v2's
field 9 does, which the ctr of Debian 12's containerd 1.6 does not."""

from __future__ import annotations

import json
from typing import Any

from pyrunc.protos import metrics_v1_pb2, metrics_v2_pb2
from tests.integration.conftest import IMAGE, unique_id
from tests.support import Containerd
from tests.support.names import PYRUNC_RUNTIME
from tests.support.tasks_api import Tasks

METRICS = {"io.containerd.cgroups.v1.Metrics": metrics_v1_pb2.Metrics,
           "io.containerd.cgroups.v2.Metrics": metrics_v2_pb2.Metrics}


def network(ctd: Containerd, id: str) -> dict[str, Any]:
    with Tasks(ctd.address, ctd.namespace) as tasks:
        data = tasks.metrics(id)
    metrics = METRICS[data.type_url].FromString(data.value)
    entries = {entry.name: entry for entry in metrics.network}
    if data.type_url.endswith("v1.Metrics"):  # and ctr, which decodes v1 in full, agrees
        shown = json.loads(ctd.ctr("task", "metrics", "--format", "json", id).stdout)
        assert sorted(e["name"] for e in shown.get("network") or []) == sorted(entries)
    return entries


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
            assert getattr(after, counter) >= getattr(before["lo"], counter) + 6, (before, after)
        assert after.rx_bytes > before["lo"].rx_bytes
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
