"""pyrunc against the Go shim, side by side on one private containerd: `python -m bench.run`.

Five measures for both runtimes in the same run, the runtimes alternating (A, B, A, B...), and
one of pyrunc alone:

  start       wall time of `ctr run --rm --runtime R IMAGE <id> true`, after warm-up runs
  exec        wall time of `ctr task exec --exec-id X <id> true` on a running container
  actions     pyrunc's shim binary run as containerd runs it for `start` (a warm parent
              serving) and `delete` (a torn-down bundle), each against the bare interpreter
              (`python3 -I -S -c pass`), the three alternating
  memory      K detached `sleep` containers of one runtime: the PSS of everything that exists to
              serve them (the shims, and pyrunc's warm parent), divided by K; threads per shim
  stdout      1 GiB through the container's stdout: `ctr run --rm ... sh -c 'dd ...'`, ctr's
              stdout a pipe the bench drains and counts
  concurrent  N `ctr run --rm ... true` launched at once: wall time until the last one exits

Prints a table (ratio pyrunc / Go shim, with a 95% bootstrap interval for the latencies, and
issue 10's targets) and one of the actions (each one's time over the floor, with its interval and
the target of at most 3 ms), writes every sample, the machine and the date to
bench/results/latest.json and a chart to bench/results/latest.png (with matplotlib).
A benchmark, not a test: it fails (exit 1) only if a container could not be run, a measure broke
or the bench had to clean up after itself, never because a figure is slow.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import operator
import os
import random
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.support import (
    ALL_SHIMS,
    IMAGE,
    PYRUNC_RUNTIME,
    PYRUNC_SHIM,
    RUNC_RUNTIME,
    Containerd,
    CtrError,
    build_busybox_image,
    shim_binary,
    unique_id,
)
from tests.support.containerd import remove_cached_settings

NAMESPACE = "pyrunc-bench"
WARMUP_RUNS = 2
REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DEFAULT_JSON = RESULTS / "latest.json"
DEFAULT_CHART = RESULTS / "latest.png"
LABELS = {PYRUNC_RUNTIME: "pyrunc", RUNC_RUNTIME: "go shim"}
MEASURES = ("start", "exec", "actions", "memory", "stdout", "concurrent")
SHIM_GONE_TIMEOUT = 15.0
TASK_PLUGIN = "io.containerd.runtime.v2.task"
# pyrunc's per-node warm parent, which forks the per-container shims (`python -m pyrunc.shim.warm`).
WARM_MARKER = "pyrunc.shim.warm"
WARM_DIR = Path("/run/pyrunc")  # where the warm parent keeps its socket and lock file
MIB = 1 << 20
FAILURES = (CtrError, TimeoutError, subprocess.TimeoutExpired, OSError)

Json = dict[str, Any]


def label(runtime: str) -> str:
    return LABELS.get(runtime, runtime)


def p90(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def summarize(values: list[float]) -> Json:
    """Median, p90, min, max and stdev of `values` (seconds or whatever they are)."""
    if not values:
        return {"runs": 0}
    return {
        "runs": len(values),
        "median": statistics.median(values),
        "p90": p90(values),
        "min": min(values),
        "max": max(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


# The bootstrap of the latency ratios: a fixed seed, so that the intervals in a run's JSON can be
# recomputed from its samples; 10 000 resamples keep the 2.5th/97.5th percentiles stable to about
# a percent of the interval's width and cost about 0.2 s for 40 samples a side.
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 10
BOOTSTRAP_LEVEL = 0.95


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) of the sorted `ordered`, interpolating linearly between the
    two nearest ranks (as `statistics.quantiles(method="inclusive")` does)."""
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def bootstrap_ratio_ci(
    a: Sequence[float],
    b: Sequence[float],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = BOOTSTRAP_LEVEL,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of median(a) / median(b).

    The runs alternate A, B, A, B, but a run of A does not depend on the run of B next to it, so
    the two sets are resampled as independent samples: each with replacement, to its own size,
    `resamples` times; the interval is the central `level` of the ratios of the medians. None if
    either side has no sample or a sample that is not positive (no ratio of times then).
    """
    if not a or not b or min(a) <= 0 or min(b) <= 0:
        return None
    return _bootstrap(a, b, operator.truediv, resamples, seed, level)


def bootstrap_difference_ci(
    a: Sequence[float],
    b: Sequence[float],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = BOOTSTRAP_LEVEL,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of median(a) - median(b), resampled as bootstrap_ratio_ci
    does (the two sets apart); None if either side has no sample."""
    if not a or not b:
        return None
    return _bootstrap(a, b, operator.sub, resamples, seed, level)


def _bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    combine: Callable[[float, float], float],
    resamples: int,
    seed: int,
    level: float,
) -> tuple[float, float]:
    rng = random.Random(seed)
    choices, median = rng.choices, statistics.median
    a, b = list(a), list(b)
    na, nb = len(a), len(b)
    values = sorted(
        combine(median(choices(a, k=na)), median(choices(b, k=nb))) for _ in range(resamples)
    )
    tail = (1 - level) / 2
    return percentile(values, tail), percentile(values, 1 - tail)


def progress(message: str) -> None:
    print(message, flush=True)


# ---- processes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    cmdline: str  # argv joined by spaces (a process title set with prctl has no NULs)
    argv: list[str]


def read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # gone, or a kernel thread
        return b""


