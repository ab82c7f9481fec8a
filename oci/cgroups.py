"""A container's cgroup: its statistics for the Stats RPC, and its OOM kills for TaskOOM.

The shim finds the cgroup from the init process (`cgroup_for_pid`), as the Go shim does with
`cgroups.Load`. On a cgroup v1 or hybrid host every controller has its own directory (runc uses v1
there); on a pure cgroup v2 host there is one directory. `stats()` reads the cgroup files into the
`io.containerd.cgroups.v1.Metrics` or `.v2.Metrics` message, field for field as containerd/cgroups
fills them, so `ctr task metrics` and the CRI read pyrunc's numbers like the Go shim's. A controller
that is not mounted (or not enabled) leaves its part of the message unset; a cgroup that has been
removed raises CgroupGone.

OOMWatcher follows containerd's pkg/oom: on v1 an eventfd registered on `memory.oom_control`
through `cgroup.event_control`; on v2 inotify on `memory.events`, reporting when `oom_kill` grows.
Both are plain file descriptors that one watcher thread per shim waits on with poll(2), so an
OOM is reported as soon as the kernel signals it, and `check_now` lets the shim look once more,
from its own thread, just before it publishes a process's exit (containerd "should always send
oom event before exit event").
"""

from __future__ import annotations

import abc
import ctypes
import errno
import functools
import os
import re
import select
import struct
import threading
from collections.abc import Callable, Iterator, Mapping

from google.protobuf.message import Message

from pyrunc.oci.errors import MessageError, PathError, strerror
from pyrunc.oci.record import FrozenRecord
from pyrunc.protos import metrics_v1_pb2, metrics_v2_pb2

__all__ = [
    "V1_CONTROLLERS",
    "V1_TYPE_URL",
    "V2_TYPE_URL",
    "Cgroup",
    "CgroupError",
    "CgroupGone",
    "CgroupV1",
    "CgroupV2",
    "OOMCallback",
    "OOMWatcher",
    "ProcCgroup",
    "cgroup_for_path",
    "cgroup_for_pid",
    "is_unified",
    "parse_proc_cgroup",
]

DEFAULT_ROOT = "/sys/fs/cgroup"
DEFAULT_PROC = "/proc"

V1_TYPE_URL = "io.containerd.cgroups.v1.Metrics"
V2_TYPE_URL = "io.containerd.cgroups.v2.Metrics"

# The v1 controllers whose files feed Metrics (containerd also loads freezer, devices, cpuset, …
# for other purposes; they hold no statistics).
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "blkio", "hugetlb", "rdma")

UINT64_MAX = (1 << 64) - 1
UINT32_MAX = (1 << 32) - 1
NANOSECONDS_PER_SECOND = 1_000_000_000
# cpuacct.stat counts in USER_HZ ticks.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class CgroupError(Exception):
    """A cgroup cannot be found, or cannot be used the way it was asked to be."""


class CgroupGone(CgroupError):
    """The cgroup no longer exists (its container was deleted)."""


# --- reading cgroup files ---------------------------------------------------------------------


def _read(path: str) -> str | None:
    """The file's text, or None when it does not exist (its controller is not there)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("ascii", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ENODEV:
            # Reading a file of a cgroup removed since it was opened.
            raise CgroupGone(f"cgroup deleted: {os.path.dirname(path)}") from e
        if e.errno == errno.EOPNOTSUPP:
            # *.pressure on a kernel booted with psi=0.
            return None
        raise


def _parse_uint(text: str, max_value: int = 0) -> int:
    """A counter or limit as containerd parses it: "max" is max_value, negatives are 0."""
    text = text.strip()
    if text == "max":
        return max_value
    return min(max(int(text), 0), UINT64_MAX)


def _read_uint(path: str, max_value: int = 0) -> int | None:
    text = _read(path)
    if text is None or not text.strip():
        return None
    return _parse_uint(text, max_value)


def _parse_kv(text: str) -> dict[str, int]:
    """`key value` lines (memory.stat, cpu.stat, memory.events, …); other lines are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2:
            try:
                out[fields[0]] = _parse_uint(fields[1])
            except ValueError:
                continue
    return out


def _read_kv(path: str) -> dict[str, int] | None:
    text = _read(path)
    return None if text is None else _parse_kv(text)


def _parse_psi(text: str, psi: Message) -> None:
    """`some avg10=0.00 avg60=0.00 avg300=0.00 total=0` (and `full …`) into a PSIStats."""
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0] not in ("some", "full"):
            continue
        data = getattr(psi, fields[0])
        data.SetInParent()
        for field in fields[1:]:
            key, _, value = field.partition("=")
            if key in ("avg10", "avg60", "avg300"):
                setattr(data, key, float(value))
            elif key == "total":
                data.total = _parse_uint(value)


