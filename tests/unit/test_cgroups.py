"""Container cgroups: Metrics from cgroup files (v1 and v2), finding a process's cgroup, and OOM
notifications.

Stats and /proc/<pid>/cgroup parsing run on fixture trees written into tmp_path. The OOM watcher
(its thread, check_now and their races) runs on fixture cgroups too: inotify on a regular
memory.events file for v2, and for v1 a real eventfd that the test signals as the kernel would.
The v1 tests at the end make real cgroups on this (hybrid) host and OOM-kill a child in one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from pyrunc.oci.cgroups import (
    CLOCK_TICKS,
    UINT64_MAX,
    V1_TYPE_URL,
    V2_TYPE_URL,
    CgroupError,
    CgroupGone,
    CgroupV1,
    CgroupV2,
    OOMWatcher,
    cgroup_for_path,
    cgroup_for_pid,
    parse_proc_cgroup,
)

# --- fixture trees ----------------------------------------------------------------------------


def write_tree(base: Path, files: Mapping[str, str]) -> None:
    for name, content in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


MEMORY_STAT_V1 = """\
cache 9244672
rss 5337088
rss_huge 2097152
shmem 0
mapped_file 7430144
dirty 12288
writeback 4096
swap 0
pgpgin 51680
pgpgout 48120
pgfault 70240
pgmajfault 3
inactive_anon 1000
active_anon 1531904
inactive_file 4096
active_file 155648
unevictable 8192
hierarchical_memory_limit 8388608
hierarchical_memsw_limit 16777216
total_cache 46292992
total_rss 9453568
total_rss_huge 4194304
total_shmem 0
total_mapped_file 10883072
total_dirty 385024
total_writeback 8192
total_swap 0
total_pgpgin 14836006
total_pgpgout 14822926
total_pgfault 17273296
total_pgmajfault 2993
total_inactive_anon 3956736
total_active_anon 1560576
total_inactive_file 10522624
total_active_file 26685440
total_unevictable 12890112
"""

BLKIO_THROTTLE = """\
254:0 Read 4096
254:0 Write 8192
254:0 Sync 12288
254:0 Async 0
254:0 Discard 0
254:0 Total 12288
Total 12288
"""


def v1_files(cgroup: str = "pyrunc-test/c1") -> dict[str, str]:
    """A v1 container cgroup as runc leaves it: memory, pids, cpu,cpuacct, blkio, hugetlb."""
    memory = f"memory/{cgroup}/"
    files = {
        f"cpu,cpuacct/{cgroup}/cpuacct.usage": "123456789\n",
        f"cpu,cpuacct/{cgroup}/cpuacct.usage_percpu": "100000000 23456789 \n",
        f"cpu,cpuacct/{cgroup}/cpuacct.stat": "user 250\nsystem 50\n",
        f"cpu,cpuacct/{cgroup}/cpu.stat": (
            "nr_periods 10\nnr_throttled 3\nthrottled_time 4000000\nnr_bursts 0\nburst_time 0\n"
        ),
        memory + "memory.stat": MEMORY_STAT_V1,
        memory + "memory.usage_in_bytes": "5000000\n",
        memory + "memory.max_usage_in_bytes": "7000000\n",
        memory + "memory.failcnt": "12\n",
        memory + "memory.limit_in_bytes": "8388608\n",
        memory + "memory.memsw.usage_in_bytes": "5100000\n",
        memory + "memory.memsw.max_usage_in_bytes": "7100000\n",
        memory + "memory.memsw.failcnt": "1\n",
        memory + "memory.memsw.limit_in_bytes": "16777216\n",
        memory + "memory.kmem.usage_in_bytes": "300000\n",
        memory + "memory.kmem.max_usage_in_bytes": "400000\n",
        memory + "memory.kmem.failcnt": "0\n",
        memory + "memory.kmem.limit_in_bytes": "9223372036854771712\n",
        memory + "memory.kmem.tcp.usage_in_bytes": "0\n",
        memory + "memory.kmem.tcp.max_usage_in_bytes": "0\n",
        memory + "memory.kmem.tcp.failcnt": "0\n",
        memory + "memory.kmem.tcp.limit_in_bytes": "9223372036854771712\n",
        memory + "memory.oom_control": "oom_kill_disable 0\nunder_oom 1\noom_kill 2\n",
        f"pids/{cgroup}/pids.current": "3\n",
        f"pids/{cgroup}/pids.max": "max\n",
        f"blkio/{cgroup}/blkio.throttle.io_service_bytes": BLKIO_THROTTLE,
        f"blkio/{cgroup}/blkio.throttle.io_serviced": "254:0 Read 1\n254:0 Write 2\nTotal 3\n",
        f"hugetlb/{cgroup}/hugetlb.2MB.usage_in_bytes": "2097152\n",
        f"hugetlb/{cgroup}/hugetlb.2MB.max_usage_in_bytes": "4194304\n",
        f"hugetlb/{cgroup}/hugetlb.2MB.failcnt": "1\n",
        f"hugetlb/{cgroup}/hugetlb.2MB.limit_in_bytes": "9223372036854771712\n",
        f"hugetlb/{cgroup}/hugetlb.1GB.usage_in_bytes": "0\n",
        f"hugetlb/{cgroup}/hugetlb.1GB.max_usage_in_bytes": "0\n",
        f"hugetlb/{cgroup}/hugetlb.1GB.failcnt": "0\n",
        # The reservation files of newer kernels are not page sizes of their own.
        f"hugetlb/{cgroup}/hugetlb.2MB.rsvd.usage_in_bytes": "0\n",
    }
    return files


PARTITIONS = """\
major minor  #blocks  name

 254        0  268435456 vda
 254        1  268434432 vda1
