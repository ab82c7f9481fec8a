"""Which of pyrunc's warm parents the memory measure of bench/run.py counts."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.run import Proc, processes, serving_warm_parents, warm_parents


def proc(pid: int, ppid: int, cmdline: str) -> Proc:
    return Proc(pid, ppid, cmdline, cmdline.split())


def test_only_the_warm_parent_of_a_measured_shim_counts() -> None:
    # Two installations, each with its warm parent and one shim; only 11's shims are measured.
    ppids = {11: 1, 12: 1, 21: 11, 22: 12}
    assert serving_warm_parents([11, 12], ppids, [21]) == [11]
    assert serving_warm_parents([11, 12], ppids, [22]) == [12]
    assert serving_warm_parents([11, 12], ppids, [21, 22]) == [11, 12]


def test_a_warm_parent_is_counted_once_however_many_shims_it_forked() -> None:
    ppids = {11: 1, 21: 11, 22: 11, 23: 11}
    assert serving_warm_parents([11], ppids, [21, 22, 23]) == [11]


def test_shims_started_by_containerd_bring_no_warm_parent() -> None:
    # The Go shim, or pyrunc's shim started the slow way: their parent is not a warm parent.
    ppids = {11: 1, 21: 1, 22: 5}
    assert serving_warm_parents([11], ppids, [21, 22]) == []
    assert serving_warm_parents([11], ppids, []) == []


def test_a_shim_without_a_known_parent_is_skipped() -> None:
    # A shim gone between the census and the question has no entry.
    assert serving_warm_parents([11], {11: 1, 21: 11}, [21, 99]) == [11]


def test_with_the_census_of_warm_parents() -> None:
    procs = {
        1: proc(1, 0, "/sbin/init"),
        11: proc(11, 1, "/venv-a/bin/python -m pyrunc.shim.warm"),
        12: proc(12, 1, "/venv-b/bin/python -m pyrunc.shim.warm"),
        # a shim that still has its parent's command line is a shim, not a warm parent
        21: proc(21, 11, "/venv-a/bin/python -m pyrunc.shim.warm"),
        22: proc(22, 12, "containerd-shim-pyrunc-v1 -namespace n -id b -address /other.sock"),
    }
    warm = warm_parents(procs)
    assert warm == [11, 12]
    ppids = {pid: p.ppid for pid, p in procs.items()}
    assert serving_warm_parents(warm, ppids, [21]) == [11]


def test_parents_read_from_proc() -> None:
    # processes() reads the ppid from /proc/<pid>/stat: a child of this process names it.
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print(flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        child.stdout.readline()  # it runs: its command line is there to read (not mid-exec)
        procs = processes()
        ppids = {pid: p.ppid for pid, p in procs.items()}
        assert ppids[child.pid] == os.getpid()
        assert serving_warm_parents([os.getpid(), 1], ppids, [child.pid]) == [os.getpid()]
        assert serving_warm_parents([1], ppids, [child.pid]) == []
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def test_the_namespace_grouping_row_sets_pyrunc_beside_the_other_sides_default() -> None:
    from bench.run import rows

    a, b = "io.containerd.pyrunc.v1", "io.containerd.runc.v2"

    def run(runtime: str, per_container_kb: float) -> dict[str, object]:
        return {"runtime": runtime, "containers": 20, "ksm": False, "ok": True,
                "pss_per_container_kb": per_container_kb, "warm_parent_pss_kb": 0,
                "threads_max": 1}

    grouped = {**run(a, 512.0), "grouping": "namespace"}
    result = {"options": {"only": ["memory"], "containers": [20], "ksm": [False]},
              "memory": {"runs": [run(a, 6144.0), run(b, 3072.0)], "grouped": [grouped]}}
    (row,) = [r for r in rows(result, (a, b)) if r.key == "pss_k20_namespace"]
    assert (row.a, row.b) == (0.5, 3.0)
    assert "grouping" in row.name
    (row,) = [r for r in rows(result, (b, a)) if r.key == "pss_k20_namespace"]
    assert (row.a, row.b) == (3.0, 0.5)  # pyrunc's figure stays in pyrunc's column