def _read_psi(path: str, psi: Message) -> None:
    text = _read(path)
    if text is not None:
        psi.SetInParent()
        _parse_psi(text, psi)


def _parse_rdma(text: str, entries: Message) -> None:
    """`mlx4_0 hca_handle=2 hca_object=2000` lines ("max" is the uint32 maximum)."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 3:
            continue
        entry = entries.add(device=fields[0])
        for field in fields[1:]:
            key, _, value = field.partition("=")
            number = min(_parse_uint(value, UINT32_MAX), UINT32_MAX)
            if key == "hca_handle":
                entry.hca_handles = number
            elif key == "hca_object":
                entry.hca_objects = number


def _read_rdma(directory: str, rdma: Message) -> None:
    current = _read(os.path.join(directory, "rdma.current"))
    limit = _read(os.path.join(directory, "rdma.max"))
    if current is None and limit is None:
        return
    rdma.SetInParent()
    _parse_rdma(current or "", rdma.current)
    _parse_rdma(limit or "", rdma.limit)


_PAGESIZE_UNITS = {"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40, "PB": 1 << 50}


def _pagesize_bytes(pagesize: str) -> int:
    """ "2MB" → 2097152: the kernel's names for huge page sizes, used to order them."""
    match = re.fullmatch(r"(\d+)([KMGTP]B)", pagesize)
    return int(match[1]) * _PAGESIZE_UNITS[match[2]] if match else 0


def _hugetlb_pagesizes(directory: str, suffix: str) -> list[str]:
    """Page sizes from the hugetlb.<size>.<suffix> files present in the directory."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    pattern = re.compile(r"hugetlb\.([^.]+)\." + re.escape(suffix))
    sizes = [m[1] for m in map(pattern.fullmatch, names) if m]
    return sorted(sizes, key=_pagesize_bytes)


# --- the cgroup types -------------------------------------------------------------------------


class Cgroup(abc.ABC):
    """A container's cgroup, as the shim uses it: statistics, and whether it still exists."""

    @property
    @abc.abstractmethod
    def type_url(self) -> str:
        """The type URL of the Metrics message that stats() returns (for the Stats Any)."""

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether the cgroup's directories are still there."""

    @abc.abstractmethod
    def _collect(self) -> Message: ...

    def stats(self) -> Message:
        """The cgroup's Metrics (v1 or v2); raises CgroupGone when the cgroup was removed."""
        if not self.exists():
            raise CgroupGone(f"cgroup deleted: {self}")
        metrics = self._collect()
        # Files that vanished half-way read as "not there": find out whether they all did.
        if not self.exists():
            raise CgroupGone(f"cgroup deleted: {self}")
        return metrics


_V1_MEMORY_KEYS = (
    ("cache", "cache"),
    ("rss", "rss"),
    ("rss_huge", "rss_huge"),
    ("mapped_file", "mapped_file"),
    ("dirty", "dirty"),
    ("writeback", "writeback"),
    ("pg_pg_in", "pgpgin"),
    ("pg_pg_out", "pgpgout"),
    ("pg_fault", "pgfault"),
    ("pg_maj_fault", "pgmajfault"),
    ("inactive_anon", "inactive_anon"),
    ("active_anon", "active_anon"),
    ("inactive_file", "inactive_file"),
    ("active_file", "active_file"),
    ("unevictable", "unevictable"),
)
# MemoryStat field → memory.stat key.
_V1_MEMORY_STAT = (
    *_V1_MEMORY_KEYS,
    ("hierarchical_memory_limit", "hierarchical_memory_limit"),
    ("hierarchical_swap_limit", "hierarchical_memsw_limit"),
    *((f"total_{field}", f"total_{key}") for field, key in _V1_MEMORY_KEYS),
)
# MemoryStat entry → the module in memory.<module>.usage_in_bytes etc.
_V1_MEMORY_ENTRIES = (
    ("usage", ""),
    ("swap", "memsw."),
    ("kernel", "kmem."),
    ("kernel_tcp", "kmem.tcp."),
)
# When these CFQ files exist they are read; if they are all empty (no device uses CFQ, or the
# kernel has none since 5.0) containerd falls back to the two throttle files.
_V1_BLKIO_CFQ = (
    ("sectors_recursive", "sectors_recursive"),
    ("io_service_bytes_recursive", "io_service_bytes_recursive"),
    ("io_serviced_recursive", "io_serviced_recursive"),
    ("io_queued_recursive", "io_queued_recursive"),
    ("io_service_time_recursive", "io_service_time_recursive"),
    ("io_wait_time_recursive", "io_wait_time_recursive"),
    ("io_merged_recursive", "io_merged_recursive"),
    ("io_time_recursive", "time_recursive"),
)
_V1_BLKIO_THROTTLE = (
    ("io_serviced_recursive", "throttle.io_serviced"),
    ("io_service_bytes_recursive", "throttle.io_service_bytes"),
)


