"""The soak of issue 10: many containers through one containerd, and nothing accumulates.

First 1000 `ctr run --rm … true` cycles, one at a time; then 100 containers running at once. Along
the way the warm parent, the shims and containerd are sampled (fds in /proc/<pid>/fd, threads and
VmRSS in /proc/<pid>/status, zombie children), into `.cache/soak/report.json`.

What "flat" means here:
- the warm parent, idle between cycles, holds exactly the same fds and threads at every sample of
  the 1000 cycles (and again once the 100 containers are gone), it stays the same process, and its
  RSS grows by less than RSS_SLACK_KIB from cycle 100 (the first 100 cycles are its warm-up: the
  allocator's and protobuf's caches fill) to cycle 1000;
- a probe container's shim, forked at each sample, holds the same fds and threads each time (a
  warm parent leaking fds or threads would pass them on to every child), RSS growing as above;
- each of the 100 running shims holds the same fds and threads as the first one did when it
  started, at every sample, and its RSS grows by less than RSS_SLACK_KIB while the others start;
- no zombie children of the warm parent, a shim or containerd at any sample. A child that has
  just exited is a zombie until its parent's reaper gets to it, so a zombie only counts if it is
  still one after SETTLE_CENSUS seconds (those that were reaped in time are reported as transient);
- nothing left behind: no shim, mount, bundle, runc state, cgroup or socket after each cycle's
  sample (and the integration suite's autouse check after each test).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

from pyrunc.protos import shim_pb2
from pyrunc.shim import warm
from tests.integration.conftest import IMAGE, unique_id
from tests.integration.test_soak import census
from tests.integration.test_warm import parent_of
from tests.soak.report import Sample, SoakReport
from tests.support import ALL_SHIMS, Containerd
from tests.support.containerd import warm_parents
from tests.support.names import PYRUNC_RUNTIME
from tests.support.shim_client import call

CYCLES = 1000
SAMPLE_EVERY = 100
WARM_UP = 100  # cycles after which the warm parent's RSS must stay flat
RUNNING = 100
BATCH = 25  # containers started between two samples of the running phase
STARTERS = 5  # ctr processes at once: enough to keep 100 starts short, few enough for 2 CPUs
RSS_SLACK_KIB = 2 * 1024
CENSUS_PAUSE = 0.2  # seconds between two censuses of a process that must agree
SETTLE_CENSUS = 5.0  # seconds a process may take to agree with itself, and to reap its children
SETTLE = 15.0  # seconds a removed container's shim may take to be gone with all it made
CTR_TIMEOUT = 120  # a loaded machine (VMs) can slow a start down a lot


def shim_pid(ctd: Containerd, id: str) -> int:
    return int(call(ctd, id, "Connect", shim_pb2.ConnectRequest(id=id)).shim_pid)


Census = tuple[int, int, int, list[int]]


def settled_censuses(report: SoakReport, phase: str, at: int, pids: dict[int, str]
                     ) -> dict[int, Census]:
    """`census()` of each of `pids` (pid -> role) once it has settled: the same fds and threads
    twice in a row, CENSUS_PAUSE apart, and no zombie children. A shim still closing the
    connection our Connect made, or a parent about to reap a child that just exited, is not a leak;
    what has not settled after SETTLE_CENSUS seconds is taken as it is, its zombies being those it
    had throughout (transient ones go to the report)."""
    first = {pid: census(pid) for pid in pids}
    last = dict(first)
    pending = set(pids)
    deadline = time.monotonic() + SETTLE_CENSUS
    while pending and time.monotonic() < deadline:
        time.sleep(CENSUS_PAUSE)
        for pid in list(pending):
            now = census(pid)
            if now[:2] == last[pid][:2] and not now[3]:
                pending.discard(pid)
            last[pid] = now
    settled = {}
    for pid, (fds, threads, rss, zombies) in last.items():
        persistent = [z for z in zombies if z in first[pid][3]]
        if first[pid][3]:
            report.transient_zombies.append({"phase": phase, "at": at, "role": pids[pid],
                                             "parent": pid, "zombies": first[pid][3],
                                             "persisted": persistent})
        settled[pid] = (fds, threads, rss, persistent)
    return settled


def sample(report: SoakReport, phase: str, at: int, pids: dict[int, str]) -> list[Sample]:
    """Settled samples of `pids` (pid -> role), in their order."""
    censuses = settled_censuses(report, phase, at, pids)
    return [report.add(phase, at, role, pid, censuses[pid]) for pid, role in pids.items()]


def sample_quiet(ctd: Containerd, report: SoakReport, phase: str, at: int) -> int:
    """Sample with no container left of the cycles: a probe container's shim (which also names
    the warm parent: its parent), then, once the probe is gone with everything it made, the idle
    warm parent and containerd. Returns the warm parent's pid."""
    probe = unique_id("probe")
    ctd.ctr("run", "-d", "--runtime", PYRUNC_RUNTIME, IMAGE, probe, "sleep", "600",
            timeout=CTR_TIMEOUT)
    try:
        shim = shim_pid(ctd, probe)
        warm_pid = parent_of(shim)
        assert warm_pid in warm_parents(), f"probe shim {shim} not forked by a warm parent"
        sample(report, phase, at, {shim: "probe"})
    finally:
        ctd.remove(probe)
    left = ctd.wait_no_leftovers(ALL_SHIMS, timeout=SETTLE)
    assert not left, f"left behind at {phase} {at}:\n  " + "\n  ".join(left)
    assert ctd.pid is not None
    sample(report, phase, at, {warm_pid: "warm", ctd.pid: "containerd"})
    return warm_pid