"""


def make_v1_root(tmp_path: Path, *, files: Mapping[str, str] | None = None) -> tuple[Path, Path]:
    """A v1 root with cpu,cpuacct co-mounted (plus the usual symlinks) and a /proc."""
    root = tmp_path / "cgroup"
    write_tree(root, v1_files() if files is None else files)
    (root / "cpu,cpuacct").mkdir(exist_ok=True)
    (root / "cpu").symlink_to("cpu,cpuacct")
    (root / "cpuacct").symlink_to("cpu,cpuacct")
    (root / "unified").mkdir()  # a hybrid host's empty cgroup2
    proc = tmp_path / "proc"
    write_tree(proc, {"partitions": PARTITIONS})
    return root, proc


# --- v1 stats ---------------------------------------------------------------------------------


def test_v1_stats_fill_every_controller_as_containerd_does(tmp_path: Path) -> None:
    root, proc = make_v1_root(tmp_path)
    cgroup = cgroup_for_path("/pyrunc-test/c1", root=str(root), proc=str(proc))
    assert isinstance(cgroup, CgroupV1)
    assert cgroup.type_url == V1_TYPE_URL == "io.containerd.cgroups.v1.Metrics"
    assert cgroup.exists()

    m = cgroup.stats()

    assert m.cpu.usage.total == 123456789
    assert list(m.cpu.usage.per_cpu) == [100000000, 23456789]
    # cpuacct.stat counts USER_HZ ticks; Metrics wants nanoseconds.
    assert m.cpu.usage.user == 250 * 1_000_000_000 // CLOCK_TICKS
    assert m.cpu.usage.kernel == 50 * 1_000_000_000 // CLOCK_TICKS
    assert (m.cpu.throttling.periods, m.cpu.throttling.throttled_periods) == (10, 3)
    assert m.cpu.throttling.throttled_time == 4000000

    mem = m.memory
    assert (mem.cache, mem.rss, mem.rss_huge, mem.mapped_file) == (
        9244672,
        5337088,
        2097152,
        7430144,
    )
    assert (mem.dirty, mem.writeback) == (12288, 4096)
    assert (mem.pg_pg_in, mem.pg_pg_out, mem.pg_fault, mem.pg_maj_fault) == (51680, 48120, 70240, 3)
    assert (mem.inactive_anon, mem.active_anon) == (1000, 1531904)
    assert (mem.inactive_file, mem.active_file, mem.unevictable) == (4096, 155648, 8192)
    assert mem.hierarchical_memory_limit == 8388608
    assert mem.hierarchical_swap_limit == 16777216  # from hierarchical_memsw_limit
    assert (mem.total_cache, mem.total_rss, mem.total_rss_huge) == (46292992, 9453568, 4194304)
    assert (mem.total_mapped_file, mem.total_dirty, mem.total_writeback) == (10883072, 385024, 8192)
    assert (mem.total_pg_pg_in, mem.total_pg_pg_out) == (14836006, 14822926)
    assert (mem.total_pg_fault, mem.total_pg_maj_fault) == (17273296, 2993)
    assert (mem.total_inactive_anon, mem.total_active_anon) == (3956736, 1560576)
    assert (mem.total_inactive_file, mem.total_active_file) == (10522624, 26685440)
    assert mem.total_unevictable == 12890112
    assert (mem.usage.usage, mem.usage.max, mem.usage.failcnt, mem.usage.limit) == (
        5000000,
        7000000,
        12,
        8388608,
    )
    assert (mem.swap.usage, mem.swap.max, mem.swap.failcnt, mem.swap.limit) == (
        5100000,
        7100000,
        1,
        16777216,
    )
    assert (mem.kernel.usage, mem.kernel.max, mem.kernel.limit) == (
        300000,
        400000,
        9223372036854771712,
    )
    assert m.memory.HasField("kernel_tcp")
    assert mem.kernel_tcp.limit == 9223372036854771712
    oom = m.memory_oom_control
    assert (oom.oom_kill_disable, oom.under_oom, oom.oom_kill) == (0, 1, 2)

    assert (m.pids.current, m.pids.limit) == (3, 0)  # v1 reports "max" as 0

    # No CFQ files on this kernel: the throttle files stand in, devices named from partitions.
    serviced = [(e.device, e.major, e.minor, e.op, e.value) for e in m.blkio.io_serviced_recursive]
    assert serviced == [("/dev/vda", 254, 0, "Read", 1), ("/dev/vda", 254, 0, "Write", 2)]
    assert [(e.op, e.value) for e in m.blkio.io_service_bytes_recursive] == [
        ("Read", 4096),
        ("Write", 8192),
        ("Sync", 12288),
        ("Async", 0),
        ("Discard", 0),
        ("Total", 12288),
    ]
    assert len(m.blkio.io_queued_recursive) == 0

    assert [(h.pagesize, h.usage, h.max, h.failcnt) for h in m.hugetlb] == [
        ("2MB", 2097152, 4194304, 1),
        ("1GB", 0, 0, 0),
    ]
    assert not m.HasField("rdma")
    assert m.SerializeToString()  # a complete, well-formed message


def test_v1_blkio_prefers_cfq_files_and_falls_back_when_they_are_empty(tmp_path: Path) -> None:
    blkio = "blkio/c/"
    cfq = {
        blkio + "blkio.io_serviced_recursive": "8:0 Read 5\n8:0 Write 6\nTotal 11\n",
        blkio + "blkio.io_service_bytes_recursive": "8:0 Read 20480\nTotal 20480\n",
        blkio + "blkio.sectors_recursive": "8:0 40\n",
        blkio + "blkio.time_recursive": "8:0 7\n",
        blkio + "blkio.io_queued_recursive": "Total 0\n",
        blkio + "blkio.io_service_time_recursive": "Total 0\n",
        blkio + "blkio.io_wait_time_recursive": "Total 0\n",
        blkio + "blkio.io_merged_recursive": "Total 0\n",
        blkio + "blkio.throttle.io_serviced": "8:0 Read 999\n",
        blkio + "blkio.throttle.io_service_bytes": "8:0 Read 999\n",
    }
    root, proc = make_v1_root(tmp_path, files=cfq)
    m = cgroup_for_path("/c", root=str(root), proc=str(proc)).stats()
    assert [(e.op, e.value) for e in m.blkio.io_serviced_recursive] == [("Read", 5), ("Write", 6)]
    assert [(e.major, e.minor, e.op, e.value) for e in m.blkio.sectors_recursive] == [
        (8, 0, "", 40)
    ]
    assert [e.value for e in m.blkio.io_time_recursive] == [7]
    assert m.blkio.io_serviced_recursive[0].device == ""  # 8:0 is not in partitions

    # Present but empty CFQ files (no device uses CFQ): back to the throttle files.
    for name in list(cfq):
        if "throttle" not in name:
            (root / name).write_text("Total 0\n")
    m = cgroup_for_path("/c", root=str(root), proc=str(proc)).stats()
    assert [(e.op, e.value) for e in m.blkio.io_serviced_recursive] == [("Read", 999)]
    assert len(m.blkio.sectors_recursive) == 0


def test_v1_missing_controllers_leave_their_parts_unset(tmp_path: Path) -> None:
    # Only memory, without swap accounting (no memsw files) and without kmem.
    files = {
        name: content
        for name, content in v1_files("c").items()
        if name.startswith("memory/") and ".memsw." not in name and ".kmem." not in name
    }
    root = tmp_path / "cgroup"
    write_tree(root, files)
    (root / "pids").mkdir()  # mounted, but the cgroup has no pids files (not a cgroup dir)
    (root / "pids" / "c").mkdir()
    m = CgroupV1({"memory": str(root / "memory/c"), "pids": str(root / "pids/c")}).stats()
    assert m.HasField("memory") and m.HasField("memory_oom_control")
    assert m.memory.HasField("usage")
    assert not m.memory.HasField("swap")
    assert not m.memory.HasField("kernel") and not m.memory.HasField("kernel_tcp")
    for part in ("cpu", "pids", "blkio", "rdma", "cgroup_stats"):
        assert not m.HasField(part), part
    assert len(m.hugetlb) == 0


def test_v1_stats_of_a_removed_cgroup_raise_cgroup_gone(tmp_path: Path) -> None:
    root, proc = make_v1_root(tmp_path)
    cgroup = cgroup_for_path("/pyrunc-test/gone", root=str(root), proc=str(proc))
    assert not cgroup.exists()
    with pytest.raises(CgroupGone):
        cgroup.stats()
    # One controller's directory removed is enough (as containerd's checkExists).
    partly = CgroupV1({"memory": str(root / "memory/pyrunc-test/c1"), "pids": str(tmp_path / "x")})
    with pytest.raises(CgroupGone):
        partly.stats()


# --- v2 stats ---------------------------------------------------------------------------------

MEMORY_STAT_V2 = """\
anon 4194304
file 8192
kernel 409600
kernel_stack 16384
pagetables 49152
sec_pagetables 0
percpu 0
sock 4096
vmalloc 0
shmem 1024
zswap 0
zswapped 0
file_mapped 2048
file_dirty 512
file_writeback 256
swapcached 0
anon_thp 2097152
file_thp 0
shmem_thp 0
inactive_anon 4096000
active_anon 98304
inactive_file 4096
active_file 4096
unevictable 0
slab_reclaimable 131072
slab_unreclaimable 65536
slab 196608
workingset_refault_anon 0
workingset_refault_file 0
workingset_activate_anon 0
workingset_activate_file 0
workingset_restore_anon 0
workingset_restore_file 0
workingset_nodereclaim 7
pgscan 11
pgsteal 12
pgscan_kswapd 0
pgscan_direct 11
pgsteal_kswapd 0
pgsteal_direct 12
pgfault 3000
pgmajfault 4
pgrefill 13
pgactivate 14
pgdeactivate 15
pglazyfree 16
pglazyfreed 17
thp_fault_alloc 18
thp_collapse_alloc 19
"""

PRESSURE = """\
some avg10=1.50 avg60=0.25 avg300=0.00 total=12345
full avg10=0.00 avg60=0.00 avg300=0.00 total=99
"""


def memory_events_text(*, high: int = 0, oom: int = 0, oom_kill: int = 0) -> str:
    """memory.events; `max` counts the times memory.max was hit, here once per OOM."""
    return f"low 0\nhigh {high}\nmax {oom}\noom {oom}\noom_kill {oom_kill}\noom_group_kill 0\n"


def v2_files() -> dict[str, str]:
    return {
        "cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n",
        "pyrunc-test/c1/cgroup.controllers": "cpu io memory pids hugetlb\n",
        "pyrunc-test/c1/cpu.stat": (
            "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\ncore_sched.force_idle_usec 0\n"
            "nr_periods 40\nnr_throttled 4\nthrottled_usec 800\nnr_bursts 1\nburst_usec 20\n"
        ),
        "pyrunc-test/c1/cpu.pressure": PRESSURE,
        "pyrunc-test/c1/memory.stat": MEMORY_STAT_V2,
        "pyrunc-test/c1/memory.current": "4460544\n",
        "pyrunc-test/c1/memory.max": "max\n",
        "pyrunc-test/c1/memory.peak": "5000000\n",
        "pyrunc-test/c1/memory.swap.current": "0\n",
        "pyrunc-test/c1/memory.swap.max": "1048576\n",
        "pyrunc-test/c1/memory.events": memory_events_text(high=1, oom=3, oom_kill=1),
        "pyrunc-test/c1/memory.pressure": PRESSURE,
        "pyrunc-test/c1/pids.current": "2\n",
        "pyrunc-test/c1/pids.max": "max\n",
        "pyrunc-test/c1/io.stat": (
            "254:0 rbytes=1048576 wbytes=4096 rios=16 wios=1 dbytes=0 dios=0\n"
            "8:16 rbytes=0 wbytes=512 rios=0 wios=1 dbytes=0 dios=0\n"
        ),
        "pyrunc-test/c1/hugetlb.2MB.current": "2097152\n",
        "pyrunc-test/c1/hugetlb.2MB.max": "max\n",
        "pyrunc-test/c1/hugetlb.1GB.current": "0\n",
        "pyrunc-test/c1/hugetlb.1GB.max": "0\n",
        "pyrunc-test/c1/hugetlb.2MB.rsvd.current": "0\n",
    }


def test_v2_stats_fill_every_controller_as_containerd_does(tmp_path: Path) -> None:
    write_tree(tmp_path, v2_files())
    cgroup = cgroup_for_path("/pyrunc-test/c1", root=str(tmp_path))
    assert isinstance(cgroup, CgroupV2)
    assert cgroup.type_url == V2_TYPE_URL == "io.containerd.cgroups.v2.Metrics"

    m = cgroup.stats()

    cpu = m.cpu
    assert (cpu.usage_usec, cpu.user_usec, cpu.system_usec) == (5000, 3000, 2000)
    assert (cpu.nr_periods, cpu.nr_throttled, cpu.throttled_usec) == (40, 4, 800)
    assert (cpu.nr_bursts, cpu.burst_usec) == (1, 20)
    assert cpu.psi.some.avg10 == 1.5 and cpu.psi.some.total == 12345 and cpu.psi.full.total == 99

    mem = m.memory
    assert (mem.anon, mem.file, mem.kernel_stack, mem.slab, mem.sock) == (
        4194304,
        8192,
        16384,
        196608,
        4096,
    )
    assert (mem.shmem, mem.file_mapped, mem.file_dirty, mem.file_writeback) == (
        1024,
        2048,
        512,
        256,
    )
    assert (mem.anon_thp, mem.inactive_anon, mem.active_anon) == (2097152, 4096000, 98304)
    assert (mem.slab_reclaimable, mem.slab_unreclaimable) == (131072, 65536)
    assert (mem.pgfault, mem.pgmajfault, mem.workingset_nodereclaim) == (3000, 4, 7)
    assert (mem.pgrefill, mem.pgscan, mem.pgsteal, mem.pgactivate) == (13, 11, 12, 14)
    assert (mem.pgdeactivate, mem.pglazyfree, mem.pglazyfreed) == (15, 16, 17)
    assert (mem.thp_fault_alloc, mem.thp_collapse_alloc) == (18, 19)
    assert mem.workingset_refault == 0  # split into _anon/_file since 5.9; containerd reads 0 too
    assert (mem.usage, mem.max_usage) == (4460544, 5000000)
    assert mem.usage_limit == UINT64_MAX  # "max", as containerd's getStatFileContentUint64
    assert (mem.swap_usage, mem.swap_limit, mem.swap_max_usage) == (0, 1048576, 0)
    assert mem.psi.full.total == 99

    events = m.memory_events
    assert (events.low, events.high, events.max, events.oom, events.oom_kill) == (0, 1, 3, 3, 1)
    assert (m.pids.current, m.pids.limit) == (2, UINT64_MAX)
    assert [(e.major, e.minor, e.rbytes, e.wbytes, e.rios, e.wios) for e in m.io.usage] == [
        (254, 0, 1048576, 4096, 16, 1),
        (8, 16, 0, 512, 0, 1),
    ]
    assert not m.io.HasField("psi")
    assert [(h.pagesize, h.current, h.max) for h in m.hugetlb] == [
        ("2MB", 2097152, UINT64_MAX),
        ("1GB", 0, 0),
    ]
    assert not m.HasField("rdma")


def test_v2_controllers_not_enabled_leave_their_parts_unset(tmp_path: Path) -> None:
    # A cgroup whose parent enables no controller still has cpu.stat (and nothing else).
    write_tree(tmp_path, {"c/cgroup.controllers": "", "c/cpu.stat": "usage_usec 7\nuser_usec 5\n"})
    m = CgroupV2(str(tmp_path / "c")).stats()
    assert (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec) == (7, 5, 0)
    assert not m.cpu.HasField("psi")
    for part in ("pids", "memory", "memory_events", "io", "rdma"):
        assert not m.HasField(part), part
    assert len(m.hugetlb) == 0


def test_v2_rdma_limits_read_max_as_the_uint32_maximum(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "c/rdma.current": "mlx4_0 hca_handle=2 hca_object=2000\n",
            "c/rdma.max": "mlx4_0 hca_handle=max hca_object=max\n",
        },
    )
    m = CgroupV2(str(tmp_path / "c")).stats()
    assert [(e.device, e.hca_handles, e.hca_objects) for e in m.rdma.current] == [
        ("mlx4_0", 2, 2000)
    ]
    assert [(e.hca_handles, e.hca_objects) for e in m.rdma.limit] == [(2**32 - 1, 2**32 - 1)]


def test_v2_stats_of_a_removed_cgroup_raise_cgroup_gone(tmp_path: Path) -> None:
    with pytest.raises(CgroupGone):
        CgroupV2(str(tmp_path / "gone")).stats()


# --- finding a process's cgroup ---------------------------------------------------------------

PROC_CGROUP_HYBRID = """\
12:rdma:/
11:hugetlb:/pyrunc-test/c1
10:net_cls,net_prio:/pyrunc-test/c1
9:name=systemd:/pyrunc-test/c1
8:pids:/pyrunc-test/c1
7:blkio:/pyrunc-test/c1
6:freezer:/pyrunc-test/c1
5:devices:/pyrunc-test/c1
4:memory:/pyrunc-test/c1
3:cpuset:/pyrunc-test/c1
2:cpu,cpuacct:/pyrunc-test/c1
0::/
"""


def test_parse_proc_cgroup_splits_v1_controllers_and_the_unified_path() -> None:
    parsed = parse_proc_cgroup(PROC_CGROUP_HYBRID)
    assert parsed.v1["cpu"] == parsed.v1["cpuacct"] == "/pyrunc-test/c1"
    assert parsed.v1["name=systemd"] == "/pyrunc-test/c1"
    assert parsed.v1["rdma"] == "/"
    assert parsed.unified == "/"
    assert parse_proc_cgroup("0::/system.slice/containerd.service\n").v1 == {}


def test_cgroup_for_pid_on_a_hybrid_host_uses_the_v1_controllers(tmp_path: Path) -> None:
    root, proc = make_v1_root(tmp_path)
    write_tree(proc, {"4242/cgroup": PROC_CGROUP_HYBRID})
    cgroup = cgroup_for_pid(4242, proc=str(proc), root=str(root))
    assert isinstance(cgroup, CgroupV1)
    # Only mounted controllers that carry statistics; cpu and cpuacct via their symlinks.
    assert cgroup.paths == {
        "cpu": str(root / "cpu/pyrunc-test/c1"),
        "cpuacct": str(root / "cpuacct/pyrunc-test/c1"),
        "memory": str(root / "memory/pyrunc-test/c1"),
        "pids": str(root / "pids/pyrunc-test/c1"),
        "blkio": str(root / "blkio/pyrunc-test/c1"),
        "hugetlb": str(root / "hugetlb/pyrunc-test/c1"),
    }
    assert cgroup.stats().memory.usage.usage == 5000000


def test_cgroup_for_pid_finds_co_mounted_controllers_without_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write_tree(root, {"cpu,cpuacct/c/cpuacct.usage": "5\n", "memory/c/memory.stat": "rss 1\n"})
    write_tree(tmp_path, {"proc/7/cgroup": "3:cpu,cpuacct:/c\n2:memory:/c\n1:pids:/c\n0::/\n"})
    cgroup = cgroup_for_pid(7, proc=str(tmp_path / "proc"), root=str(root))
    assert isinstance(cgroup, CgroupV1)
    assert cgroup.paths == {
        "cpu": str(root / "cpu,cpuacct/c"),
        "cpuacct": str(root / "cpu,cpuacct/c"),
        "memory": str(root / "memory/c"),
    }
    m = cgroup.stats()
    assert m.cpu.usage.total == 5 and m.memory.rss == 1


def test_cgroup_for_pid_on_a_pure_v2_host_uses_the_unified_path(tmp_path: Path) -> None:
    write_tree(tmp_path / "cgroup", v2_files())
    write_tree(tmp_path, {"proc/99/cgroup": "0::/pyrunc-test/c1\n"})
    cgroup = cgroup_for_pid(99, proc=str(tmp_path / "proc"), root=str(tmp_path / "cgroup"))
    assert isinstance(cgroup, CgroupV2)
    assert cgroup.path == str(tmp_path / "cgroup/pyrunc-test/c1")
    assert cgroup.stats().pids.current == 2


def test_cgroup_for_pid_of_a_missing_process_raises_process_lookup_error(tmp_path: Path) -> None:
    with pytest.raises(ProcessLookupError):
        cgroup_for_pid(12345, proc=str(tmp_path), root=str(tmp_path))


def test_cgroup_for_pid_without_mounted_controllers_raises(tmp_path: Path) -> None:
    write_tree(tmp_path, {"proc/1/cgroup": "0::/\n", "cgroup/unified/cgroup.procs": ""})
    with pytest.raises(CgroupError):
        cgroup_for_pid(1, proc=str(tmp_path / "proc"), root=str(tmp_path / "cgroup"))


# --- OOM watching: the watcher thread, with inotify (v2) and eventfds (v1) -------------------


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class Seen:
    """An on_oom that records each call and the thread it came from."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, threading.Thread]] = []
        self._changed = threading.Condition()

    def __call__(self, container_id: str) -> None:
        with self._changed:
            self.calls.append((container_id, threading.current_thread()))
            self._changed.notify_all()

    @property
    def ids(self) -> list[str]:
        return [container_id for container_id, _ in self.calls]

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.calls) >= count, timeout), self.calls