class CgroupV1(Cgroup):
    """A cgroup on a v1 (or hybrid) host: one directory per controller.

    `paths` maps a controller name (V1_CONTROLLERS) to its directory; a controller that is not
    mounted is simply absent. `proc` is where /proc/partitions names the block devices.
    """

    def __init__(self, paths: Mapping[str, str], *, proc: str = DEFAULT_PROC) -> None:
        self.paths = dict(paths)
        self.proc = proc

    def __repr__(self) -> str:
        return f"CgroupV1({self.paths!r})"

    def __str__(self) -> str:
        """For messages: the memory controller's directory (every controller has the same
        cgroup path below its own hierarchy), else the first one's."""
        return self.paths.get("memory") or next(iter(self.paths.values()), "(no controllers)")

    @property
    def type_url(self) -> str:
        return V1_TYPE_URL

    @property
    def memory_path(self) -> str | None:
        return self.paths.get("memory")

    def exists(self) -> bool:
        # As containerd's checkExists: the cgroup is deleted once any of its directories is.
        return bool(self.paths) and all(os.path.isdir(p) for p in self.paths.values())

    def _collect(self) -> Message:
        metrics = metrics_v1_pb2.Metrics()
        if "pids" in self.paths:
            self._pids(self.paths["pids"], metrics)
        if "cpuacct" in self.paths:
            self._cpuacct(self.paths["cpuacct"], metrics)
        if "cpu" in self.paths:
            self._cpu(self.paths["cpu"], metrics)
        if "memory" in self.paths:
            self._memory(self.paths["memory"], metrics)
        if "blkio" in self.paths:
            self._blkio(self.paths["blkio"], metrics)
        if "hugetlb" in self.paths:
            self._hugetlb(self.paths["hugetlb"], metrics)
        if "rdma" in self.paths:
            _read_rdma(self.paths["rdma"], metrics.rdma)
        return metrics

    @staticmethod
    def _pids(directory: str, metrics: Message) -> None:
        current = _read_uint(os.path.join(directory, "pids.current"))
        if current is None:
            return
        # v1 keeps "no limit" as 0 ("for backward compatibility", containerd says).
        limit = _read_uint(os.path.join(directory, "pids.max"), max_value=0)
        metrics.pids.current = current
        metrics.pids.limit = limit or 0
        metrics.pids.SetInParent()

    @staticmethod
    def _cpuacct(directory: str, metrics: Message) -> None:
        total = _read_uint(os.path.join(directory, "cpuacct.usage"))
        if total is None:
            return
        usage = metrics.cpu.usage
        usage.SetInParent()
        usage.total = total
        percpu = _read(os.path.join(directory, "cpuacct.usage_percpu"))
        if percpu is not None:
            usage.per_cpu.extend(_parse_uint(v) for v in percpu.split())
        ticks = _read_kv(os.path.join(directory, "cpuacct.stat"))
        if ticks is not None:
            usage.user = ticks.get("user", 0) * NANOSECONDS_PER_SECOND // CLOCK_TICKS
            usage.kernel = ticks.get("system", 0) * NANOSECONDS_PER_SECOND // CLOCK_TICKS

    @staticmethod
    def _cpu(directory: str, metrics: Message) -> None:
        stat = _read_kv(os.path.join(directory, "cpu.stat"))
        if stat is None:
            return
        throttling = metrics.cpu.throttling
        throttling.SetInParent()
        throttling.periods = stat.get("nr_periods", 0)
        throttling.throttled_periods = stat.get("nr_throttled", 0)
        throttling.throttled_time = stat.get("throttled_time", 0)

    @staticmethod
    def _memory(directory: str, metrics: Message) -> None:
        stat = _read_kv(os.path.join(directory, "memory.stat"))
        if stat is not None:
            memory = metrics.memory
            memory.SetInParent()
            for field, key in _V1_MEMORY_STAT:
                setattr(memory, field, stat.get(key, 0))
            for field, module in _V1_MEMORY_ENTRIES:
                values = {
                    name: _read_uint(os.path.join(directory, f"memory.{module}{name}"))
                    for name in (
                        "usage_in_bytes",
                        "max_usage_in_bytes",
                        "failcnt",
                        "limit_in_bytes",
                    )
                }
                if all(v is None for v in values.values()):
                    continue  # memsw without swap accounting, kmem on kernels without it
                entry = getattr(memory, field)
                entry.SetInParent()
                entry.usage = values["usage_in_bytes"] or 0
                entry.max = values["max_usage_in_bytes"] or 0
                entry.failcnt = values["failcnt"] or 0
                entry.limit = values["limit_in_bytes"] or 0
        oom = _read_kv(os.path.join(directory, "memory.oom_control"))
        if oom is not None:
            control = metrics.memory_oom_control
            control.SetInParent()
            control.oom_kill_disable = oom.get("oom_kill_disable", 0)
            control.under_oom = oom.get("under_oom", 0)
            control.oom_kill = oom.get("oom_kill", 0)

    def _blkio(self, directory: str, metrics: Message) -> None:
        devices = _block_devices(self.proc)
        blkio = metrics.blkio
        if os.path.lexists(os.path.join(directory, "blkio.io_serviced_recursive")):
            for field, name in _V1_BLKIO_CFQ:
                _read_blkio(
                    os.path.join(directory, "blkio." + name), devices, getattr(blkio, field)
                )
            if any(len(getattr(blkio, field)) for field, _ in _V1_BLKIO_CFQ):
                blkio.SetInParent()
                return
        found = False
        for field, name in _V1_BLKIO_THROTTLE:
            found |= _read_blkio(
                os.path.join(directory, "blkio." + name), devices, getattr(blkio, field)
            )
        if found:
            blkio.SetInParent()

    @staticmethod
    def _hugetlb(directory: str, metrics: Message) -> None:
        for pagesize in _hugetlb_pagesizes(directory, "usage_in_bytes"):
            prefix = os.path.join(directory, f"hugetlb.{pagesize}.")
            metrics.hugetlb.add(
                pagesize=pagesize,
                usage=_read_uint(prefix + "usage_in_bytes") or 0,
                max=_read_uint(prefix + "max_usage_in_bytes") or 0,
                failcnt=_read_uint(prefix + "failcnt") or 0,
            )