def flat_failures(samples: list[Sample], what: str) -> list[str]:
    """How `samples` of one process (or of processes that should be alike) are not flat."""
    if not samples:
        return [f"{what}: no samples"]
    first = samples[0]
    return [f"{what}: {s.fds} fds, {s.threads} threads at {s.phase} {s.at} (pid {s.pid}), "
            f"against {first.fds} and {first.threads} at {first.phase} {first.at}"
            for s in samples if (s.fds, s.threads) != (first.fds, first.threads)]


def rss_failure(before: Sample, after: Sample, what: str) -> list[str]:
    grown = after.rss_kib - before.rss_kib
    if grown < RSS_SLACK_KIB:
        return []
    return [f"{what}: RSS grew by {grown} KiB from {before.phase} {before.at} to "
            f"{after.phase} {after.at} ({before.rss_kib} -> {after.rss_kib} KiB)"]


def zombie_failures(report: SoakReport, *phases: str) -> list[str]:
    return [f"zombie children {s.zombies} of {s.role} {s.pid} at {s.phase} {s.at}"
            for s in report.samples if s.zombies and s.phase in phases]


def start_warm_parent(ctd: Containerd) -> None:
    """A first container starts the warm parent (its own shim is started the slow way); wait
    until it listens, so that the probe after it is forked."""
    ctd.ctr("run", "--rm", "--runtime", PYRUNC_RUNTIME, IMAGE, unique_id("cyc"), "true",
            timeout=CTR_TIMEOUT)
    deadline = time.monotonic() + 10
    while not os.path.exists(warm.socket_path()):
        assert time.monotonic() < deadline, "no warm parent came up"
        time.sleep(0.05)


def test_a_thousand_run_rm_cycles_leave_the_warm_parent_and_its_shims_flat(
        containerd: Containerd, soak_report: SoakReport) -> None:
    def run_rm() -> None:
        containerd.ctr("run", "--rm", "--runtime", PYRUNC_RUNTIME, IMAGE, unique_id("cyc"),
                       "true", timeout=CTR_TIMEOUT)

    start_warm_parent(containerd)
    began = time.monotonic()
    sample_quiet(containerd, soak_report, "cycles", 0)
    for done in range(1, CYCLES + 1):
        run_rm()
        if done % SAMPLE_EVERY == 0:
            sample_quiet(containerd, soak_report, "cycles", done)
    soak_report.durations[f"{CYCLES} cycles"] = time.monotonic() - began

    idle = soak_report.of("cycles", "warm")
    probes = soak_report.of("cycles", "probe")
    by_cycle = {s.at: s for s in idle}
    probe_by_cycle = {s.at: s for s in probes}
    failures = []
    if len({s.pid for s in idle}) != 1:
        failures.append(f"the warm parent changed: {[(s.at, s.pid) for s in idle]} (pyrunc "
                        "reinstalled during the soak, or the warm parent exited)")
    failures += flat_failures(idle, "warm parent")
    failures += rss_failure(by_cycle[WARM_UP], by_cycle[CYCLES], "warm parent")
    failures += flat_failures(probes, "probe shim")
    failures += rss_failure(probe_by_cycle[WARM_UP], probe_by_cycle[CYCLES], "probe shim")
    failures += zombie_failures(soak_report, "cycles")
    assert not failures, "\n".join([*failures, *soak_report.table()])


def test_a_hundred_running_containers_have_shims_alike_and_leave_the_warm_parent_as_it_was(
        containerd: Containerd, soak_report: SoakReport) -> None:
    start_warm_parent(containerd)  # already there after the cycles, unless run alone (`-k`)
    warm_pid = sample_quiet(containerd, soak_report, "running", 0)
    began = time.monotonic()
    shims: dict[str, int] = {}
    first_seen: dict[str, Sample] = {}
    last_seen: dict[str, Sample] = {}

    def start(id: str) -> None:
        containerd.ctr("run", "-d", "--runtime", PYRUNC_RUNTIME, IMAGE, id, "sleep", "600",
                       timeout=CTR_TIMEOUT)

    with ThreadPoolExecutor(STARTERS) as pool:
        try:
            while len(shims) < RUNNING:
                batch = [unique_id("run") for _ in range(BATCH)]
                try:
                    list(pool.map(start, batch))
                finally:  # those that did start are removed below, whatever happened
                    shims.update(zip(batch, [-1] * len(batch), strict=True))
                for id in batch:
                    shims[id] = shim_pid(containerd, id)
                parents = {parent_of(pid) for pid in shims.values()}
                assert parents == {warm_pid}, f"shims' parents {parents}, warm parent {warm_pid}"
                assert containerd.pid is not None
                samples = sample(soak_report, "running", len(shims), {
                    **{pid: "shim" for pid in shims.values()},
                    warm_pid: "warm", containerd.pid: "containerd"})
                for id, s in zip(shims, samples, strict=False):  # shims come first
                    first_seen.setdefault(id, s)
                    last_seen[id] = s
            soak_report.durations[f"{RUNNING} started"] = time.monotonic() - began
        finally:
            list(pool.map(containerd.remove, shims))
    left = containerd.wait_no_leftovers(ALL_SHIMS, timeout=SETTLE * 2)
    assert not left, "left behind by the 100 containers:\n  " + "\n  ".join(left)
    soak_report.durations[f"{RUNNING} started and removed"] = time.monotonic() - began
    sample_quiet(containerd, soak_report, "after", RUNNING)

    failures = flat_failures(soak_report.of("running", "shim"), "running shims")
    for id in shims:
        failures += rss_failure(first_seen[id], last_seen[id], f"shim of {id}")
    idle = [*soak_report.of("running", "warm")[:1], *soak_report.of("after", "warm")]
    failures += flat_failures(idle, "warm parent before and after the 100")
    failures += zombie_failures(soak_report, "running", "after")
    assert not failures, "\n".join([*failures, *soak_report.table()])
