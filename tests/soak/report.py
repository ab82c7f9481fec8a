"""What the soak measured: samples of processes' fds, threads and RSS, kept as JSON and a table.

The JSON (`.cache/soak/report.json`, and a copy named after the run's start) holds every sample, so
that a failed or suspicious run can be looked at afterwards; the table is what a reader of the
terminal needs: one row per sampling point.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPORT_DIR = Path(__file__).resolve().parents[2] / ".cache" / "soak"


@dataclass(frozen=True)
class Sample:
    """One process at one sampling point."""

    phase: str  # "cycles", "running" or "after"
    at: int  # cycles done, or containers running
    role: str  # "warm" (the warm parent), "probe" (a probe container's shim), "shim", "containerd"
    pid: int
    fds: int
    threads: int
    rss_kib: int
    zombies: list[int]  # zombie children that were still zombies after the grace period
    elapsed: float  # seconds since the soak began


@dataclass
class SoakReport:
    started: float = field(default_factory=time.time)
    clock0: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)
    transient_zombies: list[dict[str, object]] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)

    def elapsed(self) -> float:
        return time.monotonic() - self.clock0

    def add(self, phase: str, at: int, role: str, pid: int,
            census: tuple[int, int, int, list[int]]) -> Sample:
        fds, threads, rss, zombies = census
        sample = Sample(phase, at, role, pid, fds, threads, rss, zombies, round(self.elapsed(), 2))
        self.samples.append(sample)
        return sample

    def of(self, phase: str, role: str) -> list[Sample]:
        return [s for s in self.samples if s.phase == phase and s.role == role]

    def write(self) -> Path:
        """The JSON report, under a name of its own and as report.json; returns the latter."""
        REPORT_DIR.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.started))
        data = {
            "started_utc": stamp,
            "durations_s": {k: round(v, 1) for k, v in self.durations.items()},
            "machine": {"cpus": os.cpu_count(), "loadavg": Path("/proc/loadavg").read_text()
                        .split()[:3]},
            "samples": [asdict(s) for s in self.samples],
            "transient_zombies": self.transient_zombies,
            "table": self.table(),
        }
        text = json.dumps(data, indent=1) + "\n"
        (REPORT_DIR / f"soak-{stamp}.json").write_text(text)
        latest = REPORT_DIR / "report.json"
        latest.write_text(text)
        return latest

    def table(self) -> list[str]:
        """One row per sampling point: the warm parent, the shims (as ranges), the zombies."""
        points: dict[tuple[str, int], list[Sample]] = {}
        for s in self.samples:
            points.setdefault((s.phase, s.at), []).append(s)
        rows = [f"{'phase':<8} {'at':>5} {'time s':>7} | {'warm':>6} {'fds':>4} {'thr':>4} "
                f"{'RSS MiB':>8} | {'shims':>5} {'fds':>7} {'thr':>5} {'RSS MiB':>11} | "
                f"{'ctd fds':>7} | zombies"]
        for (phase, at), group in points.items():
            warm = [s for s in group if s.role == "warm"]
            shims = [s for s in group if s.role in ("shim", "probe")]
            ctd = [s for s in group if s.role == "containerd"]
            zombies = sum(len(s.zombies) for s in group)
            w = (f"{warm[0].pid:>6} {warm[0].fds:>4} {warm[0].threads:>4} "
                 f"{warm[0].rss_kib / 1024:>8.1f}") if warm else f"{'-':>6} {'':>4} {'':>4} {'':>8}"
            if shims:
                sh = (f"{len(shims):>5} {_span([x.fds for x in shims]):>7} "
                     f"{_span([x.threads for x in shims]):>5} "
                     f"{_span([x.rss_kib / 1024 for x in shims], '.1f'):>11}")
            else:
                sh = f"{0:>5} {'':>7} {'':>5} {'':>11}"
            c = f"{ctd[0].fds:>7}" if ctd else f"{'':>7}"
            elapsed = max(x.elapsed for x in group)
            rows.append(f"{phase:<8} {at:>5} {elapsed:>7.0f} | {w} | {sh} | {c} | {zombies}")
        return rows


def _span(values: list[float], spec: str = "d") -> str:
    """`7` when all values read the same, else `min-max`."""
    if spec == "d":
        values = [int(v) for v in values]
    lo, hi = format(min(values), spec), format(max(values), spec)
    return lo if lo == hi else f"{lo}-{hi}"