def _block_devices(proc: str) -> dict[tuple[int, int], str]:
    """(major, minor) → /dev/<name> from /proc/partitions; the first name of a device wins."""
    text = _read(os.path.join(proc, "partitions")) or ""
    devices: dict[tuple[int, int], str] = {}
    for line in text.splitlines()[2:]:
        fields = line.split()
        if len(fields) == 4 and fields[0].isdigit() and fields[1].isdigit():
            devices.setdefault((int(fields[0]), int(fields[1])), "/dev/" + fields[3])
    return devices


def _read_blkio(path: str, devices: Mapping[tuple[int, int], str], entries: Message) -> bool:
    """`8:0 Read 4096` lines (or `8:0 4096`); the closing `Total n` line is skipped.

    Returns whether the file exists.
    """
    text = _read(path)
    if text is None:
        return False
    for line in text.splitlines():
        fields = line.replace(":", " ").split()
        if len(fields) not in (3, 4) or not (fields[0].isdigit() and fields[1].isdigit()):
            continue
        major, minor = int(fields[0]), int(fields[1])
        entries.add(
            device=devices.get((major, minor), ""),
            major=major,
            minor=minor,
            op=fields[2] if len(fields) == 4 else "",
            value=_parse_uint(fields[-1]),
        )
    return True


# memory.stat keys, named as the v2 MemoryStat fields.
_V2_MEMORY_STAT = (
    "anon",
    "file",
    "kernel_stack",
    "slab",
    "sock",
    "shmem",
    "file_mapped",
    "file_dirty",
    "file_writeback",
    "anon_thp",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "slab_reclaimable",
    "slab_unreclaimable",
    "pgfault",
    "pgmajfault",
    "workingset_refault",
    "workingset_activate",
    "workingset_nodereclaim",
    "pgrefill",
    "pgscan",
    "pgsteal",
    "pgactivate",
    "pgdeactivate",
    "pglazyfree",
    "pglazyfreed",
    "thp_fault_alloc",
    "thp_collapse_alloc",
)
# MemoryStat field → the single-value file it comes from ("max" reads as the uint64 maximum).
_V2_MEMORY_FILES = (
    ("usage", "memory.current"),
    ("usage_limit", "memory.max"),
    ("max_usage", "memory.peak"),
    ("swap_usage", "memory.swap.current"),
    ("swap_limit", "memory.swap.max"),
    ("swap_max_usage", "memory.swap.peak"),
)
_V2_CPU_STAT = (
    "usage_usec",
    "user_usec",
    "system_usec",
    "nr_periods",
    "nr_throttled",
    "throttled_usec",
    "nr_bursts",
    "burst_usec",
)