class FakeCgroup:
    """A container's memory cgroup as plain files, and the kernel's part in an OOM kill.

    v2: a kill is counted in memory.events, which inotify reports to the watcher. v1: the
    watcher registers a real eventfd by writing "<eventfd> <oom_control fd>" to
    cgroup.event_control (a plain file here), and a kill signals that eventfd, as the kernel does.
    """

    def __init__(self, directory: Path, version: str) -> None:
        self.dir = directory
        self.version = version
        self.signalled = 0  # kills whose signal has been given
        directory.mkdir(parents=True)
        self.cgroup: CgroupV1 | CgroupV2
        if version == "v1":
            (directory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")
            (directory / "cgroup.event_control").write_text("")
            self.cgroup = CgroupV1({"memory": str(directory)})
        else:
            (directory / "memory.events").write_text(memory_events_text())
            self.cgroup = CgroupV2(str(directory))

    def _eventfd(self) -> int:
        return int((self.dir / "cgroup.event_control").read_text().split()[0])

    def kill(self) -> None:
        if self.version == "v1":
            os.eventfd_write(self._eventfd(), 1)
        else:
            kills = self.signalled + 1
            (self.dir / "memory.events").write_text(memory_events_text(oom=kills, oom_kill=kills))
        self.signalled += 1

    def remove(self) -> None:
        efd = self._eventfd() if self.version == "v1" else -1
        for path in self.dir.iterdir():
            path.unlink()
        self.dir.rmdir()
        if efd >= 0:
            os.eventfd_write(efd, 1)  # v1 signals the eventfd once more when the cgroup goes


def anon_fds() -> set[str]:
    """This process's eventfds and inotify fds (what OOMWatcher opens)."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            continue  # the listing's own fd
        if target in ("anon_inode:[eventfd]", "anon_inode:inotify"):
            fds.add(f"{name} {target}")
    return fds


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before]


def cpu_ticks(thread: threading.Thread) -> int:
    """The thread's user + system CPU time, in clock ticks (fields 14 and 15 of its stat)."""
    stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@pytest.fixture
def watcher() -> Iterator[OOMWatcher]:
    """An OOMWatcher, closed at the end; close() must leave no thread and no fd behind."""
    threads, fds = set(threading.enumerate()), anon_fds()
    watcher = OOMWatcher()
    yield watcher
    watcher.close()
    assert new_threads(threads) == []
    assert anon_fds() - fds == set()


@pytest.fixture(params=["v1", "v2"])
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.contextmanager
def watcher_thread_busy(watcher: OOMWatcher, directory: Path) -> Iterator[threading.Thread]:
    """Keep the watcher thread inside another container's on_oom, so that it cannot come to a
    signal that arrives meanwhile (as if it had not been scheduled yet)."""
    entered, release = threading.Event(), threading.Event()
    thread: list[threading.Thread] = []

    def hold(container_id: str) -> None:
        thread.append(threading.current_thread())
        entered.set()
        release.wait(10)

    busy = FakeCgroup(directory, "v2")
    watcher.add("busy", busy.cgroup, hold)
    busy.kill()
    assert entered.wait(5)
    try:
        yield thread[0]
    finally:
        release.set()
        watcher.remove("busy")  # waits for hold to return


def test_v2_watcher_reports_when_oom_kill_grows(tmp_path: Path, watcher: OOMWatcher) -> None:
    events_file = tmp_path / "memory.events"
    events_file.write_text(memory_events_text(oom=0, oom_kill=0))
    seen = Seen()
    watcher.add("c1", CgroupV2(str(tmp_path)), seen)
    assert "c1" in watcher
    # Other counters moving (memory.max hit, no kill) are not an OOM kill.
    events_file.write_text(memory_events_text(oom=1, oom_kill=0))
    time.sleep(0.2)
    assert seen.ids == []
    events_file.write_text(memory_events_text(oom=2, oom_kill=1))
    seen.wait_for(1)
    time.sleep(0.1)
    assert seen.ids == ["c1"]  # once per kill, not once per inotify event
    assert seen.calls[0][1] is not threading.current_thread()  # from the watcher thread
    events_file.write_text(memory_events_text(oom=3, oom_kill=2))
    seen.wait_for(2)
    assert seen.ids == ["c1", "c1"]
    watcher.close()
    assert "c1" not in watcher


def test_watcher_reports_each_kill_once_from_its_thread(
    tmp_path: Path, version: str, watcher: OOMWatcher
) -> None:
    fake = FakeCgroup(tmp_path / "c1", version)
    seen = Seen()
    watcher.add("c1", fake.cgroup, seen)
    for kills in (1, 2, 3):
        fake.kill()
        seen.wait_for(kills)
    time.sleep(0.1)
    assert seen.ids == ["c1"] * 3
    assert {thread for _, thread in seen.calls} - {threading.current_thread()} == {
        seen.calls[0][1]
    }  # one watcher thread, not the caller's


def test_check_now_reports_a_kill_the_watcher_thread_has_not_handled(
    tmp_path: Path, version: str, watcher: OOMWatcher
) -> None:
    fake = FakeCgroup(tmp_path / "c1", version)
    seen = Seen()
    watcher.add("c1", fake.cgroup, seen)
    assert not watcher.check_now("c1")
    with watcher_thread_busy(watcher, tmp_path / "busy"):
        fake.kill()
        assert watcher.check_now("c1")
        assert seen.calls == [("c1", threading.current_thread())]
        assert not watcher.check_now("c1")
    time.sleep(0.2)  # the watcher thread, free again, finds nothing new
    assert seen.ids == ["c1"]
    assert not watcher.check_now("unknown")


def test_check_now_racing_the_watcher_thread_waits_for_its_on_oom(
    tmp_path: Path, version: str, watcher: OOMWatcher
) -> None:
    fake = FakeCgroup(tmp_path / "c1", version)
    seen = Seen()
    entered, release = threading.Event(), threading.Event()

    def on_oom(container_id: str) -> None:
        entered.set()
        release.wait(10)
        seen(container_id)

    watcher.add("c1", fake.cgroup, on_oom)
    fake.kill()
    assert entered.wait(5)  # the watcher thread is in on_oom for the kill
    results: list[tuple[bool, int]] = []
    checker = threading.Thread(
        target=lambda: results.append((watcher.check_now("c1"), len(seen.calls)))
    )
    checker.start()
    try:
        checker.join(0.2)
        assert checker.is_alive()  # check_now waits for that on_oom to finish ...
    finally:
        release.set()
    checker.join(5)
    # ... which it has when check_now returns, and check_now does not report the kill again.
    assert results == [(False, 1)]
    time.sleep(0.1)
    assert len(seen.calls) == 1 and seen.calls[0][1] not in (checker, threading.current_thread())


def test_a_kill_signalled_while_check_now_runs_is_reported_exactly_once(
    tmp_path: Path, version: str, watcher: OOMWatcher
) -> None:
    # The exit handler's check_now races both the kernel's signal and the watcher thread. A kill
    # signalled before check_now is reported when it returns; any kill is reported once, by
    # whichever of check_now and the thread reads it first.
    fake = FakeCgroup(tmp_path / "c1", version)
    seen = Seen()
    watcher.add("c1", fake.cgroup, seen)

    def kill_at(start: threading.Barrier, delay: float) -> None:
        start.wait()
        time.sleep(delay)
        fake.kill()

    rounds, reported_by_check_now = 300, 0
    for kills in range(1, rounds + 1):
        # Staggered, so that rounds cover all the orders: check_now before the signal, during
        # it, after it and before the thread's read, after the thread's.
        start = threading.Barrier(2)
        killer = threading.Thread(target=kill_at, args=(start, (kills % 3 == 0) * 0.0002))
        killer.start()
        start.wait()
        time.sleep((kills % 5) * 0.00005)
        signalled_before = fake.signalled == kills
        reported_by_check_now += watcher.check_now("c1")
        if signalled_before:
            assert len(seen.calls) == kills
        killer.join()
        seen.wait_for(kills)
        assert len(seen.calls) == kills  # never twice
    time.sleep(0.1)
    assert seen.ids == ["c1"] * rounds
    assert reported_by_check_now == sum(t is threading.current_thread() for _, t in seen.calls)


def test_v2_kill_before_the_watch_is_still_reported(tmp_path: Path, watcher: OOMWatcher) -> None:
    # An init OOM-killed right after start, before add(): containerd starts from 0 as well.
    (tmp_path / "memory.events").write_text(memory_events_text(oom=1, oom_kill=1))
    seen = Seen()
    with watcher_thread_busy(watcher, tmp_path / "busy"):
        watcher.add("c1", CgroupV2(str(tmp_path)), seen)
        assert watcher.check_now("c1")
    assert seen.ids == ["c1"]


def test_watch_ends_when_the_cgroup_is_removed_and_the_thread_with_it(
    tmp_path: Path, version: str, watcher: OOMWatcher
) -> None:
    threads, fds = set(threading.enumerate()), anon_fds()
    fake = FakeCgroup(tmp_path / "c", version)
    seen = Seen()
    watcher.add("c1", fake.cgroup, seen)
    [thread] = new_threads(threads)
    fake.remove()
    wait_until(lambda: "c1" not in watcher)
    # The last watch gone, the thread ends by itself, closing its wakeup fd.
    thread.join(5)
    assert not thread.is_alive()
    assert anon_fds() - fds == set()
    assert seen.ids == []


def test_one_thread_from_the_first_add_to_close_which_leaves_nothing(tmp_path: Path) -> None:
    threads, fds = set(threading.enumerate()), anon_fds()
    watcher = OOMWatcher()
    assert new_threads(threads) == []  # started by the first add
    v1, v2 = FakeCgroup(tmp_path / "a", "v1"), FakeCgroup(tmp_path / "b", "v2")
    seen = Seen()
    watcher.add("a", v1.cgroup, seen)
    watcher.add("b", v2.cgroup, seen)
    [thread] = new_threads(threads)  # one for all the watches
    assert len(anon_fds() - fds) == 3  # one per watch, and the thread's wakeup eventfd
    assert sorted(watcher) == ["a", "b"] and "a" in watcher
    watcher.close()
    assert not thread.is_alive()  # joined
    assert new_threads(threads) == [] and anon_fds() - fds == set()
    assert list(watcher) == []
    watcher.close()  # again: nothing to do
    # A closed watcher can watch again.
    watcher.add("b", v2.cgroup, seen)
    v2.kill()
    seen.wait_for(1)
    watcher.close()
    assert new_threads(threads) == [] and anon_fds() - fds == set()


def test_thread_ends_with_the_last_watch_and_the_next_add_starts_another(
    tmp_path: Path, watcher: OOMWatcher
) -> None:
    threads, fds = set(threading.enumerate()), anon_fds()
    a, b = FakeCgroup(tmp_path / "a", "v1"), FakeCgroup(tmp_path / "b", "v2")
    seen = Seen()
    watcher.add("a", a.cgroup, seen)
    watcher.add("b", b.cgroup, seen)
    [first] = new_threads(threads)
    watcher.remove("a")
    watcher.remove("a")  # not watched: nothing happens
    time.sleep(0.05)
    assert first.is_alive()  # b is still watched
    watcher.remove("b")
    first.join(5)
    assert not first.is_alive() and anon_fds() - fds == set()
    watcher.add("a", a.cgroup, seen)
    [second] = new_threads(threads)
    a.kill()
    seen.wait_for(1)
    assert seen.calls == [("a", second)]


def test_the_watcher_thread_waits_without_spending_cpu(
    tmp_path: Path, version: str, watcher: OOMWatcher
) -> None:
    fake = FakeCgroup(tmp_path / "c1", version)
    seen = Seen()
    watcher.add("c1", fake.cgroup, seen)
    fake.kill()
    seen.wait_for(1)
    thread = seen.calls[0][1]
    ticks = cpu_ticks(thread)
    time.sleep(0.3)
    assert cpu_ticks(thread) - ticks <= 2  # a thread that spun would spend ~30


def test_add_replaces_an_older_watch_of_the_container(
    tmp_path: Path, version: str, watcher: OOMWatcher
) -> None:
    old, new = FakeCgroup(tmp_path / "old", version), FakeCgroup(tmp_path / "new", version)
    first, second = Seen(), Seen()
    watcher.add("c1", old.cgroup, first)
    fds = anon_fds()
    watcher.add("c1", new.cgroup, second)
    assert len(anon_fds()) == len(fds)  # the old watch's fd is closed
    new.kill()
    second.wait_for(1)
    assert first.calls == [] and list(watcher) == ["c1"]


def test_on_oom_may_remove_its_own_watch(tmp_path: Path, version: str, watcher: OOMWatcher) -> None:
    fake = FakeCgroup(tmp_path / "c1", version)
    seen = Seen()

    def on_oom(container_id: str) -> None:
        seen(container_id)
        watcher.remove(container_id)

    watcher.add("c1", fake.cgroup, on_oom)
    fake.kill()
    seen.wait_for(1)
    wait_until(lambda: "c1" not in watcher)


def test_an_on_oom_that_raises_ends_its_watch_only(
    tmp_path: Path, watcher: OOMWatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", errors.append)

    def fail(container_id: str) -> None:
        raise RuntimeError("publisher closed")

    a, b = FakeCgroup(tmp_path / "a", "v2"), FakeCgroup(tmp_path / "b", "v1")
    seen = Seen()
    watcher.add("a", a.cgroup, fail)
    watcher.add("b", b.cgroup, seen)
    a.kill()
    wait_until(lambda: bool(errors))
    assert isinstance(errors[0].exc_value, RuntimeError)
    assert "a" not in watcher  # a watch that fails could keep waking the thread: it ends
    b.kill()
    seen.wait_for(1)  # the other watches carry on


def test_watcher_refuses_cgroups_it_cannot_watch(tmp_path: Path) -> None:
    threads, fds = set(threading.enumerate()), anon_fds()
    (tmp_path / "pids").mkdir()
    watcher = OOMWatcher()
    with pytest.raises(CgroupError):
        watcher.add("c1", CgroupV1({"pids": str(tmp_path / "pids")}), print)
    with pytest.raises(CgroupError):
        watcher.add("c1", CgroupV2(str(tmp_path)), print)  # no memory.events
    with pytest.raises(CgroupGone):
        watcher.add("c1", CgroupV2(str(tmp_path / "gone")), print)
    assert "c1" not in watcher
    assert new_threads(threads) == [] and anon_fds() - fds == set()


# --- real cgroup v1 on this host --------------------------------------------------------------

V1_ROOT = Path("/sys/fs/cgroup")
REAL_V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")

# Tells the parent it is up, then on each byte from the parent allocates argv[1] bytes (pages
# touched) and tells the parent again.
CHILD = """\
import os, sys
os.write(1, b"r")
held = []
while os.read(0, 1):
    held.append(b"x" * int(sys.argv[1]))
    os.write(1, b"a")
"""


def real_v1_available() -> bool:
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        return False
    if (V1_ROOT / "cgroup.controllers").exists():
        return False  # pure v2
    return (
        all((V1_ROOT / c / "cgroup.procs").exists() for c in REAL_V1_CONTROLLERS)
        and (V1_ROOT / "memory/cgroup.event_control").exists()
    )


needs_real_v1 = pytest.mark.skipif(not real_v1_available(), reason="needs root and cgroup v1")


class Child:
    def __init__(self, pid: int, stdin: int, stdout: int) -> None:
        self.pid, self.stdin, self.stdout = pid, stdin, stdout
        self.status: int | None = None

    def expect(self, byte: bytes) -> None:
        assert os.read(self.stdout, 1) == byte

    def allocate(self) -> None:
        os.write(self.stdin, b"g")

    def wait(self) -> int:
        if self.status is None:
            _, self.status = os.waitpid(self.pid, 0)
        return self.status


class RealV1Cgroup:
    """A cgroup made under each v1 controller, with children moved into it; all undone at the
    end, children killed and reaped first."""

    def __init__(self) -> None:
        self.name = f"pyrunc-unit-{secrets.token_hex(4)}"
        self.dirs: dict[str, Path] = {}
        self.children: list[Child] = []

    def create(self) -> None:
        for controller in REAL_V1_CONTROLLERS:
            directory = (V1_ROOT / controller).resolve() / self.name
            if directory not in self.dirs.values():
                directory.mkdir()
            self.dirs[controller] = directory

    def spawn(self, allocation: int) -> Child:
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        try:
            pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-I", "-S", "-c", CHILD, str(allocation)],
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, stdin_r, 0),
                    (os.POSIX_SPAWN_DUP2, stdout_w, 1),
                ],
            )
        finally:
            os.close(stdin_r)
            os.close(stdout_w)
        child = Child(pid, stdin_w, stdout_r)
        self.children.append(child)
        child.expect(b"r")
        for directory in set(self.dirs.values()):
            (directory / "cgroup.procs").write_text(str(pid))
        return child

    def set_memory_limit(self, limit: int) -> None:
        memory = self.dirs["memory"]
        (memory / "memory.limit_in_bytes").write_text(str(limit))
        if (memory / "memory.memsw.limit_in_bytes").exists():
            (memory / "memory.memsw.limit_in_bytes").write_text(str(limit))

    def remove(self) -> None:
        for directory in set(self.dirs.values()):
            for attempt in range(50):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:  # EBUSY while the last task is still leaving
                    if e.errno != errno.EBUSY or attempt == 49:
                        raise
                    time.sleep(0.02)

    def cleanup(self) -> None:
        for child in self.children:
            if child.status is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                child.wait()
            os.close(child.stdin)
            os.close(child.stdout)
        self.remove()


