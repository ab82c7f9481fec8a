"""cgroup v2 and the systemd cgroup driver, end to end, against the cgroup's own files.

Every test here is marked `cgroup2`: it needs the unified hierarchy at /sys/fs/cgroup and systemd
as PID 1, which this project's machines do not have (cgroup v1 hybrid, no systemd). They run in
the guest lane (`make test-cgroup2`: a Debian 12 virtual machine, tests/guest/) and are
deselected elsewhere by tests/integration/cgroup2_lane.py, which says so in the run's summary.

The guest lane runs this file twice: once with pyrunc and the Go shim side by side, where
`both_runtimes` compares them, and once with pyrunc installed as containerd-shim-runc-v2
(PYRUNC_TEST_DROP_IN=1), which is how pyrunc receives runc.v1 Options from `ctr
--runc-systemd-cgroup` (ctr sends them to io.containerd.runc.v2 only).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from pyrunc.protos import metrics_v2_pb2, shim_pb2
from tests.integration.conftest import IMAGE, both_runtimes, unique_id
from tests.support import Containerd
from tests.support.events import EventLog, event_log
from tests.support.names import PYRUNC_OWN_RUNTIME, PYRUNC_RUNTIME, RUNC_RUNTIME
from tests.support.shim_client import call

pytest_plugins = ["tests.integration.cgroup2_lane"]
pytestmark = pytest.mark.cgroup2

CGROUP_ROOT = Path("/sys/fs/cgroup")
V2_TYPE_URL = "io.containerd.cgroups.v2.Metrics"
RESOURCES_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
UINT64_MAX = (1 << 64) - 1
MiB = 1 << 20
# a shell that keeps 64 MiB in a variable: more than any container here is allowed
HOG = ["sh", "-c", "x=$(head -c 67108864 /dev/zero | tr '\\0' x); echo survived"]
# How far memory figures may move between reading the file and the shim reading it (the kernel
# charges and frees in per-cpu batches even in a container that only sleeps).
MEMORY_SLACK = 2 * MiB


# --- reading a container's cgroup -----------------------------------------------------------


def init_pid(ctd: Containerd, id: str) -> int:
    return next(t.pid for t in ctd.tasks() if t.id == id)


def cgroup_of(pid: int) -> Path:
    """The directory of the process's cgroup on the unified hierarchy (its `0::` line)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return CGROUP_ROOT / line[3:].lstrip("/")
    raise AssertionError(f"process {pid} has no cgroup v2 entry")


def read_uint(path: Path) -> int:
    """A cgroup value as containerd reads it: "max" is the uint64 maximum."""
    text = path.read_text().strip()
    return UINT64_MAX if text == "max" else int(text)


def read_kv(path: Path) -> dict[str, int]:
    return {key: int(value) for key, value in
            (line.split() for line in path.read_text().splitlines())}


def read_io_stat(path: Path) -> dict[tuple[int, int], dict[str, int]]:
    """io.stat: `MAJ:MIN rbytes=… wbytes=… rios=… wios=… …` → (major, minor) → counters."""
    found = {}
    for line in path.read_text().splitlines():
        device, *pairs = line.split()
        major, minor = device.split(":")
        found[int(major), int(minor)] = {k: int(v) for k, v in (p.split("=") for p in pairs)}
    return found


def stats(ctd: Containerd, id: str) -> metrics_v2_pb2.Metrics:
    """The shim's answer to Stats (asked directly, as containerd asks it), decoded."""
    response = call(ctd, id, "Stats", shim_pb2.StatsRequest(id=id))
    assert response.stats.type_url == V2_TYPE_URL
    return metrics_v2_pb2.Metrics.FromString(response.stats.value)


def assert_between(what: str, value: int, before: int, after: int, slack: int = 0) -> None:
    low, high = min(before, after) - slack, max(before, after) + slack
    assert low <= value <= high, f"{what}: the shim says {value}, the file {before} then {after}"


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


