"""The statistics of bench/run.py: the bootstrap interval of a latency ratio."""

from __future__ import annotations

import random
import statistics
import time

import pytest

from bench.run import (
    BOOTSTRAP_RESAMPLES,
    bootstrap_ratio_ci,
    percentile,
)


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
