"""The statistics and the table of bench/run.py: the bootstrap interval of a latency ratio, and
which figure is held against a target."""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.run import (
    BOOTSTRAP_RESAMPLES,
    LATENCY_TARGETS,
    Row,
    bootstrap_ratio_ci,
    markdown_table,
    percentile,
    rows,
    table,
)

PYRUNC = "io.containerd.pyrunc.v1"
GO = "io.containerd.runc.v2"
RUNTIMES = (PYRUNC, GO)
REPO = Path(__file__).resolve().parents[2]


def noisy(center: float, n: int, seed: int, spread: float = 0.1) -> list[float]:
    rng = random.Random(seed)
    return [center * (1 + rng.uniform(-spread, spread)) for _ in range(n)]


# ---- the interval --------------------------------------------------------------------------


def test_percentile_interpolates_as_statistics_quantiles() -> None:
    values = sorted(noisy(1.0, 37, 1))
    cuts = statistics.quantiles(values, n=40, method="inclusive")
    assert percentile(values, 0.025) == pytest.approx(cuts[0])
    assert percentile(values, 0.975) == pytest.approx(cuts[-1])
    assert percentile(values, 0.0) == values[0]
    assert percentile(values, 1.0) == values[-1]
    assert percentile([3.0], 0.5) == 3.0


def test_identical_samples_give_a_degenerate_interval_at_the_ratio() -> None:
    # Every resample is the sample itself: the interval is the ratio, exactly.
    ratio = 0.2 / 0.1
    assert bootstrap_ratio_ci([0.2] * 40, [0.1] * 40) == (ratio, ratio)
    # One sample a side (as with --quick's single stdout run): nothing to resample either.
    assert bootstrap_ratio_ci([3.0], [4.0]) == (0.75, 0.75)


def test_a_clearly_faster_runtime_has_its_interval_entirely_below_one() -> None:
    a, b = noisy(0.08, 40, 1), noisy(0.10, 40, 2)
    low, high = bootstrap_ratio_ci(a, b) or (0.0, 0.0)
    assert low <= statistics.median(a) / statistics.median(b) <= high
    assert high < 1.0
    assert low > 0.7


def test_the_same_distribution_gives_an_interval_around_one() -> None:
    low, high = bootstrap_ratio_ci(noisy(0.1, 40, 3), noisy(0.1, 40, 4)) or (0.0, 0.0)
    assert low < 1.0 < high
    assert high - low < 0.2  # ±10 % noise, 40 samples a side: a few percent either way


def test_more_samples_narrow_the_interval() -> None:
    def width(n: int) -> float:
        low, high = bootstrap_ratio_ci(noisy(0.1, n, 5), noisy(0.1, n, 6), resamples=2000) or (
            0.0,
            0.0,
        )
        return high - low

    assert width(160) < width(10)


def test_an_outlier_hardly_moves_the_interval_of_medians() -> None:
    a, b = noisy(0.1, 40, 7), noisy(0.1, 40, 8)
    plain = bootstrap_ratio_ci(a, b)
    spiked = bootstrap_ratio_ci([*a[:-1], 5.0], b)  # one run 50 times slower
    assert plain is not None and spiked is not None
    assert spiked[1] < plain[1] * 1.1


def test_the_seed_makes_the_interval_reproducible() -> None:
    a, b = noisy(0.1, 40, 9), noisy(0.11, 40, 10)
    assert bootstrap_ratio_ci(a, b) == bootstrap_ratio_ci(tuple(a), tuple(b))
    n = 1000  # the rest need not be the full count to show it
    assert bootstrap_ratio_ci(a, b, n, seed=1) == bootstrap_ratio_ci(a, b, n, seed=1)
    assert bootstrap_ratio_ci(a, b, n, seed=1) != bootstrap_ratio_ci(a, b, n, seed=2)


def test_the_interval_does_not_touch_the_global_random_state() -> None:
    random.seed(123)
    expected = random.random()
    random.seed(123)
    bootstrap_ratio_ci(noisy(0.1, 40, 11), noisy(0.1, 40, 12))
    assert random.random() == expected