def systemctl_show(unit: str, prop: str) -> str:
    return subprocess.run(["systemctl", "show", "--value", "-p", prop, unit], check=True,
                          capture_output=True, text=True).stdout.strip()


def run_detached(ctd: Containerd, runtime: str, *extra: str, args: tuple[str, ...] = (),
                 prefix: str = "cg2") -> str:
    id = unique_id(prefix)
    ctd.ctr("run", "-d", "--runtime", runtime, *extra, IMAGE, id, *(args or ("sleep", "600")))
    return id


@pytest.fixture
def container(containerd: Containerd) -> Iterator[list[str]]:
    """Ids of the containers a test started; removed after it, whatever happened."""
    ids: list[str] = []
    yield ids
    for id in ids:
        containerd.remove(id)


# --- OOM through memory.events ----------------------------------------------------------------


def assert_oom_reported(events: EventLog, id: str, runtime: str) -> None:
    events.wait_for(id, "/tasks/oom", timeout=30)
    topics = events.topics_for(id)
    # The Go shim may report it after the exit (containerd#12260); pyrunc looks at memory.events
    # once more before it publishes an exit.
    if runtime == PYRUNC_RUNTIME and "/tasks/exit" in topics:
        assert topics.index("/tasks/oom") < topics.index("/tasks/exit"), topics


@both_runtimes
def test_oom_kill_of_the_init_is_read_from_memory_events(
        containerd: Containerd, runtime: str, container: list[str]) -> None:
    with event_log(containerd) as events:
        # Detached, so that the stopped task (and its cgroup, until Delete) stays to be looked at.
        id = run_detached(containerd, runtime, "--memory-limit", str(16 * MiB), args=tuple(HOG))
        container.append(id)
        events.wait_for(id, "/tasks/exit", timeout=60)
        assert_oom_reported(events, id, runtime)
        exit = next(e for t, e in events.events
                    if t == "/tasks/exit" and e.get("container_id") == id)
    assert exit["exit_status"] == 137
    cgroup = CGROUP_ROOT / containerd.namespace / id
    assert read_uint(cgroup / "memory.max") == 16 * MiB
    # At least one kill: the hog's shell and its pipeline both grow, and the kernel may kill
    # twice before the cgroup fits its limit (seen in the guest).
    assert read_kv(cgroup / "memory.events")["oom_kill"] >= 1


@both_runtimes
def test_oom_kill_of_an_exec_is_reported_and_the_init_lives_on(
        containerd: Containerd, runtime: str, container: list[str]) -> None:
    id = run_detached(containerd, runtime, "--memory-limit", str(32 * MiB))
    container.append(id)
    cgroup = cgroup_of(init_pid(containerd, id))
    with event_log(containerd) as events:
        result = containerd.ctr("task", "exec", "--exec-id", "hog", id, *HOG, check=False,
                                timeout=120)
        assert result.returncode == 137, result
        assert_oom_reported(events, id, runtime)
    kills = read_kv(cgroup / "memory.events")["oom_kill"]
    assert kills >= 1  # (the kernel may kill twice for one hog, as above)
    assert containerd.status(id) == "RUNNING"
    assert stats(containerd, id).memory_events.oom_kill == kills  # the cgroup's own count


# --- Stats against the cgroup's files ---------------------------------------------------------