class CgroupV2(Cgroup):
    """A cgroup on the unified hierarchy: one directory, with the files of its enabled
    controllers (cpu.stat is always there)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"CgroupV2({self.path!r})"

    def __str__(self) -> str:
        return self.path

    @property
    def type_url(self) -> str:
        return V2_TYPE_URL

    @property
    def memory_path(self) -> str:
        return self.path

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _collect(self) -> Message:
        metrics = metrics_v2_pb2.Metrics()
        self._pids(metrics)
        self._cpu(metrics)
        self._memory(metrics)
        self._io(metrics)
        _read_rdma(self.path, metrics.rdma)
        for pagesize in _hugetlb_pagesizes(self.path, "current"):
            metrics.hugetlb.add(
                pagesize=pagesize,
                current=_read_uint(self._file(f"hugetlb.{pagesize}.current")) or 0,
                max=_read_uint(self._file(f"hugetlb.{pagesize}.max"), UINT64_MAX) or 0,
            )
        return metrics

    def _pids(self, metrics: Message) -> None:
        current = _read_uint(self._file("pids.current"))
        if current is None:
            return
        metrics.pids.SetInParent()
        metrics.pids.current = current
        metrics.pids.limit = _read_uint(self._file("pids.max"), UINT64_MAX) or 0

    def _cpu(self, metrics: Message) -> None:
        stat = _read_kv(self._file("cpu.stat"))
        if stat is None:
            return
        cpu = metrics.cpu
        cpu.SetInParent()
        for field in _V2_CPU_STAT:
            setattr(cpu, field, stat.get(field, 0))
        _read_psi(self._file("cpu.pressure"), cpu.psi)

    def _memory(self, metrics: Message) -> None:
        stat = _read_kv(self._file("memory.stat"))
        files = {
            field: _read_uint(self._file(name), UINT64_MAX) for field, name in _V2_MEMORY_FILES
        }
        if stat is not None or files["usage"] is not None:
            memory = metrics.memory
            memory.SetInParent()
            for field in _V2_MEMORY_STAT:
                setattr(memory, field, (stat or {}).get(field, 0))
            for field, value in files.items():
                setattr(memory, field, value or 0)
            _read_psi(self._file("memory.pressure"), memory.psi)
        events = _read_kv(self._file("memory.events"))
        if events:
            memory_events = metrics.memory_events
            memory_events.SetInParent()
            for field in ("low", "high", "max", "oom", "oom_kill"):
                setattr(memory_events, field, events.get(field, 0))

    def _io(self, metrics: Message) -> None:
        text = _read(self._file("io.stat"))
        if text is None:
            return
        io = metrics.io
        io.SetInParent()
        for line in text.splitlines():
            device, *pairs = line.split()
            major, _, minor = device.partition(":")
            if not (major.isdigit() and minor.isdigit()):
                continue
            entry = io.usage.add(major=int(major), minor=int(minor))
            for pair in pairs:
                key, _, value = pair.partition("=")
                if key in ("rbytes", "wbytes", "rios", "wios") and value.isdigit():
                    setattr(entry, key, int(value))
        _read_psi(self._file("io.pressure"), io.psi)


# --- finding a process's cgroup ---------------------------------------------------------------


class ProcCgroup(FrozenRecord):
    """/proc/<pid>/cgroup: each v1 hierarchy's controllers and path, and the unified path."""

    _fields = ("v1", "unified")
    __slots__ = _fields
    v1: Mapping[str, str]  # controller (or "name=…") → path inside its hierarchy
    unified: str | None  # the `0::` path, if any

    def __hash__(self) -> int:  # (v1 is a dict)
        return hash(self.unified)


def parse_proc_cgroup(text: str) -> ProcCgroup:
    """Parse `id:controller[,controller]:/path` lines; `0::/path` is the unified hierarchy."""
    v1: dict[str, str] = {}
    unified: str | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            unified = path
            continue
        for controller in controllers.split(","):
            if controller:
                v1[controller] = path
    return ProcCgroup(v1=v1, unified=unified)


def is_unified(root: str = DEFAULT_ROOT) -> bool:
    """Whether the host is pure cgroup v2 (the unified hierarchy is mounted at the root)."""
    return os.path.exists(os.path.join(root, "cgroup.controllers"))


