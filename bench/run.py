"""pyrunc against the Go shim, side by side on one private containerd: `python -m bench.run`.

1. Start latency: wall time of `ctr run --rm --runtime R IMAGE <id> true`, the two runtimes
   alternating, after warm-up runs. Between runs the bench waits (untimed) until the shim is gone.
2. Memory: K detached `sleep 600` containers of one runtime, then the summed PSS of the shims
   serving this containerd, divided by K; then the same for the other runtime.

Prints a table and writes every sample, the machine and the date to bench/results/latest.json.
A benchmark, not a test: it fails (exit 1) only if a container cannot be run or the bench had to
clean up after itself, never because of a figure.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support import (
    ALL_SHIMS,
    IMAGE,
    PYRUNC_RUNTIME,
    RUNC_RUNTIME,
    Containerd,
    CtrError,
    build_busybox_image,
    shim_binary,
    unique_id,
)

NAMESPACE = "pyrunc-bench"
WARMUP_RUNS = 2
REPO = Path(__file__).resolve().parent.parent
DEFAULT_JSON = REPO / "bench" / "results" / "latest.json"
LABELS = {PYRUNC_RUNTIME: "pyrunc", RUNC_RUNTIME: "go shim"}
SHIM_GONE_TIMEOUT = 15.0

Json = dict[str, Any]


def label(runtime: str) -> str:
    return LABELS.get(runtime, runtime)


def p90(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


# ---- shim processes ------------------------------------------------------------------------


def shim_pids(ctd: Containerd) -> dict[int, list[str]]:
    """Long-running shims of this containerd: `-address <its socket>` in argv and no action."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue
        argv = raw.decode(errors="replace").rstrip("\0").split("\0")
        # `-address` is followed by exactly our socket (not the `.ttrpc` one of another flag);
        # `start` and `delete` are the short-lived invocations of the shim binary.
        pairs = itertools.pairwise(argv)
        if ("-address", ctd.address) in pairs and not {"start", "delete"} & set(argv):
            found[int(entry.name)] = argv
    return found


def proc_field(path: str, name: str) -> int:
    """The number after `name:` in a /proc file such as status or smaps_rollup."""
    for line in Path(path).read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise ValueError(f"no {name} in {path}")


def wait_shims_gone(ctd: Containerd, timeout: float = SHIM_GONE_TIMEOUT) -> float:
    """Wait until no shim serves this containerd; return the seconds it took (or raise)."""
    t0 = time.monotonic()
    while shim_pids(ctd):
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"shims still running after {timeout} s: {shim_pids(ctd)}")
        time.sleep(0.02)
    return time.monotonic() - t0


def wait_status(ctd: Containerd, ids: list[str], status: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        seen = {t.id: t.status for t in ctd.tasks()}
        if all(seen.get(cid) == status for cid in ids):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"tasks not {status} after {timeout} s: {seen}")
        time.sleep(0.05)


# ---- the measures --------------------------------------------------------------------------


def start_latency(ctd: Containerd, runtimes: tuple[str, str], runs: int) -> Json:
    """`ctr run --rm ... true`, alternating the runtimes; every sample, warm-ups included."""
    samples: list[Json] = []
    for i in range(WARMUP_RUNS + runs):
        for runtime in runtimes:
            cid = unique_id("lat")
            t0 = time.perf_counter()
            ctd.ctr("run", "--rm", "--runtime", runtime, IMAGE, cid, "true", timeout=120)
            seconds = time.perf_counter() - t0
            # Untimed: a shim still exiting must not slow down the next run (of the other runtime).
            shim_exit = wait_shims_gone(ctd)
            samples.append(
                {
                    "runtime": runtime,
                    "round": i,
                    "warmup": i < WARMUP_RUNS,
                    "seconds": seconds,
                    "shim_exit_after_s": shim_exit,
                }
            )
    summary = {}
    for runtime in runtimes:
        xs = [s["seconds"] for s in samples if s["runtime"] == runtime and not s["warmup"]]
        summary[runtime] = {
            "runs": len(xs),
            "median_s": statistics.median(xs),
            "p90_s": p90(xs),
            "min_s": min(xs),
            "max_s": max(xs),
            "stdev_s": statistics.stdev(xs) if len(xs) > 1 else 0.0,
        }
    return {"warmup_runs": WARMUP_RUNS, "summary": summary, "samples": samples}


def memory(ctd: Containerd, runtime: str, k: int) -> Json:
    """PSS of the shims of K running `sleep` containers of one runtime, then tear them down."""
    ids = [unique_id("mem") for _ in range(k)]
    try:
        for cid in ids:
            ctd.ctr("run", "-d", "--runtime", runtime, IMAGE, cid, "sleep", "600", timeout=120)
        wait_status(ctd, ids, "RUNNING")
        shims: list[Json] = []
        for pid, argv in sorted(shim_pids(ctd).items()):
            shims.append(
                {
                    "pid": pid,
                    "argv": argv,
                    "pss_kb": proc_field(f"/proc/{pid}/smaps_rollup", "Pss"),
                    "rss_kb": proc_field(f"/proc/{pid}/smaps_rollup", "Rss"),
                    "threads": proc_field(f"/proc/{pid}/status", "Threads"),
                }
            )
    finally:
        teardown(ctd, ids)
    pss_total = sum(s["pss_kb"] for s in shims)
    return {
        "runtime": runtime,
        "containers": k,
        "shim_count": len(shims),
        "pss_total_kb": pss_total,
        "pss_per_container_kb": pss_total / k,
        "shims": shims,
    }