@pytest.fixture
def block_dir() -> Iterator[Path]:
    """A directory on a block device (not /tmp, a tmpfs in the guest), for io.stat to count."""
    path = Path("/var/tmp") / unique_id("io")
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@both_runtimes
def test_stats_are_the_cgroups_own_files(
        containerd: Containerd, runtime: str, container: list[str], block_dir: Path) -> None:
    write = ("dd if=/dev/zero of=/data/f bs=65536 count=64 conv=fsync 2>/dev/null"
             " && touch /data/written; exec sleep 600")
    id = run_detached(containerd, runtime, "--memory-limit", str(64 * MiB),
                      "--mount", f"type=bind,src={block_dir},dst=/data,options=rbind:rw",
                      args=("sh", "-c", write))
    container.append(id)
    wait_until((block_dir / "written").exists, "the container has written 4 MiB", 60)
    cgroup = cgroup_of(init_pid(containerd, id))
    assert cgroup.parent.name == containerd.namespace  # /<namespace>/<id>: the cgroupfs driver

    def files() -> dict[str, object]:
        return {
            "memory.current": read_uint(cgroup / "memory.current"),
            "memory.max": read_uint(cgroup / "memory.max"),
            "memory.stat": read_kv(cgroup / "memory.stat"),
            "memory.swap.current": read_uint(cgroup / "memory.swap.current"),
            "memory.swap.max": read_uint(cgroup / "memory.swap.max"),
            "memory.events": read_kv(cgroup / "memory.events"),
            "cpu.stat": read_kv(cgroup / "cpu.stat"),
            "pids.current": read_uint(cgroup / "pids.current"),
            "pids.max": read_uint(cgroup / "pids.max"),
            "io.stat": read_io_stat(cgroup / "io.stat"),
        }

    before = files()
    metrics = stats(containerd, id)
    after = files()

    assert_between("pids current", metrics.pids.current, before["pids.current"],
                   after["pids.current"])
    assert metrics.pids.limit == before["pids.max"]
    for field in ("usage_usec", "user_usec", "system_usec", "nr_periods", "nr_throttled",
                  "throttled_usec"):
        assert_between(f"cpu {field}", getattr(metrics.cpu, field),
                       before["cpu.stat"][field], after["cpu.stat"][field])
    assert metrics.cpu.usage_usec > 0
    memory = metrics.memory
    assert_between("memory usage", memory.usage, before["memory.current"],
                   after["memory.current"], MEMORY_SLACK)
    assert memory.usage_limit == before["memory.max"] == 64 * MiB
    assert memory.swap_usage == before["memory.swap.current"]
    assert memory.swap_limit == before["memory.swap.max"]
    for field in ("anon", "file", "kernel_stack", "slab", "shmem", "file_mapped"):
        assert_between(f"memory {field}", getattr(memory, field), before["memory.stat"][field],
                       after["memory.stat"][field], MEMORY_SLACK)
    for field in ("pgfault", "pgmajfault"):
        assert_between(f"memory {field}", getattr(memory, field), before["memory.stat"][field],
                       after["memory.stat"][field], 1000)
    for field in ("low", "high", "max", "oom", "oom_kill"):
        assert getattr(metrics.memory_events, field) == before["memory.events"][field] == 0
    device = block_dir.stat().st_dev
    written = before["io.stat"][os.major(device), os.minor(device)]
    assert written["wbytes"] >= 4 * MiB
    usage = {(e.major, e.minor): e for e in metrics.io.usage}
    assert set(usage) == set(before["io.stat"])
    for key, counters in before["io.stat"].items():
        for field in ("rbytes", "wbytes", "rios", "wios"):
            assert_between(f"io {key} {field}", getattr(usage[key], field), counters[field],
                           after["io.stat"][key][field])
    # ctr reads the same message by its type URL, and prints v2's fields.
    data = json.loads(containerd.ctr("task", "metrics", "--format", "json", id).stdout)
    assert data["memory"]["usage_limit"] == 64 * MiB
    assert data["pids"]["current"] >= 1


# --- Update, Pause/Resume, ShimCgroup ---------------------------------------------------------