def _v1_mounts(root: str) -> dict[str, str]:
    """Controller → its hierarchy's directory under root.

    Co-mounted controllers live in one directory (`cpu,cpuacct`), usually with a symlink per
    controller; a directory named after the controller is preferred, the combined one is the
    fallback.
    """
    try:
        entries = sorted(os.listdir(root))
    except FileNotFoundError:
        return {}
    mounts: dict[str, str] = {}
    for entry in entries:
        if entry in V1_CONTROLLERS and os.path.isdir(os.path.join(root, entry)):
            mounts[entry] = os.path.join(root, entry)
    for entry in entries:
        if "," in entry and os.path.isdir(os.path.join(root, entry)):
            for controller in entry.split(","):
                if controller in V1_CONTROLLERS:
                    mounts.setdefault(controller, os.path.join(root, entry))
    return mounts


def _join(directory: str, cgroup_path: str) -> str:
    return os.path.normpath(os.path.join(directory, cgroup_path.lstrip("/")))


def cgroup_for_pid(pid: int, *, proc: str = DEFAULT_PROC, root: str = DEFAULT_ROOT) -> Cgroup:
    """The cgroup of a running process (a container's init), from /proc/<pid>/cgroup.

    On a v1 or hybrid host the v1 controllers are used (runc puts containers there); the
    unified line only counts on a pure v2 host. Raises ProcessLookupError when the process is
    gone and CgroupError when none of its controllers is mounted under root.
    """
    path = os.path.join(proc, str(pid), "cgroup")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError as e:
        raise ProcessLookupError(f"process {pid} does not exist") from e
    parsed = parse_proc_cgroup(text)
    if is_unified(root):
        if parsed.unified is None:
            raise CgroupError(f"{path} has no unified (0::) entry on a cgroup v2 host")
        return CgroupV2(_join(root, parsed.unified))
    mounts = _v1_mounts(root)
    paths = {c: _join(mounts[c], p) for c, p in parsed.v1.items() if c in mounts}
    if not paths:
        raise CgroupError(f"none of the controllers in {path} is mounted under {root}")
    return CgroupV1(paths, proc=proc)


def cgroup_for_path(
    cgroup_path: str, *, root: str = DEFAULT_ROOT, proc: str = DEFAULT_PROC
) -> Cgroup:
    """The cgroup at `cgroup_path` (e.g. "/pyrunc-test/c1"), for tests and tools.

    On a v1 host it is made of the mounted controllers in which that directory exists (all of
    them when it exists in none, so that a cgroup not created yet, or removed, reads as gone).
    """
    if is_unified(root):
        return CgroupV2(_join(root, cgroup_path))
    mounts = _v1_mounts(root)
    if not mounts:
        raise CgroupError(f"no cgroup v1 controller is mounted under {root}")
    paths = {c: _join(d, cgroup_path) for c, d in mounts.items()}
    present = {c: p for c, p in paths.items() if os.path.isdir(p)}
    return CgroupV1(present or paths, proc=proc)


# --- OOM notifications ------------------------------------------------------------------------

OOMCallback = Callable[[str], None]

_IN_MODIFY = 0x00000002
_IN_DELETE_SELF = 0x00000400
_IN_IGNORED = 0x00008000  # the kernel dropped the watch: the file is gone
_INOTIFY_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_init1.restype = ctypes.c_int
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_add_watch.restype = ctypes.c_int
    return libc


def _inotify_watch(path: str, mask: int) -> int:
    """A non-blocking, close-on-exec inotify fd watching path."""
    libc = _libc()
    fd: int = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise MessageError(err, f"inotify_init1: {strerror(err)}")
    if libc.inotify_add_watch(fd, os.fsencode(path), mask) < 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise PathError("inotify_add_watch", path, err)
    return fd