def test_no_interval_without_samples_or_with_a_zero_time() -> None:
    assert bootstrap_ratio_ci([], [0.1]) is None
    assert bootstrap_ratio_ci([0.1], []) is None
    assert bootstrap_ratio_ci([0.1, 0.2], [0.1, 0.0]) is None


def test_the_bootstrap_is_cheap() -> None:
    a, b = noisy(0.1, 40, 13), noisy(0.1, 40, 14)
    t0 = time.process_time()
    bootstrap_ratio_ci(a, b, resamples=BOOTSTRAP_RESAMPLES)
    # About 0.2 s on a busy 2-core machine; generous, since CI machines vary.
    assert time.process_time() - t0 < 2.0


# ---- the table -----------------------------------------------------------------------------


def test_met_is_decided_by_the_upper_end_of_the_interval() -> None:
    # The median ratio 0.95 is under the target, but the interval reaches above it: not met.
    row = Row("start_median", "start", "ms", 95.0, 100.0, 0, target=1.0, ci95=(0.9, 1.04))
    assert row.ratio == pytest.approx(0.95)
    assert row.compared == 1.04
    assert row.met is False
    assert Row("k", "n", "ms", 95.0, 100.0, 0, target=1.0, ci95=(0.9, 0.99)).met is True


def test_without_an_interval_the_plain_ratio_is_compared() -> None:
    # The memory rows: one measurement each, no interval.
    row = Row("pss_k1", "PSS", "MiB", 11.0, 12.0, 1, target=1.0)
    assert row.compared == pytest.approx(11 / 12)
    assert row.met is True
    assert Row("pss_k1", "PSS", "MiB", 13.0, 12.0, 1, target=1.0).met is False
    assert Row("threads_k1", "threads", "threads", 1, 11, 0).met is None  # no target


def test_a_figure_that_does_not_apply_shows_na_and_has_no_ratio() -> None:
    row = Row("warm", "warm parent", "MiB", 8.25, 0.0, 1, na=(False, True))
    assert (row.cell(0), row.cell(1)) == ("8.2", "n/a")
    assert row.ratio is None and row.met is None
    assert row.as_json()["b"] is None
    assert row.as_json()["not_applicable"] == ["b"]
    # A figure that applies but is missing is a failure, not n/a.
    assert Row("warm", "warm parent", "MiB", None, None, 1).cell(0) == "failed"


def sample(runtime: str, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"runtime": runtime, "seconds": seconds, "ok": True, **extra}


def timed_measure(a: list[float], b: list[float]) -> dict[str, Any]:
    samples = [sample(PYRUNC, 9.0, warmup=True), sample(GO, 9.0, warmup=True)]
    for x, y in zip(a, b, strict=True):
        samples += [sample(PYRUNC, x), sample(GO, y)]
    samples.append({**sample(PYRUNC, 50.0), "ok": False})  # a failed run does not count
    return {
        "summary": {
            PYRUNC: {"median": statistics.median(a), "p90": max(a)},
            GO: {"median": statistics.median(b), "p90": max(b)},
        },
        "samples": samples,
    }


def memory_run(runtime: str, k: int, ksm: bool, per_kb: float, warm_kb: int) -> dict[str, Any]:
    return {
        "runtime": runtime,
        "containers": k,
        "ksm": ksm,
        "ok": True,
        "pss_per_container_kb": per_kb,
        "warm_parent_pss_kb": warm_kb,
        "warm_parent_count": 1 if warm_kb else 0,
        "threads_max": 1 if runtime == PYRUNC else 12,
    }


def fake_result() -> dict[str, Any]:
    fast, slow = noisy(0.08, 40, 20), noisy(0.10, 40, 21)
    return {
        "options": {
            "only": ["start", "exec", "memory", "stdout", "concurrent"],
            "containers": [1, 20],
            "ksm": [False, True],
            "stdout_mib": 1024,
            "concurrent": 50,
        },
        "start": timed_measure(fast, slow),
        "exec": timed_measure(slow, fast),
        "stdout": timed_measure([1.6, 1.7, 1.8], [2.6, 2.7, 2.5]),
        "concurrent": timed_measure([4.0, 4.4], [4.2, 4.3]),
        "memory": {
            "runs": [
                memory_run(rt, k, ksm, per, warm)
                for ksm in (False, True)
                for k in (1, 20)
                for rt, per, warm in (
                    (PYRUNC, 10240.0 / k, 8192 if ksm is False else 4096),
                    (GO, 12288.0 / k**0.5, 0),
                )
            ]
        },
    }