@pytest.fixture
def real_v1() -> Iterator[RealV1Cgroup]:
    cgroup = RealV1Cgroup()
    try:
        cgroup.create()
        yield cgroup
    finally:
        cgroup.cleanup()


@needs_real_v1
def test_real_v1_stats_of_a_process_in_its_cgroup(real_v1: RealV1Cgroup) -> None:
    child = real_v1.spawn(4 << 20)
    child.allocate()
    child.expect(b"a")

    cgroup = cgroup_for_pid(child.pid)
    assert isinstance(cgroup, CgroupV1)
    assert cgroup.memory_path == str(real_v1.dirs["memory"])
    assert cgroup.paths["pids"] == str(real_v1.dirs["pids"])
    m = cgroup.stats()
    assert m.memory.usage.usage >= 4 << 20
    assert m.memory.rss + m.memory.cache > 0
    assert m.memory.usage.limit > 0
    assert m.pids.current >= 1
    assert m.pids.limit == 0  # pids.max is "max"
    assert len(m.cpu.usage.per_cpu) >= 1
    assert m.cpu.usage.total == 0 or m.cpu.usage.total >= max(m.cpu.usage.per_cpu)
    assert m.HasField("memory_oom_control")
    assert m.memory_oom_control.oom_kill == 0
    assert cgroup_for_path(f"/{real_v1.name}").stats().pids.current == m.pids.current

    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    real_v1.remove()
    assert not cgroup.exists()
    with pytest.raises(CgroupGone):
        cgroup.stats()