def processes() -> dict[int, Proc]:
    """Every process with a command line (kernel threads have none)."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        raw = read_bytes(f"/proc/{entry.name}/cmdline")
        stat = read_bytes(f"/proc/{entry.name}/stat").decode(errors="replace")
        if not raw or not stat:
            continue
        argv = raw.decode(errors="replace").rstrip("\0").split("\0")
        fields = stat.rpartition(")")[2].split()
        if len(fields) < 2 or fields[0] in ("Z", "X"):  # a zombie is as good as gone
            continue
        pid = int(entry.name)
        found[pid] = Proc(pid, int(fields[1]), " ".join(argv).strip(), argv)
    return found


def warm_parents(procs: dict[int, Proc]) -> list[int]:
    """pyrunc's warm parents: `pyrunc.shim.warm` in the command line, and not forked by another
    one (a forked shim that kept its parent's command line is a shim, not a parent)."""
    return sorted(
        p.pid
        for p in procs.values()
        if WARM_MARKER in p.cmdline
        and not (p.ppid in procs and WARM_MARKER in procs[p.ppid].cmdline)
    )


def serving_warm_parents(
    warm: Iterable[int], ppids: Mapping[int, int], shims: Iterable[int]
) -> list[int]:
    """The warm parents in `warm` that forked at least one of `shims` (`ppids` maps pid to ppid).

    A shim forked by a warm parent keeps it as its parent (it only calls setsid), so this leaves
    out the warm parents of other pyrunc installations or other containerds on the machine.
    """
    parents = {ppids[pid] for pid in shims if pid in ppids}
    return sorted(parents.intersection(warm))


def warm_files() -> set[Path]:
    try:
        return set(WARM_DIR.iterdir())
    except OSError:
        return set()


def remove_warm_files(before: set[Path], dir_existed: bool) -> list[str]:
    """Remove what pyrunc's warm parents of this run left in /run/pyrunc (a socket and a lock
    file each), once none of them runs any more; return what was removed."""
    removed = []
    for path in sorted(warm_files() - before):
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(str(path))
    if not dir_existed:
        with contextlib.suppress(OSError):
            WARM_DIR.rmdir()
            removed.append(str(WARM_DIR))
    return removed


def listening_sockets(paths: set[str]) -> set[int]:
    """Inodes of the listening unix sockets bound to one of `paths`."""
    inodes = set()
    text = read_bytes("/proc/net/unix").decode(errors="replace")
    for line in text.splitlines()[1:]:
        # Num RefCount Protocol Flags Type St Inode [Path]; flag 0x10000 is __SO_ACCEPTCON.
        parts = line.split(None, 7)
        if len(parts) == 8 and int(parts[3], 16) & 0x10000 and parts[7] in paths:
            inodes.add(int(parts[6]))
    return inodes


def socket_holders(pids: Iterable[int], inodes: set[int]) -> set[int]:
    wanted = {f"socket:[{inode}]" for inode in inodes}
    holders = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in wanted:
                        holders.add(pid)
                        break
    return holders


class Shims:
    """Finds the long-running shims of one containerd, however they were started.

    A shim is a process that is not a `start`/`delete` invocation and that either says it serves
    this containerd (`-address <socket>` in its command line, as containerd starts a shim), or
    listens on the shim socket of a container of ours, or runs in one of our task bundles as its
    working directory with "shim" in its command line. The last two find the shims forked from
    pyrunc's warm parent whatever their process title says (it may be cut short, or be the
    parent's). pyrunc's warm parents are never shims; they are reported apart.
    """

    def __init__(self, ctd: Containerd) -> None:
        self.ctd = ctd
        self.ids: set[str] = set()  # every container id the bench used
        self.bundles = Path(ctd.state, TASK_PLUGIN, ctd.namespace)

    def new_id(self, prefix: str) -> str:
        cid = unique_id(prefix)
        self.ids.add(cid)
        return cid

    def find(self, ids: Iterable[str] | None = None) -> tuple[dict[int, Proc], list[int]]:
        """(shims of this containerd, warm parents on the machine)."""
        procs = processes()
        warm = set(warm_parents(procs))
        ids = self.ids if ids is None else set(ids)
        own = {os.getpid(), self.ctd.pid}
        found = {}
        address = f"-address {self.ctd.address}"
        bundles = {str(self.bundles / cid) for cid in ids}
        candidates = []
        for p in procs.values():
            if p.pid in warm or p.pid in own or {"start", "delete"} & set(p.cmdline.split()):
                continue
            candidates.append(p.pid)
            if f"{address} " in f"{p.cmdline} ":
                found[p.pid] = p
            elif "shim" in p.cmdline:
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{p.pid}/cwd") in bundles:
                        found[p.pid] = p
        sockets = {self.ctd.shim_socket_path(cid) for cid in ids}
        inodes = listening_sockets(sockets)
        if inodes:
            # Only a shim holds the listening socket (containerd holds connected ones).
            for pid in socket_holders([c for c in candidates if c not in found], inodes):
                found[pid] = procs[pid]
        return found, sorted(warm)

    def wait_gone(
        self, ids: Iterable[str] | None = None, timeout: float = SHIM_GONE_TIMEOUT
    ) -> float:
        """Wait until no shim of ours (of `ids`) runs; return the seconds it took (or raise)."""
        ids = list(self.ids if ids is None else ids)
        t0 = time.monotonic()
        while True:
            shims, _ = self.find(ids)
            if not shims:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(
                    f"shims still running after {timeout} s: "
                    + "; ".join(f"{p.pid} {p.cmdline[:120]}" for p in shims.values())
                )
            time.sleep(0.02)


def proc_field(path: str, name: str) -> int:
    """The number after `name:` in a /proc file such as status or smaps_rollup."""
    for line in Path(path).read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise ValueError(f"no {name} in {path}")


def proc_memory(pid: int, cmdline: str) -> Json:
    return {
        "pid": pid,
        "cmdline": cmdline,
        "pss_kb": proc_field(f"/proc/{pid}/smaps_rollup", "Pss"),
        "rss_kb": proc_field(f"/proc/{pid}/smaps_rollup", "Rss"),
        "threads": proc_field(f"/proc/{pid}/status", "Threads"),
    }


# ---- containers ----------------------------------------------------------------------------


def wait_status(ctd: Containerd, ids: list[str], status: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        seen = {t.id: t.status for t in ctd.tasks()}
        if all(seen.get(cid) == status for cid in ids):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"tasks not {status} after {timeout} s: {seen}")
        time.sleep(0.05)


def teardown(ctd: Containerd, shims: Shims, ids: list[str]) -> None:
    """Kill, delete and remove the containers `ids` (those that exist), wait for their shims."""
    present = {t.id for t in ctd.tasks()}
    for cid in ids:
        if cid in present:
            ctd.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
    wait_status(ctd, [cid for cid in ids if cid in present], "STOPPED")
    containers = set(ctd.containers())
    for cid in ids:
        if cid in present:
            ctd.ctr("task", "delete", cid, check=False)
        if cid in containers:
            ctd.ctr("container", "rm", cid, check=False)
    shims.wait_gone(ids)


def discard(ctx: Ctx, ids: list[str]) -> None:
    """After a failed run: remove whatever is left of the containers `ids`, by force, untimed."""
    if not ids:
        return
    with contextlib.suppress(*FAILURES):
        present = {t.id for t in ctx.ctd.tasks()}
        containers = set(ctx.ctd.containers())
        for cid in ids:
            if cid in present:
                ctx.ctd.ctr("task", "delete", "--force", cid, check=False, timeout=60)
            if cid in containers:
                ctx.ctd.ctr("container", "rm", cid, check=False, timeout=60)
        ctx.shims.wait_gone(ids, timeout=30)


def sweep(ctx: Ctx) -> None:
    """After a measure broke: remove every task and container of the namespace, untimed."""
    with contextlib.suppress(*FAILURES):
        discard(ctx, sorted({t.id for t in ctx.ctd.tasks()} | set(ctx.ctd.containers())))
        ctx.shims.wait_gone(timeout=30)


def describe(error: BaseException) -> str:
    """A short account of a failure (CtrError's own text ends with containerd's log)."""
    if isinstance(error, CtrError):
        stderr = (error.stderr or b"").decode(errors="replace").strip()
        return f"{' '.join(error.cmd[5:])}: exit {error.returncode}: {stderr[-600:]}"
    return str(error)[:600]


def ctr_argv(ctd: Containerd, *args: str) -> list[str]:
    return [ctd.ctr_binary, "-a", ctd.address, "-n", ctd.namespace, *args]


def remove_namespace_cgroups(namespace: str) -> None:
    """Remove the empty `/<namespace>` cgroups containerd's default spec made (runc removes only
    the `/<namespace>/<id>` below them). rmdir fails on a cgroup in use, which is then left."""
    root = Path("/sys/fs/cgroup")
    for path in [root / namespace, *root.glob(f"*/{namespace}")]:
        with contextlib.suppress(OSError):
            path.rmdir()


# ---- the measures --------------------------------------------------------------------------


@dataclass
class Ctx:
    ctd: Containerd
    shims: Shims
    runtimes: tuple[str, str]


def counted_seconds(samples: list[Json], runtime: str) -> list[float]:
    """The figures of `runtime` that count: its successful samples, warm-ups left out."""
    return [
        s["seconds"]
        for s in samples
        if s["runtime"] == runtime and not s.get("warmup") and s.get("ok", True)
    ]


def summary_by_runtime(samples: list[Json], runtimes: Sequence[str]) -> Json:
    return {rt: summarize(counted_seconds(samples, rt)) for rt in runtimes}


def failed_note(samples: list[Json], what: str = "runs") -> Json:
    """`{"error": ...}` if some samples failed (with the first failure), else `{}`."""
    failed = [s for s in samples if not s.get("ok", True)]
    if not failed:
        return {}
    first = failed[0].get("error") or failed[0].get("stderr") or ""
    by = ", ".join(
        f"{label(rt)} {n}"
        for rt in dict.fromkeys(s["runtime"] for s in failed)
        if (n := sum(1 for s in failed if s["runtime"] == rt))
    )
    return {"error": f"{len(failed)} of {len(samples)} {what} failed ({by}); first: {first}"}


def timed_ctr(ctx: Ctx, cleanup: list[str], *args: str) -> tuple[float, str | None]:
    """Run `ctr ARGS` and time it; on failure return the error and remove what is left of the
    containers `cleanup`."""
    t0 = time.perf_counter()
    try:
        ctx.ctd.ctr(*args, timeout=120)
    except FAILURES as e:
        seconds = time.perf_counter() - t0
        discard(ctx, cleanup)
        return seconds, describe(e)
    return time.perf_counter() - t0, None


def show(runtime: str, seconds: float, error: str | None) -> str:
    return f"{label(runtime)} {seconds * 1000:.0f} ms" + (" FAILED" if error else "")


def measure_start(ctx: Ctx, runs: int) -> Json:
    """`ctr run --rm ... true`, alternating the runtimes; every sample, warm-ups included."""
    samples: list[Json] = []
    for i in range(WARMUP_RUNS + runs):
        line = []
        for runtime in ctx.runtimes:
            cid = ctx.shims.new_id("start")
            argv = ("run", "--rm", "--runtime", runtime, IMAGE, cid, "true")
            seconds, error = timed_ctr(ctx, [cid], *argv)
            # Untimed: a shim still exiting must not slow down the next run (of the other runtime).
            shim_exit = ctx.shims.wait_gone([cid])
            sample = {
                "runtime": runtime,
                "round": i,
                "warmup": i < WARMUP_RUNS,
                "seconds": seconds,
                "ok": error is None,
                "shim_exit_after_s": shim_exit,
            }
            if error:
                sample["error"] = error
            samples.append(sample)
            line.append(show(runtime, seconds, error))
        kind = "warm-up" if i < WARMUP_RUNS else f"{i - WARMUP_RUNS + 1}/{runs}"
        progress(f"  start {kind}: " + ", ".join(line))
    return {
        "warmup_runs": WARMUP_RUNS,
        "summary": summary_by_runtime(samples, ctx.runtimes),
        "samples": samples,
        **failed_note(samples),
    }


def measure_exec(ctx: Ctx, runs: int) -> Json:
    """`ctr task exec ... true` on one running container per runtime, alternating."""
    ids: dict[str, str] = {}
    samples: list[Json] = []
    errors: dict[str, str] = {}
    try:
        for runtime in ctx.runtimes:
            cid = ctx.shims.new_id("exec")
            try:
                ctx.ctd.ctr("run", "-d", "--runtime", runtime, IMAGE, cid, "sleep", "3600")
                wait_status(ctx.ctd, [cid], "RUNNING")
            except FAILURES as e:
                errors[runtime] = f"container did not start: {describe(e)}"
                progress(f"  exec {label(runtime)}: {errors[runtime]}")
                discard(ctx, [cid])
                continue
            ids[runtime] = cid
        for i in range(WARMUP_RUNS + runs if ids else 0):
            line = []
            for runtime, cid in ids.items():
                exec_id = f"bench-{i}"
                argv = ("task", "exec", "--exec-id", exec_id, cid, "true")
                seconds, error = timed_ctr(ctx, [], *argv)
                sample = {
                    "runtime": runtime,
                    "round": i,
                    "warmup": i < WARMUP_RUNS,
                    "container": cid,
                    "exec_id": exec_id,
                    "seconds": seconds,
                    "ok": error is None,
                }
                if error:
                    sample["error"] = error
                samples.append(sample)
                line.append(show(runtime, seconds, error))
            kind = "warm-up" if i < WARMUP_RUNS else f"{i - WARMUP_RUNS + 1}/{runs}"
            progress(f"  exec {kind}: " + ", ".join(line))
    finally:
        teardown(ctx.ctd, ctx.shims, list(ids.values()))
    note = failed_note(samples)
    if errors:
        note = {
            "error": "; ".join([*(f"{label(r)}: {e}" for r, e in errors.items()), *note.values()])
        }
    return {
        "warmup_runs": WARMUP_RUNS,
        "summary": summary_by_runtime(samples, ctx.runtimes),
        "samples": samples,
        "container_errors": errors,
        **note,
    }


def memory_once(ctx: Ctx, runtime: str, k: int, ksm: Ksm | None) -> Json:
    """PSS of what serves K running `sleep` containers of one runtime, then tear them down.

    For pyrunc that is its shims plus the warm parent(s) that forked them, which exist only to
    fork shims; a warm parent's PSS is counted whole, even if shims of another containerd share
    it, and warm parents that forked none of these shims are not counted. With
    `ksm` (samepage merging running), the figures are read once ksmd has stopped merging more,
    for either runtime.
    """
    ids = [ctx.shims.new_id("mem") for _ in range(k)]
    settled: Json = {}
    try:
        for cid in ids:
            ctx.ctd.ctr("run", "-d", "--runtime", runtime, IMAGE, cid, "sleep", "3600", timeout=120)
        wait_status(ctx.ctd, ids, "RUNNING")
        time.sleep(0.5)  # let the shims finish whatever they do after Start answered
        if ksm is not None:
            settled = ksm.settle()
        found, warm = ctx.shims.find(ids)
        shims = [proc_memory(pid, p.cmdline) for pid, p in sorted(found.items())]
        procs = processes()
        serving = serving_warm_parents(warm, {pid: p.ppid for pid, p in found.items()}, found)
        parents = [proc_memory(pid, procs[pid].cmdline) for pid in serving if pid in procs]
    except FAILURES:
        discard(ctx, ids)
        raise
    teardown(ctx.ctd, ctx.shims, ids)
    counts_warm = shim_binary(runtime) == PYRUNC_SHIM
    shim_pss = sum(s["pss_kb"] for s in shims)
    warm_pss = sum(w["pss_kb"] for w in parents) if counts_warm else 0
    return {
        "runtime": runtime,
        "containers": k,
        "ksm": ksm is not None,
        "ksm_settle": settled,
        "ok": True,
        "shim_count": len(shims),
        "shim_pss_kb": shim_pss,
        "warm_parent_count": len(parents) if counts_warm else 0,
        "warm_parent_pss_kb": warm_pss,
        "pss_total_kb": shim_pss + warm_pss,
        "pss_per_container_kb": (shim_pss + warm_pss) / k,
        "threads_max": max((s["threads"] for s in shims), default=0),
        "shims": shims,
        "warm_parents": parents,
        "warm_parents_counted": counts_warm,
    }


def measure_memory(ctx: Ctx, counts: list[int], ksm_modes: list[bool],
                   config: Path | None = None) -> Json:
    """Every count for both runtimes, once per KSM mode (on: ksmd runs, at the kernel's default
    speed; off: everything unmerged, ksmd stopped). The machine's setting is put back after.

    Then, with `config` (the file PYRUNC_CONFIG names to the daemon), pyrunc once more at the
    largest count, KSM off, with `grouping = "namespace"`: one shim for all of them."""
    results = []
    grouped: list[Json] = []
    ksm = Ksm()
    before = ksm.run if ksm.available() else None
    if before is None and True in ksm_modes:
        progress("  memory: this kernel has no samepage merging: measured with KSM off only")
        ksm_modes = [False]
    try:
        for on in ksm_modes:
            if before is not None:
                ksm.switch(on)
            for k in counts:
                for runtime in ctx.runtimes:
                    try:
                        m = memory_once(ctx, runtime, k, ksm if on else None)
                    except FAILURES as e:
                        results.append({"runtime": runtime, "containers": k, "ksm": on,
                                        "ok": False, "error": describe(e)})
                        progress(f"  memory K={k} KSM {'on' if on else 'off'} {label(runtime)}: "
                                 f"FAILED: {describe(e)}")
                        continue
                    warm = (
                        f" + warm parent {m['warm_parent_pss_kb'] / 1024:.1f} MiB"
                        if m["warm_parent_count"]
                        else ""
                    )
                    waited = (f" (after {m['ksm_settle']['waited_s']:.0f} s of ksmd)"
                              if m["ksm_settle"] else "")
                    progress(
                        f"  memory K={k} KSM {'on' if on else 'off'} {label(runtime)}: "
                        f"{m['shim_count']} shim(s) {m['shim_pss_kb'] / 1024:.1f} MiB{warm} -> "
                        f"{m['pss_per_container_kb'] / 1024:.1f} MiB per container, "
                        f"{m['threads_max']} threads{waited}"
                    )
                    results.append(m)
        pyrunc = [r for r in ctx.runtimes if shim_binary(r) == PYRUNC_SHIM]
        if config is not None and pyrunc and counts:
            if before is not None:
                ksm.switch(False)
            k = max(counts)
            config.write_text('grouping = "namespace"\n')
            try:
                m = memory_once(ctx, pyrunc[0], k, None)
                m["grouping"] = "namespace"
                progress(f"  memory K={k} KSM off {label(pyrunc[0])}, grouping = namespace: "
                         f"{m['shim_count']} shim(s) -> "
                         f"{m['pss_per_container_kb'] / 1024:.1f} MiB per container")
            except FAILURES as e:
                m = {"runtime": pyrunc[0], "containers": k, "ksm": False, "ok": False,
                     "grouping": "namespace", "error": describe(e)}
                progress(f"  memory K={k} grouping = namespace: FAILED: {describe(e)}")
            finally:
                config.unlink(missing_ok=True)
                remove_cached_settings(config)
            grouped.append(m)
    finally:
        if before is not None:
            ksm.restore(before)
    return {"runs": results, "grouped": grouped, "ksm_run_before": before,
            **failed_note(results + grouped)}


KSM_DIR = Path("/sys/kernel/mm/ksm")


class Ksm:
    """The kernel's samepage merging (/sys/kernel/mm/ksm): its switch, and waiting for ksmd."""

    def available(self) -> bool:
        return (KSM_DIR / "run").exists()

    def read(self, name: str) -> int:
        return int((KSM_DIR / name).read_text())

    @property
    def run(self) -> int:
        return self.read("run")

    def switch(self, on: bool) -> None:
        if on:
            (KSM_DIR / "run").write_text("1\n")
            return
        (KSM_DIR / "run").write_text("2\n")  # stop, and unmerge everything merged
        deadline = time.monotonic() + 60
        while self.read("pages_shared") and time.monotonic() < deadline:
            time.sleep(0.1)
        (KSM_DIR / "run").write_text("0\n")

    def restore(self, run: int) -> None:
        if run != self.run:
            self.switch(run == 1)

    def settle(self, quiet_scans: int = 2, timeout: float = 300.0) -> Json:
        """Wait until `quiet_scans` full scans in a row merged (almost) nothing more; how long it
        took, and ksmd's CPU time meanwhile. A page is merged only once it has stayed the same
        between two scans, so new shims take several."""
        t0, cpu0 = time.monotonic(), ksmd_cpu_seconds()
        scans, sharing, quiet = self.read("full_scans"), self.read("pages_sharing"), 0
        while quiet < quiet_scans:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"ksmd still merging after {timeout} s")
            time.sleep(0.2)
            if self.read("full_scans") == scans:
                continue
            scans, now = self.read("full_scans"), self.read("pages_sharing")
            quiet = quiet + 1 if now - sharing <= max(16, sharing // 100) else 0
            sharing = now
        return {
            "waited_s": round(time.monotonic() - t0, 1),
            "full_scans": scans,
            "ksmd_cpu_s": round(ksmd_cpu_seconds() - cpu0, 2),
            "pages_shared": self.read("pages_shared"),
            "pages_sharing": self.read("pages_sharing"),
        }


def ksmd_cpu_seconds() -> float:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if read_bytes(f"/proc/{entry.name}/comm").strip() == b"ksmd":
                    fields = read_bytes(f"/proc/{entry.name}/stat").rsplit(b")", 1)[1].split()
                    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def drain(stream: IO[bytes]) -> int:
    """Read `stream` to EOF; return how many bytes came."""
    buf = bytearray(MIB)
    view = memoryview(buf)
    total = 0
    fd = stream.fileno()
    while True:
        n = os.readv(fd, [view])
        if not n:
            return total
        total += n


def stdout_once(ctx: Ctx, runtime: str, mib: int, timeout: float) -> Json:
    """`ctr run --rm ... sh -c 'dd ... count=MIB'`, ctr's stdout a pipe drained here."""
    cid = ctx.shims.new_id("out")
    script = f"dd if=/dev/zero bs=1M count={mib} 2>/dev/null"
    argv = ctr_argv(ctx.ctd, "run", "--rm", "--runtime", runtime, IMAGE, cid, "sh", "-c", script)
    timed_out = threading.Event()
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)

        def kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            assert proc.stdout is not None
            received = drain(proc.stdout)
            status = proc.wait()
            seconds = time.perf_counter() - t0
        finally:
            timer.cancel()
            if proc.stdout is not None:
                proc.stdout.close()
        err.seek(0)
        stderr = err.read().decode(errors="replace")[-2000:]
    expected = mib * MIB
    ok = status == 0 and received == expected and not timed_out.is_set()
    if not ok:  # ctr was killed, or failed: the container may still be there
        discard(ctx, [cid])
    shim_exit = ctx.shims.wait_gone([cid])
    sample = {
        "runtime": runtime,
        "seconds": seconds,
        "bytes": received,
        "expected_bytes": expected,
        "exit_status": status,
        "timed_out": timed_out.is_set(),
        "ok": ok,
        "mib_per_s": received / MIB / seconds if seconds else 0.0,
        "shim_exit_after_s": shim_exit,
    }
    if not ok:
        sample["stderr"] = stderr
        sample["error"] = (
            f"{received} of {expected} bytes, exit {status}"
            + (f", killed after {timeout:.0f} s" if timed_out.is_set() else "")
            + (f": {stderr.strip()[-600:]}" if stderr.strip() else "")
        )
    return sample