def by_key(table_rows: list[Row]) -> dict[str, Row]:
    return {r.key: r for r in table_rows}


@pytest.fixture(scope="module")
def fake_rows() -> list[Row]:
    # rows() bootstraps four measures in full (about a second here): once for the module.
    return rows(fake_result(), RUNTIMES)


def test_the_rows_carry_intervals_and_issue_10s_targets(fake_rows: list[Row]) -> None:
    got = by_key(fake_rows)
    start = got["start_median"]
    assert start.samples == (40, 40)  # warm-ups and failed runs left out
    assert start.ci95 is not None and start.ci95[1] < 1.0 and start.met is True
    exec_ = got["exec_median"]
    assert exec_.ci95 is not None and exec_.ci95[0] > 1.0 and exec_.met is False
    assert got["stdout_median"].target == LATENCY_TARGETS["stdout"] == 0.8
    assert got["stdout_median"].ci95 is not None
    assert got["concurrent_median"].samples == (2, 2)
    # The targets of issue 10, and nothing else has one.
    targets = {key: r.target for key, r in got.items() if r.target is not None}
    assert targets == {
        "start_median": 1.0,
        "exec_median": 1.0,
        "pss_k1": 1.0,
        "pss_k20": 1.0,
        "stdout_median": 0.8,
        "concurrent_median": 1.0,
    }
    # p90s and memory have no interval.
    assert got["start_p90"].ci95 is None and got["pss_k20"].ci95 is None


def test_the_rows_for_threads_and_the_warm_parent(fake_rows: list[Row]) -> None:
    got = by_key(fake_rows)
    assert (got["threads_k1"].a, got["threads_k1"].b) == (1, 12)
    assert "threads_k20" in got
    warm = got["warm_parent_pss_k20"]
    assert warm.a == 8.0 and warm.na == (False, True) and warm.ratio is None
    assert got["warm_parent_pss_k1_ksm"].a == 4.0
    # With the runtimes the other way round, the n/a side follows the Go shim.
    result = fake_result()
    result["options"]["only"] = ["memory"]
    swapped = by_key(rows(result, (GO, PYRUNC)))
    assert swapped["warm_parent_pss_k1"].na == (True, False)


def test_the_rows_are_reproducible_from_the_json(fake_rows: list[Row]) -> None:
    # The JSON holds the samples; the table made from them again is the same, intervals included.
    assert [r.as_json() for r in rows(fake_result(), RUNTIMES)] == [r.as_json() for r in fake_rows]


def test_both_tables_show_the_interval_and_whether_the_target_is_met(
    fake_rows: list[Row],
) -> None:
    table_rows = fake_rows
    start = by_key(table_rows)["start_median"]
    assert start.ci95 is not None
    interval = f"[{start.ci95[0]:.2f}, {start.ci95[1]:.2f}]"
    text = table(table_rows, RUNTIMES)
    lines = text.splitlines()
    assert "95% interval" in lines[0] and "met" in lines[0]
    line = next(line for line in lines if line.startswith("start `ctr run --rm true`, median"))
    assert interval in line and line.rstrip().endswith("yes")
    warm = next(line for line in lines if line.startswith("PSS of the warm parent alone, K=1,"))
    assert "n/a" in warm
    md = markdown_table(table_rows, RUNTIMES)
    md_line = next(line for line in md.splitlines() if "start `ctr run --rm true`, median" in line)
    assert interval in md_line and md_line.endswith("| yes |")
    assert len({line.count("|") for line in md.splitlines()}) == 1


def test_importing_the_bench_needs_no_matplotlib() -> None:
    # In a fresh interpreter where importing matplotlib fails: bench.run imports it only to draw.
    code = (
        "import sys; sys.modules['matplotlib'] = None; import bench.run; "
        "assert bench.run.bootstrap_ratio_ci([1.0], [2.0]) == (0.5, 0.5)"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