@both_runtimes
def test_update_writes_memory_cpu_and_pids_limits_into_the_cgroup(
        containerd: Containerd, runtime: str, container: list[str]) -> None:
    id = run_detached(containerd, runtime)
    container.append(id)
    cgroup = cgroup_of(init_pid(containerd, id))
    resources = {"memory": {"limit": 48 * MiB},
                 "cpu": {"shares": 512, "quota": 50000, "period": 100000},
                 "pids": {"limit": 42}}
    call(containerd, id, "Update", shim_pb2.UpdateTaskRequest(
        id=id, resources=any_pb2.Any(type_url=RESOURCES_URL,
                                     value=json.dumps(resources).encode())))
    assert read_uint(cgroup / "memory.max") == 48 * MiB
    assert (cgroup / "cpu.max").read_text().split() == ["50000", "100000"]
    # runc maps v1 shares (2..262144) onto v2 weights (1..10000): 1 + (512 - 2) * 9999 // 262142
    assert read_uint(cgroup / "cpu.weight") == 20
    assert read_uint(cgroup / "pids.max") == 42
    metrics = stats(containerd, id)
    assert (metrics.memory.usage_limit, metrics.pids.limit) == (48 * MiB, 42)


@both_runtimes
def test_pause_and_resume_go_through_the_v2_freezer(
        containerd: Containerd, runtime: str, container: list[str]) -> None:
    id = run_detached(containerd, runtime)
    container.append(id)
    cgroup = cgroup_of(init_pid(containerd, id))
    with event_log(containerd) as events:
        containerd.ctr("task", "pause", id)
        assert containerd.status(id) == "PAUSED"
        assert (cgroup / "cgroup.freeze").read_text().strip() == "1"
        assert read_kv(cgroup / "cgroup.events")["frozen"] == 1
        containerd.ctr("task", "resume", id)
        assert containerd.status(id) == "RUNNING"
        assert (cgroup / "cgroup.freeze").read_text().strip() == "0"
        assert read_kv(cgroup / "cgroup.events")["frozen"] == 0
        events.wait_for(id, "/tasks/resumed")
        assert events.topics_for(id) == ["/tasks/paused", "/tasks/resumed"]
    result = containerd.ctr("task", "exec", "--exec-id", "after", id, "echo", "thawed")
    assert result.stdout == b"thawed\n"


def config_file(directory: Path, **settings: object) -> Path:
    path = directory / f"runtime-{unique_id('cfg')}.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    return path


def remove_cgroup(path: Path, timeout: float = 10) -> None:
    """rmdir a cgroup once the processes in it are gone."""
    deadline = time.monotonic() + timeout
    while path.exists():
        try:
            path.rmdir()
        except OSError:
            assert time.monotonic() < deadline, f"{path} still busy"
            time.sleep(0.1)


def test_shim_cgroup_on_the_unified_hierarchy(
        containerd: Containerd, tmp_path: Path, container: list[str]) -> None:
    group = CGROUP_ROOT / unique_id("shims")
    group.mkdir()
    try:
        config = config_file(tmp_path, ShimCgroup=f"/{group.name}")
        id = run_detached(containerd, PYRUNC_OWN_RUNTIME, "--runtime-config-path", str(config))
        container.append(id)
        shim = call(containerd, id, "Connect", shim_pb2.ConnectRequest(id=id)).shim_pid
        assert Path(f"/proc/{shim}/cgroup").read_text() == f"0::/{group.name}\n"
        assert int((group / "cgroup.procs").read_text().split()[0]) == shim
        # The container is not where its shim is.
        assert cgroup_of(init_pid(containerd, id)) == CGROUP_ROOT / containerd.namespace / id
    finally:
        for id in container:
            containerd.remove(id)
        remove_cgroup(group)


# --- the systemd cgroup driver ----------------------------------------------------------------


def assert_runs_in_its_scope(ctd: Containerd, id: str, limit: int) -> str:
    """The container's init is in system.slice/pyrunc-<id>.scope, a unit systemd knows, with
    the memory limit set through systemd; returns the scope's name."""
    scope = f"pyrunc-{id}.scope"
    cgroup = cgroup_of(init_pid(ctd, id))
    assert cgroup == CGROUP_ROOT / "system.slice" / scope
    assert systemctl_show(scope, "ActiveState") == "active"
    assert systemctl_show(scope, "ControlGroup") == f"/system.slice/{scope}"
    assert systemctl_show(scope, "MemoryMax") == str(limit)
    assert read_uint(cgroup / "memory.max") == limit
    metrics = stats(ctd, id)
    assert metrics.memory.usage_limit == limit
    assert metrics.pids.current >= 1
    return scope