@needs_real_v1
def test_real_v1_oom_kill_calls_on_oom_from_the_watcher_thread(
    real_v1: RealV1Cgroup, watcher: OOMWatcher
) -> None:
    child = real_v1.spawn(64 << 20)
    real_v1.set_memory_limit(8 << 20)
    cgroup = cgroup_for_pid(child.pid)
    seen = Seen()
    watcher.add("c1", cgroup, seen)
    child.allocate()
    seen.wait_for(1, timeout=20)
    assert seen.calls[0][1] is not threading.current_thread()
    watcher.close()
    status = child.wait()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    m = cgroup.stats()
    assert m.memory_oom_control.oom_kill >= 1
    assert m.memory.usage.max <= 8 << 20


@needs_real_v1
def test_real_v1_check_now_reports_the_oom_before_the_exit_is_handled(
    real_v1: RealV1Cgroup, watcher: OOMWatcher, tmp_path: Path
) -> None:
    child = real_v1.spawn(64 << 20)
    real_v1.set_memory_limit(8 << 20)
    cgroup = cgroup_for_pid(child.pid)
    seen = Seen()
    watcher.add("c1", cgroup, seen)
    # The watcher thread kept busy, as if the shim handled the exit before it saw the eventfd.
    with watcher_thread_busy(watcher, tmp_path / "busy"):
        child.allocate()
        status = child.wait()
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert seen.ids == []
        assert watcher.check_now("c1")
        assert seen.calls == [("c1", threading.current_thread())]
    time.sleep(0.2)
    assert seen.ids == ["c1"]  # check_now drained the eventfd: no second report