def teardown(ctd: Containerd, ids: list[str]) -> None:
    """Kill, delete and remove the containers `ids`, and wait until their shims are gone."""
    for cid in ids:
        ctd.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
    present = {t.id for t in ctd.tasks()}
    wait_status(ctd, [cid for cid in ids if cid in present], "STOPPED")
    for cid in ids:
        ctd.ctr("task", "delete", cid, check=False)
        ctd.ctr("container", "rm", cid, check=False)
    wait_shims_gone(ctd)


def remove_namespace_cgroups(namespace: str) -> None:
    """Remove the empty `/<namespace>` cgroups containerd's default spec made (runc removes only
    the `/<namespace>/<id>` below them). rmdir fails on a cgroup in use, which is then left."""
    root = Path("/sys/fs/cgroup")
    for path in [root / namespace, *root.glob(f"*/{namespace}")]:
        with contextlib.suppress(OSError):
            path.rmdir()


# ---- the machine ---------------------------------------------------------------------------


def first_line(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError as e:
        return f"({e})"
    return " ".join(line.strip() for line in res.stdout.splitlines()[:3])


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
        "nproc": os.cpu_count(),
        "mem_total_kb": proc_field("/proc/meminfo", "MemTotal"),
        "cgroup": "v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1",
        "containerd": first_line(["containerd", "--version"]),
        "runc": first_line(["runc", "--version"]),
        "shims": shims,
        "python": sys.version,
        "git": f"{git}{' (dirty)' if dirty else ''}",
    }


# ---- report --------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def table(result: Json, runtimes: tuple[str, str]) -> str:
    a, b = runtimes
    lat = result["latency"]["summary"]
    rows = [("measure", label(a), label(b), f"ratio ({label(a)} ÷ {label(b)})")]
    for key, name in (
        ("median_s", "start latency, median (ms)"),
        ("p90_s", "start latency, p90 (ms)"),
    ):
        x, y = lat[a][key], lat[b][key]
        rows.append((name, f"{x * 1000:.0f}", f"{y * 1000:.0f}", ratio(x, y)))
    by_key = {(m["runtime"], m["containers"]): m for m in result["memory"]}
    for k in result["options"]["containers"]:
        ma, mb = by_key[a, k], by_key[b, k]
        x, y = ma["pss_per_container_kb"], mb["pss_per_container_kb"]
        rows.append(
            (f"PSS per container, K={k} (MiB)", f"{x / 1024:.1f}", f"{y / 1024:.1f}", ratio(x, y))
        )
        ta, tb = ([s["threads"] for s in m["shims"]] for m in (ma, mb))
        rows.append(
            (f"threads per shim, K={k} (max)", str(max(ta)), str(max(tb)), ratio(max(ta), max(tb)))
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        " | ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=15, help="measured start runs per runtime")
    parser.add_argument("--containers", default="1,10", help="container counts K for memory")
    parser.add_argument("--runtime-a", default=PYRUNC_RUNTIME)
    parser.add_argument("--runtime-b", default=RUNC_RUNTIME)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--quick", action="store_true", help="smoke check: --runs 5 --containers 1")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.containers = 5, "1"
    counts = [int(k) for k in args.containers.split(",") if k.strip()]
    if args.runs < 1 or not counts or min(counts) < 1:
        parser.error("--runs and every --containers count must be at least 1")
    if os.geteuid() != 0:
        print("bench: must run as root (it starts containerd and runc)", file=sys.stderr)
        return 2

    runtimes = (args.runtime_a, args.runtime_b)
    binaries = tuple(dict.fromkeys([*ALL_SHIMS, *map(shim_binary, runtimes)]))
    t0 = time.monotonic()
    result: Json = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "options": {"runs": args.runs, "containers": counts, "runtimes": list(runtimes)},
        "machine": machine(runtimes),
    }
    cleaned: list[str] = []
    with Containerd(namespace=NAMESPACE) as ctd, tempfile.TemporaryDirectory() as tmp:
        try:
            ctd.import_image(build_busybox_image(Path(tmp) / "busybox.tar", IMAGE), IMAGE)
            print(f"start latency: {WARMUP_RUNS} warm-up + {args.runs} runs each", flush=True)
            result["latency"] = start_latency(ctd, runtimes, args.runs)
            result["memory"] = []
            for k in counts:
                for runtime in runtimes:
                    print(f"memory: {k} x {label(runtime)}", flush=True)
                    result["memory"].append(memory(ctd, runtime, k))
        except (CtrError, TimeoutError, subprocess.TimeoutExpired) as e:
            print(f"bench: failed: {e}", file=sys.stderr)
            return 1
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
    result["duration_s"] = round(time.monotonic() - t0, 1)

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(result, runtimes))
    print(f"\n{result['duration_s']} s; raw figures in {args.json}")
    return 1 if cleaned or still else 0


if __name__ == "__main__":
    sys.exit(main())