def assert_scope_gone(scope: str) -> None:
    wait_until(lambda: systemctl_show(scope, "LoadState") == "not-found",
               f"systemd forgot {scope}")
    assert not (CGROUP_ROOT / "system.slice" / scope).exists()


def systemd_driver_test(ctd: Containerd, runtime: str, *options: str) -> None:
    id = unique_id("sd")
    limit = 40 * MiB
    ctd.ctr("run", "-d", "--runtime", runtime, *options, "--cgroup", f"system.slice:pyrunc:{id}",
            "--memory-limit", str(limit), IMAGE, id, "sleep", "600")
    try:
        scope = assert_runs_in_its_scope(ctd, id, limit)
        with event_log(ctd) as events:  # an OOM kill in the scope is found there too
            result = ctd.ctr("task", "exec", "--exec-id", "hog", id, *HOG, check=False,
                             timeout=120)
            assert result.returncode == 137, result
            events.wait_for(id, "/tasks/oom", timeout=30)
        ctd.ctr("task", "kill", "-s", "SIGKILL", id)
        ctd.wait_for_status(id, "STOPPED")
        ctd.ctr("task", "delete", id)
        ctd.ctr("container", "rm", id)
        assert_scope_gone(scope)
    finally:
        ctd.remove(id)


def test_systemd_cgroup_through_runc_options(containerd: Containerd) -> None:
    # Under RUNC_RUNTIME: the Go shim in the side-by-side run, pyrunc in the drop-in run.
    systemd_driver_test(containerd, RUNC_RUNTIME, "--runc-systemd-cgroup")


def test_systemd_cgroup_through_a_runtime_config_file(
        containerd: Containerd, tmp_path: Path) -> None:
    config = config_file(tmp_path, SystemdCgroup=True)
    systemd_driver_test(containerd, PYRUNC_OWN_RUNTIME, "--runtime-config-path", str(config))


def test_systemd_cgroup_through_the_host_configuration_file(containerd: Containerd) -> None:
    # The [runc] table of /etc/pyrunc/config.toml, the default path (this runs in the guest
    # only, whose containerd names no other): a default when containerd sends no options.
    path = Path("/etc/pyrunc/config.toml")
    assert not path.exists(), f"{path} is there already: this test must not overwrite it"
    path.parent.mkdir(exist_ok=True)
    path.write_text("[runc]\nsystemd_cgroup = true\n")
    try:
        systemd_driver_test(containerd, PYRUNC_OWN_RUNTIME)
    finally:
        path.unlink()


# --- a containerd restart ---------------------------------------------------------------------


@both_runtimes
def test_the_v2_cgroup_is_still_watched_after_a_containerd_restart(
        containerd: Containerd, runtime: str, container: list[str]) -> None:
    id = run_detached(containerd, runtime, "--memory-limit", str(32 * MiB))
    container.append(id)
    containerd.restart()
    assert containerd.status(id) == "RUNNING"
    assert stats(containerd, id).memory.usage_limit == 32 * MiB
    with event_log(containerd) as events:  # subscribed to the new containerd
        result = containerd.ctr("task", "exec", "--exec-id", "hog", id, *HOG, check=False,
                                timeout=120)
        assert result.returncode == 137, result
        assert_oom_reported(events, id, runtime)
    data = json.loads(containerd.ctr("task", "metrics", "--format", "json", id).stdout)
    # At least the exec's kill: the shell and its pipeline both grow, and the kernel may have
    # to kill twice before the cgroup fits its limit again.
    assert data["memory_events"]["oom_kill"] >= 1