class _Watch(abc.ABC):
    """One container's OOM notification fd. poll() reads what is pending and reports an OOM;
    `finished` is set once the cgroup is gone and the watch has nothing more to say.

    `lock` is held around poll() and close(), so the watcher thread and check_now never poll
    at once (a kill is reported once, and a check_now that races the thread returns only after
    the thread's on_oom), and the fd is never read once closed (its number may be reused). It
    is reentrant so that on_oom may remove or check its own container.
    """

    def __init__(self, container_id: str, fd: int, on_oom: OOMCallback) -> None:
        self.container_id = container_id
        self.fd = fd
        self.on_oom = on_oom
        self.finished = False
        self.lock = threading.RLock()

    @abc.abstractmethod
    def poll(self) -> bool:
        """Report a pending OOM (call on_oom); return whether one was reported."""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _EventfdWatch(_Watch):
    """cgroup v1: the kernel signals the eventfd on each OOM in the memory cgroup, and once
    more when the cgroup is removed."""

    def __init__(self, container_id: str, memory_path: str, on_oom: OOMCallback) -> None:
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            control = os.open(
                os.path.join(memory_path, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC
            )
            try:
                event_control = os.open(
                    os.path.join(memory_path, "cgroup.event_control"), os.O_WRONLY | os.O_CLOEXEC
                )
                try:
                    os.write(event_control, f"{efd} {control}".encode())
                finally:
                    os.close(event_control)
            finally:
                os.close(control)
        except BaseException:
            os.close(efd)
            raise
        super().__init__(container_id, efd, on_oom)
        self.memory_path = memory_path

    def poll(self) -> bool:
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            return False
        if not os.path.isdir(self.memory_path):
            self.finished = True
            return False
        self.on_oom(self.container_id)
        return True


class _MemoryEventsWatch(_Watch):
    """cgroup v2: inotify says memory.events changed; an OOM kill is oom_kill growing."""

    def __init__(self, container_id: str, path: str, on_oom: OOMCallback) -> None:
        self.events_path = os.path.join(path, "memory.events")
        super().__init__(
            container_id, _inotify_watch(self.events_path, _IN_MODIFY | _IN_DELETE_SELF), on_oom
        )
        # As containerd's pkg/oom/v2, start from 0: an OOM kill that happened before the watch
        # (an init killed right after start) is still reported, on the next event or check_now.
        self.last_oom_kill = 0

    def _drain(self) -> bool:
        """Read all pending inotify events; return whether the watch was dropped."""
        dropped = False
        while True:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                return dropped
            if not data:
                return dropped
            offset = 0
            while offset + _INOTIFY_EVENT.size <= len(data):
                _, mask, _, length = _INOTIFY_EVENT.unpack_from(data, offset)
                dropped |= bool(mask & (_IN_IGNORED | _IN_DELETE_SELF))
                offset += _INOTIFY_EVENT.size + length

    def poll(self) -> bool:
        dropped = self._drain()
        try:
            events = _read_kv(self.events_path)
        except CgroupGone:
            events = None
        if events is None:
            self.finished = True
            return False
        if dropped:
            self.finished = True
        oom_kill = events.get("oom_kill", 0)
        if oom_kill <= self.last_oom_kill:
            return False
        self.last_oom_kill = oom_kill
        self.on_oom(self.container_id)
        return True


class OOMWatcher:
    """Reports OOM kills in containers' cgroups to a callback, from a thread of its own.

    One per shim; its methods may be called from any thread. The watcher thread starts with the
    first watch and ends with the last one, or with close(). It waits in poll(2) on every watch's
    fd and calls on_oom as soon as the kernel reports an OOM, unless a check_now in another
    thread gets there first. A watch ends by itself when its cgroup is removed.
    """

    def __init__(self) -> None:
        # Guards the attributes below. A watch's lock may be held when taking it, never the
        # other way round.
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}
        # The polling thread's wakeup eventfd, or -1 when no thread polls. Written (under the
        # lock) to make the thread read the set of watches again; closed by that thread alone,
        # under the lock, when it ends.
        self._wake = -1
        # The last thread started, for close() to join (or add(), once it has ended by itself).
        self._thread: threading.Thread | None = None

    def __contains__(self, container_id: object) -> bool:
        with self._lock:
            return container_id in self._watches

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._watches))

    def add(self, container_id: str, cgroup: Cgroup, on_oom: OOMCallback) -> None:
        """Watch the cgroup, calling on_oom(container_id) for each OOM (replaces an older watch).

        Raises CgroupGone if the cgroup no longer exists, CgroupError if it has no memory
        controller, OSError if the kernel refuses the registration.
        """
        if not cgroup.exists():
            raise CgroupGone(f"cgroup deleted: {cgroup}")
        watch: _Watch
        if isinstance(cgroup, CgroupV1):
            if cgroup.memory_path is None:
                raise CgroupError(f"cgroup {cgroup} has no memory controller")
            watch = _EventfdWatch(container_id, cgroup.memory_path, on_oom)
        elif isinstance(cgroup, CgroupV2):
            if not os.path.exists(os.path.join(cgroup.path, "memory.events")):
                raise CgroupError(f"cgroup {cgroup} has no memory controller")
            watch = _MemoryEventsWatch(container_id, cgroup.path, on_oom)
        else:
            raise CgroupError(f"cannot watch cgroup {cgroup} for OOM")
        try:
            with self._lock:
                if self._wake < 0:
                    self._start()
                old = self._watches.get(container_id)
                self._watches[container_id] = watch
                self._wakeup()
        except BaseException:
            watch.close()
            raise
        if old is not None:
            with old.lock:
                old.close()

    def check_now(self, container_id: str) -> bool:
        """Report an OOM of the container that the kernel has signalled but the watcher thread
        has not handled yet; return whether on_oom was called here. For the shim to call right
        before it publishes a process's exit, so that TaskOOM comes first: when it returns, any
        OOM signalled before the call has been reported, here or by the watcher thread."""
        with self._lock:
            watch = self._watches.get(container_id)
        return False if watch is None else self._poll(watch)

    def remove(self, container_id: str) -> None:
        """Stop watching the container (nothing happens if it is not watched). Waits for an
        on_oom of the container running in the watcher thread."""
        with self._lock:
            watch = self._watches.pop(container_id, None)
            if watch is None:
                return
            self._wakeup()
        with watch.lock:
            watch.close()

    def close(self) -> None:
        """Stop all watches and the watcher thread; leaves no fd and no thread behind."""
        with self._lock:
            watches = list(self._watches.values())
            self._watches.clear()
            thread, self._thread = self._thread, None
            # Let the thread go even if an add() comes before it wakes: it ends once it sees
            # that its wakeup fd is no longer self._wake.
            self._wakeup()
            self._wake = -1
        for watch in watches:
            with watch.lock:
                watch.close()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _start(self) -> None:
        """Start the watcher thread (self._lock held, no thread polling)."""
        if self._thread is not None:
            # The previous thread ended by itself: it has let go of the lock for the last time
            # and is only returning, so this is quick, and close() has one thread to join.
            self._thread.join()
            self._thread = None
        wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        thread = threading.Thread(target=self._run, args=(wake,), name="oom-watcher", daemon=True)
        try:
            thread.start()
        except BaseException:
            os.close(wake)
            raise
        # The thread waits for the lock before it reads these.
        self._wake, self._thread = wake, thread

    def _wakeup(self) -> None:
        """Make the thread read the set of watches again (self._lock held)."""
        if self._wake >= 0:
            os.eventfd_write(self._wake, 1)

    def _end(self, wake: int) -> None:
        """The thread's last step (self._lock held)."""
        if self._wake == wake:
            self._wake = -1
        os.close(wake)

    def _run(self, wake: int) -> None:
        try:
            while True:
                with self._lock:
                    if self._wake != wake or not self._watches:
                        # Let go by close(), or nothing left to watch. Decided and done under
                        # one hold of the lock, so an add() either comes first (and is watched)
                        # or finds no thread and starts one.
                        self._end(wake)
                        return
                    # Fresh every time, so it never holds a closed watch's fd. A watch in the
                    # dict is open: it is taken out (under the lock) before it is closed.
                    watches = {watch.fd: watch for watch in self._watches.values()}
                poller = select.poll()
                poller.register(wake, select.POLLIN)
                for fd in watches:
                    poller.register(fd, select.POLLIN)
                for fd, _ in poller.poll():
                    if fd == wake:
                        os.eventfd_read(wake)  # readable, and only this thread reads it
                    else:
                        # A watch removed since the copy was made is skipped by _poll; its
                        # removal has woken the thread too.
                        self._serve(watches[fd])
        except BaseException:
            # Not expected (poll failing): end as cleanly, and let the next add() start anew.
            with self._lock:
                self._end(wake)
            raise

    def _serve(self, watch: _Watch) -> None:
        """Poll a watch whose fd is readable, in the watcher thread."""
        try:
            self._poll(watch)
        except Exception as e:
            # A watch that fails (or whose on_oom does) is ended, so that a lasting fault cannot
            # keep waking the thread; the error is reported as an uncaught one in a thread is.
            with watch.lock:
                self._drop(watch)
            thread = threading.current_thread()
            threading.excepthook(threading.ExceptHookArgs((type(e), e, e.__traceback__, thread)))

    def _poll(self, watch: _Watch) -> bool:
        with watch.lock:
            if watch.fd < 0:
                return False  # removed since it was looked up
            try:
                return watch.poll()
            finally:
                if watch.finished:
                    self._drop(watch)

    def _drop(self, watch: _Watch) -> None:
        """End a watch (its lock held)."""
        with self._lock:
            if self._watches.get(watch.container_id) is watch:
                del self._watches[watch.container_id]
                self._wakeup()
        watch.close()