@needs_real_v1
def test_real_v1_watch_ends_quietly_when_the_cgroup_is_removed(
    real_v1: RealV1Cgroup, watcher: OOMWatcher
) -> None:
    child = real_v1.spawn(1 << 20)
    cgroup = cgroup_for_pid(child.pid)
    seen = Seen()
    watcher.add("c1", cgroup, seen)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    real_v1.remove()  # the kernel signals the eventfd once more on removal
    wait_until(lambda: "c1" not in watcher)
    assert seen.ids == []


UNIFIED = V1_ROOT / "unified"


@pytest.mark.skipif(
    os.geteuid() != 0 or not (UNIFIED / "cgroup.procs").exists(),
    reason="needs root and the hybrid host's cgroup2 at /sys/fs/cgroup/unified",
)
def test_real_v2_cgroup_without_controllers_reports_cpu_only() -> None:
    # The hybrid host's cgroup2 has every controller bound to v1: only cpu.stat is there.
    directory = UNIFIED / f"pyrunc-unit-{secrets.token_hex(4)}"
    directory.mkdir()
    try:
        cgroup = CgroupV2(str(directory))
        m = cgroup.stats()
        assert m.HasField("cpu")
        assert not m.HasField("memory") and not m.HasField("pids")
    finally:
        directory.rmdir()
    with pytest.raises(CgroupGone):
        cgroup.stats()