def measure_stdout(ctx: Ctx, mib: int, runs: int) -> Json:
    timeout = 60 + mib * 0.25
    samples = []
    for i in range(runs):
        line = []
        for runtime in ctx.runtimes:
            s = stdout_once(ctx, runtime, mib, timeout)
            s["round"] = i
            samples.append(s)
            what = (
                f"{s['seconds']:.2f} s ({s['mib_per_s']:.0f} MiB/s)"
                if s["ok"]
                else f"FAILED after {s['seconds']:.1f} s: {s['bytes']} of {s['expected_bytes']} "
                f"bytes, exit {s['exit_status']}{', timed out' if s['timed_out'] else ''}"
            )
            line.append(f"{label(runtime)} {what}")
        progress(f"  stdout {i + 1}/{runs}: " + ", ".join(line))
    return {
        "mib": mib,
        "timeout_s": timeout,
        "summary": summary_by_runtime(samples, ctx.runtimes),
        "samples": samples,
        **failed_note(samples),
    }


def reap(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kill whichever of `procs` still runs, and wait for all."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def close_pidfds(sel: selectors.BaseSelector) -> None:
    for key in list(sel.get_map().values()):
        sel.unregister(key.fileobj)
        os.close(key.fd)


def wait_blocked(pids: list[int], timeout: float = 10.0) -> bool:
    """Wait until every one of `pids` sleeps reading a pipe; False if not all did in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all("pipe" in read_bytes(f"/proc/{pid}/wchan").decode() for pid in pids):
            return True
        time.sleep(0.01)
    return False


# Each `ctr run` waits behind a gate: a shell blocked reading a pipe, which execs ctr once the
# pipe is closed (EOF), with stdin from /dev/null as in the other measures.
GATE = 'read -r _; exec "$@" </dev/null'


def concurrent_once(ctx: Ctx, runtime: str, n: int, timeout: float) -> Json:
    """N `ctr run --rm ... true` released at once; the wall time until the last has exited.

    The N processes are started first, untimed, each blocked in a shell reading one shared pipe;
    closing the pipe releases them all, and the clock starts then. So the figure does not include
    the bench forking N processes one after the other.
    """
    ids = [ctx.shims.new_id("con") for _ in range(n)]
    procs: list[subprocess.Popen[bytes]] = []
    ended: dict[int, float] = {}
    with contextlib.ExitStack() as stack:
        errs = [stack.enter_context(tempfile.TemporaryFile()) for _ in ids]
        stack.callback(reap, procs)  # also if the bench breaks off half-way
        sel = stack.enter_context(selectors.DefaultSelector())
        stack.callback(close_pidfds, sel)
        gate_r, gate_w = os.pipe()
        t_launch = time.perf_counter()
        try:
            for cid, err in zip(ids, errs, strict=True):
                argv = ctr_argv(ctx.ctd, "run", "--rm", "--runtime", runtime, IMAGE, cid, "true")
                procs.append(
                    subprocess.Popen(
                        ["sh", "-c", GATE, "sh", *argv],
                        stdin=gate_r,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                    )
                )
        finally:
            os.close(gate_r)
        launched = time.perf_counter() - t_launch
        gated = wait_blocked([proc.pid for proc in procs])
        for i, proc in enumerate(procs):
            sel.register(os.pidfd_open(proc.pid), selectors.EVENT_READ, i)
        t0 = time.perf_counter()
        os.close(gate_w)  # go
        deadline = t0 + timeout
        while len(ended) < n:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            for key, _ in sel.select(left):
                ended[key.data] = time.perf_counter() - t0
                sel.unregister(key.fileobj)
                os.close(key.fd)
        seconds = max(ended.values(), default=0.0)
        timed_out = len(ended) < n
        reap(procs)
        statuses = [proc.returncode for proc in procs]
        failures: list[Json] = []
        for cid, err, status in zip(ids, errs, statuses, strict=True):
            if status != 0:
                err.seek(0)
                failures.append(
                    {
                        "id": cid,
                        "exit_status": status,
                        "stderr": err.read().decode(errors="replace")[-1000:],
                    }
                )
    if failures:
        discard(ctx, [f["id"] for f in failures])
    shim_exit = ctx.shims.wait_gone(ids, timeout=60)
    error = ""
    if failures:
        first = failures[0]
        error = f"{len(failures)} of {n} failed; {first['id']}: exit {first['exit_status']}: "
        error += first["stderr"].strip()[-600:]
    elif timed_out:
        error = f"not all exited within {timeout:.0f} s"
    return {
        "runtime": runtime,
        "containers": n,
        "error": error,
        "seconds": seconds,
        "launch_s": launched,
        "all_waiting_at_gate": gated,
        "exit_times_s": [ended.get(i) for i in range(n)],
        "ok": not failures and not timed_out,
        "timed_out": timed_out,
        "failures": failures,
        "shim_exit_after_s": shim_exit,
    }


def measure_concurrent(ctx: Ctx, n: int, rounds: int) -> Json:
    timeout = 60 + n * 5.0
    samples = []
    for i in range(rounds):
        line = []
        for runtime in ctx.runtimes:
            s = concurrent_once(ctx, runtime, n, timeout)
            s["round"] = i
            samples.append(s)
            bad = "" if s["ok"] else f" ({len(s['failures'])} FAILED)"
            line.append(f"{label(runtime)} {s['seconds']:.2f} s{bad}")
        progress(f"  concurrent {i + 1}/{rounds}: " + ", ".join(line))
    return {
        "containers": n,
        "timeout_s": timeout,
        "summary": summary_by_runtime(samples, ctx.runtimes),
        "samples": samples,
        **failed_note(samples, "rounds"),
    }


# ---- start and delete against the interpreter's floor --------------------------------------

# Issue 10, point 4: containerd runs the shim binary for `start` and for `delete` on the path of
# every container; each may take at most this much longer than the bare interpreter it starts.
ACTION_TARGET_MS = 3.0
ACTION_WARMUP_RUNS = 5
# Rounds until a start was served by a warm parent count as warm-ups too, for at most this long
# (the warm parent that the first container started may still be loading).
ACTION_WARM_PARENT_WAIT = 20.0
ACTION_KINDS = ("floor", "start", "delete")
# The floor's place in each round, turn by turn: whatever the untimed steps between two timed
# runs leave behind (a shim exiting, files removed) falls on each kind alike.
ACTION_ORDERS = (
    ("floor", "start", "delete"),
    ("start", "floor", "delete"),
    ("start", "delete", "floor"),
)
FLOOR_CODE = "pass"


def interpreter_of(binary: str) -> str:
    """The interpreter a `#!` script starts (pyrunc's shim binary is such a launcher), or
    sys.executable for a binary that is not a script."""
    with open(binary, "rb") as f:
        head = f.read(256)
    words = head[2:].partition(b"\n")[0].split() if head.startswith(b"#!") else []
    return words[0].decode() if words else sys.executable


def shim_environment(ctd: Containerd) -> dict[str, str]:
    """The environment containerd gives the shim binary: its own, plus what containerd 1.6's
    runtime/v2/shim Command adds (GOMAXPROCS, TTRPC_ADDRESS, GRPC_ADDRESS, NAMESPACE)."""
    raw = read_bytes(f"/proc/{ctd.pid}/environ").decode(errors="replace")
    env = dict(e.partition("=")[::2] for e in raw.split("\0") if "=" in e) or dict(os.environ)
    env.update(
        GOMAXPROCS="2",
        TTRPC_ADDRESS=ctd.ttrpc_address,
        GRPC_ADDRESS=ctd.address,
        NAMESPACE=ctd.namespace,
    )
    return env


def timed_process(
    argv: Sequence[str], cwd: str, env: Mapping[str, str]
) -> tuple[float, int, bytes]:
    """Run `argv` to its end as containerd runs a shim action (in `cwd`, stdin /dev/null) and
    return (seconds, exit status, stdout and stderr together).

    The clock runs from just before the process is started until waitpid has reaped it: its
    whole life, the interpreter's start-up and exit included, which is what containerd waits
    for. The output goes to a memfd, read afterwards, so that nothing is drained meanwhile.
    """
    out = os.memfd_create("bench-action")
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=out)
        status = proc.wait()
        seconds = time.perf_counter() - t0
        os.lseek(out, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(out, 65536):
            chunks.append(chunk)
    finally:
        os.close(out)
    return seconds, status, b"".join(chunks)


def alive(pid: int) -> bool:
    state = read_bytes(f"/proc/{pid}/stat").rpartition(b")")[2].split()[:1]
    return bool(state) and state[0] not in (b"Z", b"X")


def stop_listener(path: str, timeout: float = 10.0) -> Json:
    """End the shim that `start` left serving on the unix socket `path`, as Shutdown would:
    SIGTERM (the shim then removes its socket and exits), SIGKILL if it is still there after
    `timeout`; then remove the socket file if it is left. Which pids held the socket, and
    whether a warm parent had forked them."""
    procs = processes()
    holders = sorted(socket_holders(procs, listening_sockets({path})))
    warm = set(warm_parents(procs))
    for sig in (15, 9):  # SIGTERM, then SIGKILL
        for pid in holders:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while any(map(alive, holders)) and time.monotonic() < deadline:
            time.sleep(0.002)
        if not any(map(alive, holders)):
            break
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return {
        "shims": holders,
        "forked": bool(holders) and all(procs[pid].ppid in warm for pid in holders),
    }


def prepare_bundle(path: Path, spec: bytes) -> None:
    """A bundle as containerd lays it out before `start`: the spec, an empty rootfs and the
    `log` fifo. (Nobody reads the fifo here: a shim then logs nowhere.)"""
    path.mkdir()
    (path / "config.json").write_bytes(spec)
    (path / "rootfs").mkdir()
    os.mkfifo(path / "log", 0o600)


def tear_down_bundle(path: Path) -> None:
    """What Create and a normal teardown leave in the bundle besides `address` (which `start`
    wrote): the shim's options.json and runtime files (default options, as most containers
    have), runc's init.pid and log.json."""
    from pyrunc.oci import bundle
    from pyrunc.oci.options import RuntimeOptions

    bundle.write_options(str(path), RuntimeOptions())
    bundle.write_runtime(str(path), "runc")
    (path / bundle.INIT_PID_FILE).write_text("4242")
    (path / "log.json").write_bytes(b"")


def time_actions(
    binary: str,
    runs: int,
    *,
    address: str,
    namespace: str,
    publish_binary: str,
    env: Mapping[str, str],
    spec: bytes,
    workdir: Path,
    new_id: Callable[[], str],
    socket_path: Callable[[str], str],
    warm_parent_wait: float = ACTION_WARM_PARENT_WAIT,
) -> Json:
    """Rounds of three timed runs: the bare interpreter (`python3 -I -S -c pass`, with the
    interpreter `binary` starts), `binary ... start` in a fresh bundle, and, once the shim that
    start left is gone and the bundle looks like a torn-down one, `binary ... delete` on it. The
    command lines, working directory and environment are containerd's. Returns every sample,
    warm-ups included; the bundles and shims are removed as it goes."""
    floor = [interpreter_of(binary), "-I", "-S", "-c", FLOOR_CODE]
    common = [binary, "-namespace", namespace, "-address", address, "-publish-binary",
              publish_binary]
    samples: list[Json] = []
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    measured = 0
    served_once = False
    i = 0
    try:
        while measured < runs:
            warmup = i < ACTION_WARMUP_RUNS or (
                not served_once and time.monotonic() - t0 < warm_parent_wait)
            cid = new_id()
            path = workdir / cid
            prepare_bundle(path, spec)
            sock = socket_path(cid)
            argv = {
                "floor": floor,
                "start": [*common, "-id", cid, "start"],
                "delete": [*common, "-id", cid, "-bundle", str(path), "delete"],
            }
            line = []
            try:
                for kind in ACTION_ORDERS[i % len(ACTION_ORDERS)]:
                    seconds, status, output = timed_process(argv[kind], str(path), env)
                    sample: Json = {"what": kind, "round": i, "warmup": warmup, "id": cid,
                                    "seconds": seconds, "exit_status": status}
                    expected = {"start": f"unix://{sock}\n".encode()}.get(kind)
                    ok = status == 0 and (output == expected if expected else True)
                    if kind == "delete":  # a DeleteResponse: its pid, or its exit status first
                        ok = ok and output[:1] in (b"\x08", b"\x10")
                    if not ok:
                        sample["error"] = f"exit {status}: {output[-600:]!r}"
                    sample["ok"] = ok
                    if kind == "start":
                        stopped = stop_listener(sock)
                        sample.update(stopped)
                        served_once = served_once or stopped["forked"]
                        tear_down_bundle(path)
                    samples.append(sample)
                    note = "" if ok else " FAILED"
                    if ok and kind == "start" and not sample["forked"]:
                        note = " (slow path: no warm parent answered)"
                    line.append(f"{kind} {seconds * 1000:.1f} ms{note}")
            finally:
                shutil.rmtree(path, ignore_errors=True)
            if not warmup:
                measured += 1
            if warmup or measured % 25 == 0 or measured == runs:
                kind_ = "warm-up" if warmup else f"{measured}/{runs}"
                progress(f"  actions {kind_}: " + ", ".join(line))
            i += 1
    finally:
        with contextlib.suppress(OSError):
            workdir.rmdir()
    counted = {kind: action_seconds(samples, kind) for kind in ACTION_KINDS}
    slow = [s["seconds"] for s in samples if s["what"] == "start" and not s.get("warmup")
            and s.get("ok") and not s.get("forked")]
    return {
        "binary": binary,
        "floor_argv": floor,
        "warmup_rounds": sum(1 for s in samples if s["what"] == "floor" and s["warmup"]),
        "summary": {kind: summarize(values) for kind, values in counted.items()},
        "slow_starts": summarize(slow),
        "samples": samples,
        **failed_note([{**s, "runtime": s["what"]} for s in samples]),
    }


def action_seconds(samples: list[Json], kind: str) -> list[float]:
    """The figures of `kind` that count: successful, warm-ups left out, and for `start` only
    those a warm parent served (as it serves all but a node's first container)."""
    return [
        s["seconds"]
        for s in samples
        if s["what"] == kind and not s.get("warmup") and s.get("ok", True)
        and (kind != "start" or s.get("forked"))
    ]


def measure_actions(ctx: Ctx, runs: int) -> Json:
    """time_actions() for pyrunc's binary as this containerd finds it, with containerd's
    address, namespace and environment; the bundles live below its base directory."""
    ctd = ctx.ctd
    binary = Path(ctd.shim_path_dir) / PYRUNC_SHIM
    if not binary.exists():
        raise FileNotFoundError(f"{binary}: no pyrunc shim binary to time")
    spec = ctd.ctr("oci", "spec").stdout  # containerd's default spec, as config.json
    return time_actions(
        str(binary),
        runs,
        address=ctd.address,
        namespace=ctd.namespace,
        publish_binary=shutil.which(ctd.containerd_binary) or ctd.containerd_binary,
        env=shim_environment(ctd),
        spec=spec,
        workdir=ctd.base / "bench-actions",
        new_id=lambda: ctx.shims.new_id("act"),
        socket_path=ctd.shim_socket_path,
    )


# ---- the machine ---------------------------------------------------------------------------


def first_line(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError as e:
        return f"({e})"
    return " ".join(line.strip() for line in res.stdout.splitlines()[:3])


def cpu_model() -> str:
    for line in read_bytes("/proc/cpuinfo").decode(errors="replace").splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return "?"


def machine(runtimes: tuple[str, str]) -> Json:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    shims = {}
    for runtime in runtimes:
        binary = shutil.which(shim_binary(runtime), path=path)
        shims[runtime] = first_line([binary, "-v"]) if binary else "(not found)"
    git = first_line(["git", "-C", str(REPO), "rev-parse", "HEAD"])
    dirty = bool(first_line(["git", "-C", str(REPO), "status", "--porcelain"]))
    return {
        "uname": " ".join(os.uname()),
        "cpu": cpu_model(),
        "nproc": os.cpu_count(),
        "mem_total_kb": proc_field("/proc/meminfo", "MemTotal"),
        "cgroup": "v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1",
        "containerd": first_line(["containerd", "--version"]),
        "runc": first_line(["runc", "--version"]),
        "shims": shims,
        "python": sys.version,
        "ksm": {
            name: int((KSM_DIR / name).read_text())
            for name in ("run", "pages_to_scan", "sleep_millisecs")
            if (KSM_DIR / name).exists()
        },
        "git": f"{git}{' (dirty)' if dirty else ''}",
    }


# ---- report --------------------------------------------------------------------------------


# Issue 10's targets, pyrunc ÷ Go shim in one run with KSM off. A latency ratio meets its target
# only if the upper end of its 95% interval does; the memory ratios are single measurements.
# Rows not named here (p90s, PSS with KSM on, threads, the warm parent) are for information.
LATENCY_TARGETS = {"start": 1.0, "exec": 1.0, "stdout": 0.8, "concurrent": 1.0}
PSS_TARGET = 1.0  # per container, KSM off, at every K


@dataclass
class Row:
    """One line of the table: a figure for each runtime, in display units."""

    key: str
    name: str
    unit: str
    a: float | None
    b: float | None
    digits: int
    target: float | None = None  # None: shown for information, no target
    # The bootstrap interval of the ratio, for the latency medians; its upper end is then what
    # the target is compared with.
    ci95: tuple[float, float] | None = None
    samples: tuple[int, int] | None = None  # how many samples each side's figure comes from
    # A side to which the figure does not apply (the Go shim has no warm parent): "n/a" in its
    # cell, and no ratio. A figure that applies but is None is one that failed.
    na: tuple[bool, bool] = (False, False)

    @property
    def ratio(self) -> float | None:
        if any(self.na) or self.a is None or self.b is None or not self.b:
            return None
        return self.a / self.b

    @property
    def compared(self) -> float | None:
        """The figure held against the target: the interval's upper end if there is one."""
        return self.ci95[1] if self.ci95 is not None else self.ratio

    @property
    def met(self) -> bool | None:
        c = self.compared
        return None if c is None or self.target is None else c <= self.target

    def fmt(self, value: float | None) -> str:
        return "failed" if value is None else f"{value:.{self.digits}f}"

    def cell(self, side: int) -> str:
        return "n/a" if self.na[side] else self.fmt((self.a, self.b)[side])

    def ratio_text(self) -> str:
        return "-" if self.ratio is None else f"{self.ratio:.2f}"

    def ci_text(self) -> str:
        return "-" if self.ci95 is None else f"[{self.ci95[0]:.2f}, {self.ci95[1]:.2f}]"

    def target_text(self) -> str:
        return "-" if self.target is None else f"≤ {self.target:.1f}"

    def met_text(self) -> str:
        return {None: "-", True: "yes", False: "no"}[self.met]

    def as_json(self) -> Json:
        return {
            "key": self.key,
            "measure": self.name,
            "unit": self.unit,
            "a": None if self.na[0] else self.a,
            "b": None if self.na[1] else self.b,
            "not_applicable": [side for side, na in zip("ab", self.na, strict=True) if na],
            "samples": list(self.samples) if self.samples else None,
            "ratio": self.ratio,
            "ci95": list(self.ci95) if self.ci95 else None,
            "compared": self.compared,
            "target": self.target,
            "met": self.met,
        }


def rows(result: Json, runtimes: tuple[str, str]) -> list[Row]:
    a, b = runtimes
    out: list[Row] = []
    wanted = set(result["options"]["only"])

    def stat(measure: str, runtime: str, key: str, scale: float) -> float | None:
        summary = result.get(measure, {}).get("summary", {}).get(runtime, {})
        return summary[key] * scale if key in summary else None

    def median_row(measure: str, key: str, name: str, unit: str, scale: float, digits: int) -> Row:
        """The medians of `measure`, the ratio's bootstrap interval and its target."""
        samples = result.get(measure, {}).get("samples", [])
        sa, sb = counted_seconds(samples, a), counted_seconds(samples, b)
        return Row(
            key,
            name,
            unit,
            stat(measure, a, "median", scale),
            stat(measure, b, "median", scale),
            digits,
            target=LATENCY_TARGETS[measure],
            ci95=bootstrap_ratio_ci(sa, sb),
            samples=(len(sa), len(sb)),
        )

    def timed(measure: str, name: str, unit: str, scale: float, digits: int) -> None:
        if measure not in wanted:
            return
        out.append(
            median_row(
                measure, f"{measure}_median", f"{name}, median ({unit})", unit, scale, digits
            )
        )
        out.append(
            Row(
                f"{measure}_p90",
                f"{name}, p90 ({unit})",
                unit,
                stat(measure, a, "p90", scale),
                stat(measure, b, "p90", scale),
                digits,
            )
        )

    timed("start", "start `ctr run --rm true`", "ms", 1000, 0)
    timed("exec", "exec `ctr task exec true`", "ms", 1000, 0)
    if "memory" in wanted:
        by_key = {
            (m["runtime"], m["containers"], m.get("ksm", False)): m
            for m in result.get("memory", {}).get("runs", [])
            if m.get("ok")
        }
        measured = {m.get("ksm", False) for m in result.get("memory", {}).get("runs", [])}
        modes = [on for on in result["options"].get("ksm", [False]) if on in measured] or [False]
        counts_warm = (shim_binary(a) == PYRUNC_SHIM, shim_binary(b) == PYRUNC_SHIM)
        for on in modes:
            ksm = f"KSM {'on' if on else 'off'}"
            for k in result["options"]["containers"]:
                ma, mb = by_key.get((a, k, on)), by_key.get((b, k, on))
                out.append(
                    Row(
                        f"pss_k{k}{'_ksm' if on else ''}",
                        f"PSS per container, K={k}, {ksm} (MiB)",
                        "MiB",
                        ma["pss_per_container_kb"] / 1024 if ma else None,
                        mb["pss_per_container_kb"] / 1024 if mb else None,
                        1,
                        target=None if on else PSS_TARGET,
                    )
                )
                # What of that figure is the warm parent's (whole, not divided by K): the part
                # a shim's own diet does not touch. Only pyrunc has one.
                out.append(
                    Row(
                        f"warm_parent_pss_k{k}{'_ksm' if on else ''}",
                        f"PSS of the warm parent alone, K={k}, {ksm} (MiB)",
                        "MiB",
                        ma["warm_parent_pss_kb"] / 1024 if ma else None,
                        mb["warm_parent_pss_kb"] / 1024 if mb else None,
                        1,
                        na=(not counts_warm[0], not counts_warm[1]),
                    )
                )
        for k in result["options"]["containers"]:
            ma, mb = by_key.get((a, k, modes[0])), by_key.get((b, k, modes[0]))
            out.append(
                Row(
                    f"threads_k{k}",
                    f"threads per shim, K={k} (max)",
                    "threads",
                    ma["threads_max"] if ma else None,
                    mb["threads_max"] if mb else None,
                    0,
                )
            )
        # pyrunc with one shim for the whole namespace, beside the other side's default (a
        # shim per container): what the memory-tight setting saves, and what it costs in sharing.
        for m in result.get("memory", {}).get("grouped", []):
            k = m["containers"]
            mine = m if m.get("ok") else None
            other = by_key.get((b if m["runtime"] == a else a, k, False))
            pss = (mine["pss_per_container_kb"] / 1024 if mine else None,
                   other["pss_per_container_kb"] / 1024 if other else None)
            out.append(
                Row(
                    f"pss_k{k}_namespace",
                    f'PSS per container, K={k}, KSM off, pyrunc with grouping = "namespace" '
                    f"(MiB)",
                    "MiB",
                    pss[0] if m["runtime"] == a else pss[1],
                    pss[1] if m["runtime"] == a else pss[0],
                    1,
                )
            )
    if "stdout" in wanted:
        mib = result["options"]["stdout_mib"]
        size = f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"
        out.append(
            median_row("stdout", "stdout_median", f"{size} through stdout, median (s)", "s", 1, 2)
        )
    if "concurrent" in wanted:
        n = result["options"]["concurrent"]
        out.append(
            median_row(
                "concurrent",
                "concurrent_median",
                f"{n} concurrent `ctr run --rm true`, median (s)",
                "s",
                1,
                2,
            )
        )
    return out


def header(runtimes: tuple[str, str]) -> tuple[str, ...]:
    a, b = (label(r) for r in runtimes)
    ratio = f"ratio ({a} ÷ {b.removesuffix(' shim')})"
    return ("measure", a, b, ratio, "95% interval", "target", "met")


def cells(r: Row) -> tuple[str, ...]:
    figures = (r.cell(0), r.cell(1), r.ratio_text(), r.ci_text(), r.target_text())
    return (r.name, *figures, r.met_text())


def text_table(head: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    """Aligned columns for the terminal: the first left-aligned, the others right-aligned."""
    lines_ = [tuple(head), *map(tuple, body)]
    widths = [max(len(line[i]) for line in lines_) for i in range(len(lines_[0]))]
    text = [
        " | ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines_
    ]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)


def markdown(head: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    """The same as a Markdown table, figures right-aligned."""
    return "\n".join([
        "| " + " | ".join(head) + " |",
        "|---" + "|---:" * (len(head) - 1) + "|",
        *("| " + " | ".join(row) + " |" for row in body),
    ])


def table(table_rows: list[Row], runtimes: tuple[str, str]) -> str:
    return text_table(header(runtimes), map(cells, table_rows))


def markdown_table(table_rows: list[Row], runtimes: tuple[str, str]) -> str:
    return markdown(header(runtimes), map(cells, table_rows))


@dataclass
class FloorRow:
    """One line of the table of `start` and `delete` against the interpreter's floor: a time in
    milliseconds of pyrunc alone (no second runtime, no ratio)."""

    key: str
    name: str
    ms: float | None
    samples: tuple[int, ...]  # the action's count, and the floor's for a difference
    ci95: tuple[float, float] | None = None  # of the difference, in ms
    target: float | None = None  # ms; the interval's upper end is held against it

    @property
    def compared(self) -> float | None:
        return self.ci95[1] if self.ci95 is not None else self.ms

    @property
    def met(self) -> bool | None:
        c = self.compared
        return None if c is None or self.target is None else c <= self.target

    def cells(self) -> tuple[str, ...]:
        return (
            self.name,
            "failed" if self.ms is None else f"{self.ms:.2f}",
            "-" if self.ci95 is None else f"[{self.ci95[0]:.2f}, {self.ci95[1]:.2f}]",
            "/".join(map(str, self.samples)),
            "-" if self.target is None else f"≤ {self.target:g} ms",
            {None: "-", True: "yes", False: "no"}[self.met],
        )

    def as_json(self) -> Json:
        return {
            "key": self.key,
            "measure": self.name,
            "unit": "ms",
            "ms": self.ms,
            "samples": list(self.samples),
            "ci95": list(self.ci95) if self.ci95 else None,
            "compared": self.compared,
            "target": self.target,
            "met": self.met,
        }


FLOOR_HEADER = ("measure", "ms", "95% interval", "runs", "target", "met")


def action_rows(result: Json) -> list[FloorRow]:
    """The medians of the floor and of both actions, and each action's median minus the floor's
    with its bootstrap interval and issue 10's target; [] if the measure was not asked for."""
    if "actions" not in result["options"]["only"]:
        return []
    samples = result.get("actions", {}).get("samples", [])
    seconds = {kind: action_seconds(samples, kind) for kind in ACTION_KINDS}

    def median_ms(values: list[float]) -> float | None:
        return statistics.median(values) * 1000 if values else None

    out = [
        FloorRow("floor_median", "floor `python3 -I -S -c pass`, median", median_ms(
            seconds["floor"]), (len(seconds["floor"]),)),
        FloorRow("start_action_median", "`start`, a warm parent serving, median", median_ms(
            seconds["start"]), (len(seconds["start"]),)),
        FloorRow("delete_action_median", "`delete` of a torn-down bundle, median", median_ms(
            seconds["delete"]), (len(seconds["delete"]),)),
    ]
    slow = result.get("actions", {}).get("slow_starts", {})
    if slow.get("runs"):
        out.append(FloorRow("start_slow_median", "`start` the slow way (no warm parent), median",
                            slow["median"] * 1000, (slow["runs"],)))
    floor = seconds["floor"]
    for kind in ("start", "delete"):
        action = seconds[kind]
        ci = bootstrap_difference_ci(action, floor)
        difference = (
            (statistics.median(action) - statistics.median(floor)) * 1000
            if action and floor
            else None
        )
        out.append(FloorRow(
            f"{kind}_minus_floor",
            f"{kind} action − floor",  # noqa: RUF001 -- the minus sign, as issue 10 writes it
            difference,
            (len(action), len(floor)),
            ci95=(ci[0] * 1000, ci[1] * 1000) if ci else None,
            target=ACTION_TARGET_MS,
        ))
    return out


def floor_table(floor_rows: list[FloorRow]) -> str:
    return text_table(FLOOR_HEADER, (r.cells() for r in floor_rows))


def floor_markdown_table(floor_rows: list[FloorRow]) -> str:
    return markdown(FLOOR_HEADER, (r.cells() for r in floor_rows))


def chart(result: Json, table_rows: list[Row], runtimes: tuple[str, str], path: Path) -> str:
    """Draw the ratios (top) and every sample of each measure (bottom) to `path`; return a note
    if it could not be drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install '.[bench]'): no chart"
    a, b = runtimes
    options = result["options"]
    colors = {a: "#d1495b", b: "#00798c"}
    panels: list[tuple[str, str, Callable[[Json], float], str]] = [
        ("start", "start (ms)", lambda s: s["seconds"] * 1000, "ms"),
        ("exec", "exec (ms)", lambda s: s["seconds"] * 1000, "ms"),
        ("stdout", f"{options['stdout_mib']} MiB via stdout (s)", lambda s: s["seconds"], "s"),
        ("concurrent", f"{options['concurrent']} at once (s)", lambda s: s["seconds"], "s"),
    ]
    panels = [p for p in panels if p[0] in result]
    bottom = len(panels) + (1 if "memory" in result else 0) + (1 if "actions" in result else 0)
    ratio_rows = [r for r in table_rows if r.target is not None]
    fig = plt.figure(figsize=(max(11.0, 2.6 * bottom), 4.0 + 0.42 * len(ratio_rows)))
    grid = fig.add_gridspec(2, max(bottom, 1), height_ratios=[0.35 * len(ratio_rows) + 1, 2.4])
    ax = fig.add_subplot(grid[0, :])
    names = [r.name for r in ratio_rows][::-1]
    values = [r.ratio or 0.0 for r in ratio_rows][::-1]
    bar_colors = [
        "#999999" if r.ratio is None else ("#3a9d5d" if r.met else "#d1495b") for r in ratio_rows
    ][::-1]
    # The 95% interval as an error bar: the bar's colour follows its upper end, so the bar
    # alone could look green-worthy while it is red.
    ax.barh(names, values, color=bar_colors)
    for y, r in enumerate(ratio_rows[::-1]):
        if r.ci95 is not None and r.ratio is not None:
            low, high = max(0.0, r.ratio - r.ci95[0]), max(0.0, r.ci95[1] - r.ratio)
            ax.errorbar([r.ratio], [y], xerr=[[low], [high]], color="black", capsize=3)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    for y, r in enumerate(ratio_rows[::-1]):
        if r.target is not None and r.target != 1.0:
            ax.vlines(r.target, y - 0.45, y + 0.45, colors="black", linestyles="dashed", zorder=3)
    ends = [r.compared or 0.0 for r in ratio_rows]
    top = max([*values, *ends, 1.0]) * 1.45
    ax.set_xlim(0, top)
    for y, r in enumerate(ratio_rows[::-1]):
        ci = f" [{r.ci95[0]:.2f}, {r.ci95[1]:.2f}]" if r.ci95 else ""
        text = (
            "failed"
            if r.ratio is None
            else f"{r.ratio:.2f}{ci}  ({label(a)} {r.fmt(r.a)} / {label(b)} {r.fmt(r.b)} {r.unit})"
        )
        x = max(r.ratio or 0.0, r.compared or 0.0, 1.0) + top * 0.01
        ax.text(x, y, text, va="center", fontsize=8)
    ax.set_xlabel(
        f"ratio {label(a)} ÷ {label(b)}, with the 95% interval  (dashed: the target, 1.0 unless "
        "marked on the bar; green: met by the interval's upper end, red: not)"
    )
    date = result["date"][:10]
    ax.set_title(
        f"{shim_binary(a)} vs {shim_binary(b)}, {date}, "
        f"{result['machine']['nproc']} CPUs, {result['machine']['cpu']}",
        fontsize=10,
    )
    ax.tick_params(axis="y", labelsize=8)

    col = 0
    for measure, title, value, _unit in panels:
        pax = fig.add_subplot(grid[1, col])
        col += 1
        samples = [s for s in result[measure].get("samples", []) if not s.get("warmup")]
        for x, runtime in enumerate(runtimes):
            ys = [value(s) for s in samples if s["runtime"] == runtime and s.get("ok", True)]
            xs = [x + (i % 7 - 3) * 0.04 for i in range(len(ys))]
            pax.scatter(xs, ys, s=10, color=colors[runtime], alpha=0.6)
            if ys:
                pax.hlines(statistics.median(ys), x - 0.3, x + 0.3, color="black")
        pax.set_xticks(range(len(runtimes)), [label(r) for r in runtimes], fontsize=8)
        pax.set_xlim(-0.6, len(runtimes) - 0.4)
        top = max((value(s) for s in samples if s.get("ok", True)), default=1.0)
        pax.set_ylim(0, top * 1.15)
        pax.set_title(title, fontsize=9)
        pax.tick_params(axis="y", labelsize=8)
    if "memory" in result:
        pax = fig.add_subplot(grid[1, col])
        col += 1
        measured = {m.get("ksm", False) for m in result["memory"].get("runs", [])}
        groups = [(k, on) for on in options.get("ksm", [False]) if on in measured
                  for k in options["containers"]]
        by_key = {
            (m["runtime"], m["containers"], m.get("ksm", False)): m
            for m in result["memory"].get("runs", [])
            if m.get("ok")
        }
        width = 0.38
        for j, runtime in enumerate(runtimes):
            ys = [
                by_key[runtime, k, on]["pss_per_container_kb"] / 1024
                if (runtime, k, on) in by_key
                else 0
                for k, on in groups
            ]
            pax.bar(
                [i + (j - 0.5) * width for i in range(len(groups))],
                ys,
                width,
                color=colors[runtime],
                label=label(runtime),
            )
        pax.set_xticks(
            range(len(groups)),
            [f"K={k}\nKSM {'on' if on else 'off'}" for k, on in groups],
            fontsize=7,
        )
        pax.set_title("PSS per container (MiB)", fontsize=9)
        pax.legend(fontsize=7)
        pax.tick_params(axis="y", labelsize=8)
    if "actions" in result:
        pax = fig.add_subplot(grid[1, col])
        samples = [s for s in result["actions"].get("samples", []) if not s.get("warmup")]
        medians = {}
        for x, kind in enumerate(ACTION_KINDS):
            ys = [v * 1000 for v in action_seconds(samples, kind)]
            xs = [x + (i % 7 - 3) * 0.04 for i in range(len(ys))]
            pax.scatter(xs, ys, s=6, color=("#777777", *colors.values())[x], alpha=0.5)
            if ys:
                medians[kind] = statistics.median(ys)
                pax.hlines(medians[kind], x - 0.3, x + 0.3, color="black")
        pax.set_xticks(range(len(ACTION_KINDS)), ["python -IS", "start", "delete"], fontsize=8)
        pax.set_ylim(bottom=0)
        over = ", ".join(f"{kind} +{medians[kind] - medians['floor']:.1f}"
                         for kind in ("start", "delete") if kind in medians and "floor" in medians)
        pax.set_title(f"actions vs the floor (ms){': ' + over if over else ''}", fontsize=9)
        pax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ""


# ---- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--runs", type=int, help="measured start and exec runs per runtime (40)")
    add("--action-runs", type=int,
        help="measured rounds of the floor, `start` and `delete` for the actions measure (200)")
    add("--containers", help="container counts K for the memory measure (1,20)")
    add("--concurrent", type=int, help="containers started at once (50)")
    add("--rounds", type=int, help="rounds of the concurrent measure per runtime (2)")
    add("--stdout-mib", type=int, help="MiB written to stdout (1024)")
    add("--stdout-runs", type=int, help="runs of the stdout measure per runtime (3)")
    add("--ksm", choices=("both", "on", "off"), default="both",
        help="memory with the kernel's samepage merging off, on, or both (both)")
    add("--only", help=f"a subset of the measures, comma-separated: {','.join(MEASURES)}")
    add("--runtime-a", default=PYRUNC_RUNTIME)
    add("--runtime-b", default=RUNC_RUNTIME)
    add("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    add("--chart", type=Path, default=DEFAULT_CHART, help="where to draw the chart (PNG)")
    add(
        "--quick",
        action="store_true",
        help="smoke check, small counts everywhere: --runs 5 --action-runs 30 --containers 1,3 "
        "--concurrent 5 --rounds 1 --stdout-mib 64 --stdout-runs 1 (options given explicitly "
        "win)",
    )
    args = parser.parse_args(argv)
    defaults: Json = {
        "runs": 40,
        "action_runs": 200,
        "containers": "1,20",
        "concurrent": 50,
        "rounds": 2,
        "stdout_mib": 1024,
        "stdout_runs": 3,
    }
    if args.quick:
        defaults.update(
            runs=5, action_runs=30, containers="1,3", concurrent=5, rounds=1, stdout_mib=64,
            stdout_runs=1,
        )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.containers = [int(k) for k in str(args.containers).split(",") if k.strip()]
    args.ksm = {"both": [False, True], "on": [True], "off": [False]}[args.ksm]
    args.only = [m.strip() for m in (args.only or ",".join(MEASURES)).split(",") if m.strip()]
    unknown = set(args.only) - set(MEASURES)
    if unknown or not args.only:
        parser.error(f"--only: unknown measure(s) {sorted(unknown)}; known: {', '.join(MEASURES)}")
    if args.runtime_a == args.runtime_b:
        parser.error("--runtime-a and --runtime-b must differ")
    numbers = [args.runs, args.action_runs, args.concurrent, args.rounds, args.stdout_mib,
               args.stdout_runs]
    if min(numbers) < 1 or not args.containers or min(args.containers) < 1:
        parser.error("every count must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: must run as root (it starts containerd and runc)", file=sys.stderr)
        return 2

    runtimes = (args.runtime_a, args.runtime_b)
    binaries = tuple(dict.fromkeys([*ALL_SHIMS, *map(shim_binary, runtimes)]))
    t0 = time.monotonic()
    result: Json = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "options": {
            "runs": args.runs,
            "action_runs": args.action_runs,
            "containers": args.containers,
            "concurrent": args.concurrent,
            "rounds": args.rounds,
            "stdout_mib": args.stdout_mib,
            "stdout_runs": args.stdout_runs,
            "ksm": args.ksm,
            "only": args.only,
            "quick": args.quick,
            "runtimes": list(runtimes),
        },
        "machine": machine(runtimes),
        "errors": {},
    }
    result["warm_parents_before"] = warm_parents(processes())
    warm_dir_existed, warm_files_before = WARM_DIR.exists(), warm_files()
    steps: list[tuple[str, str, Callable[[Ctx], Json]]] = [
        (
            "start",
            f"start latency: {WARMUP_RUNS} warm-up + {args.runs} runs each",
            lambda ctx: measure_start(ctx, args.runs),
        ),
        (
            "exec",
            f"exec latency: {WARMUP_RUNS} warm-up + {args.runs} runs each",
            lambda ctx: measure_exec(ctx, args.runs),
        ),
        (
            "actions",
            f"start and delete against the interpreter's floor: {ACTION_WARMUP_RUNS} warm-up + "
            f"{args.action_runs} rounds",
            lambda ctx: measure_actions(ctx, args.action_runs),
        ),
        (
            "memory",
            f"memory: K = {', '.join(map(str, args.containers))} containers, KSM "
            + " then ".join("on" if on else "off" for on in args.ksm),
            lambda ctx: measure_memory(ctx, args.containers, args.ksm, config_file),
        ),
        (
            "stdout",
            f"stdout: {args.stdout_mib} MiB, {args.stdout_runs} runs each",
            lambda ctx: measure_stdout(ctx, args.stdout_mib, args.stdout_runs),
        ),
        (
            "concurrent",
            f"concurrent: {args.concurrent} containers at once, {args.rounds} round(s) each",
            lambda ctx: measure_concurrent(ctx, args.concurrent, args.rounds),
        ),
    ]
    cleaned: list[str] = []
    config_dir = tempfile.TemporaryDirectory()
    # The host configuration file the daemon's shims read; absent but for the grouping row.
    config_file = Path(config_dir.name) / "config.toml"
    with config_dir, Containerd(namespace=NAMESPACE, env={"PYRUNC_CONFIG": str(config_file)}
                                ) as ctd, tempfile.TemporaryDirectory() as tmp:
        shims = Shims(ctd)
        ctx = Ctx(ctd, shims, runtimes)
        try:
            ctd.import_image(build_busybox_image(Path(tmp) / "busybox.tar", IMAGE), IMAGE)
            # One untimed run per runtime, so that whichever measure comes first does not pay
            # for the first container (page cache, pyrunc's warm parent).
            for runtime in runtimes:
                cid = shims.new_id("warm")
                run_argv = ("run", "--rm", "--runtime", runtime, IMAGE, cid, "true")
                seconds, error = timed_ctr(ctx, [cid], *run_argv)
                shims.wait_gone([cid])
                progress(f"first container: {show(runtime, seconds, error)}")
                if error:
                    result["first_container_errors"] = {runtime: error}
            for name, title, run in steps:
                if name not in args.only:
                    continue
                progress(f"{title} ({time.monotonic() - t0:.0f} s)")
                try:
                    result[name] = run(ctx)
                except FAILURES as e:
                    result["errors"][name] = describe(e)
                    print(f"bench: {name} failed: {e}", file=sys.stderr)
                    sweep(ctx)
                if "error" in result.get(name, {}):
                    result["errors"][name] = result[name]["error"]
        except (CtrError, TimeoutError, subprocess.TimeoutExpired) as e:
            result["errors"]["setup"] = str(e)
            print(f"bench: failed: {e}", file=sys.stderr)
        finally:
            ctd.wait_no_leftovers(binaries, timeout=10)
            cleaned = ctd.cleanup_leftovers(binaries)
            remove_namespace_cgroups(NAMESPACE)
            if cleaned:
                print("bench: had to clean up:\n  " + "\n  ".join(cleaned), file=sys.stderr)
    still = ctd.leftovers(binaries)
    if still:
        print("bench: still left behind:\n  " + "\n  ".join(still), file=sys.stderr)
    result["cleaned_up"] = cleaned
    result["left_behind"] = still
    result["warm_parents_after"] = warm_parents(processes())
    new_warm = sorted(set(result["warm_parents_after"]) - set(result["warm_parents_before"]))
    result["warm_files_removed"] = []
    if not new_warm:  # with a warm parent of this run still there, its files are in use
        result["warm_files_removed"] = remove_warm_files(warm_files_before, warm_dir_existed)
    result["duration_s"] = round(time.monotonic() - t0, 1)

    result["bootstrap"] = {
        "statistic": "median(a) / median(b), a and b resampled apart, with replacement",
        "level": BOOTSTRAP_LEVEL,
        "resamples": BOOTSTRAP_RESAMPLES,
        "seed": BOOTSTRAP_SEED,
    }
    t_report = time.monotonic()
    table_rows = rows(result, runtimes)
    floor_rows = action_rows(result)
    result["bootstrap"]["seconds"] = round(time.monotonic() - t_report, 2)
    result["ratios"] = [r.as_json() for r in table_rows]
    result["table"] = table(table_rows, runtimes)
    result["markdown_table"] = markdown_table(table_rows, runtimes)
    if floor_rows:
        result["action_rows"] = [r.as_json() for r in floor_rows]
        result["actions_table"] = floor_table(floor_rows)
        result["actions_markdown_table"] = floor_markdown_table(floor_rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    note = chart(result, table_rows, runtimes, args.chart)
    print()
    if table_rows:
        print(result["table"])
    if floor_rows:
        floor = " ".join(result.get("actions", {}).get("floor_argv", ["python3", "-I", "-S"]))
        print(f"\n{label(PYRUNC_RUNTIME)}'s start and delete against the floor ({floor}):")
        print(result["actions_table"])
    everything: list[Row | FloorRow] = [*table_rows, *floor_rows]
    targets = [r for r in everything if r.target is not None]
    met = sum(1 for r in targets if r.met)
    print(
        f"\ntargets met: {met} of {len(targets)} "
        "(a latency ratio or an action's time over the floor by the upper end of its 95% interval)"
    )
    if new_warm:
        print(f"note: pyrunc warm parent(s) of this run still running: {new_warm}")
    if result["warm_files_removed"]:
        print(
            "note: removed what pyrunc's warm parent left behind:\n  "
            + "\n  ".join(result["warm_files_removed"]),
            file=sys.stderr,
        )
    if result["errors"]:
        for name, error in result["errors"].items():
            print(f"bench: {name}: {error.splitlines()[0] if error else error}", file=sys.stderr)
    print(f"{result['duration_s']} s; raw figures in {args.json}")
    print(note or f"chart in {args.chart}")
    return 1 if cleaned or still or result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
