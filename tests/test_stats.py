import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from pytest_modelopt.stats import median_interval, quantile_interval, relative_width, summarize


def test_summary_matches_numpy() -> None:
    x = np.random.default_rng(1).lognormal(mean=-6, sigma=0.3, size=1000)
    summary = summarize(x)
    assert summary.n == 1000
    assert summary.mean == pytest.approx(np.mean(x))
    assert summary.stdev == pytest.approx(np.std(x, ddof=1))
    assert summary.p50 == pytest.approx(np.median(x))
    assert summary.p90 == pytest.approx(np.percentile(x, 90))
    assert summary.p99 == pytest.approx(np.percentile(x, 99))
    assert summary.iqr == pytest.approx(scipy_stats.iqr(x))
    assert summary.min == x.min()
    assert summary.relative_iqr == pytest.approx(scipy_stats.iqr(x) / np.median(x))


def test_percentiles_need_enough_samples() -> None:
    assert not summarize(np.ones(63)).reliable(90)
    assert summarize(np.ones(64)).reliable(90)
    assert not summarize(np.ones(661)).reliable(99)
    assert summarize(np.ones(662)).reliable(99)


def test_median_interval_is_the_exact_order_statistic_interval() -> None:
    x = np.arange(1.0, 101.0)
    low, high = median_interval(x, 0.95)
    # The textbook distribution-free 95% interval of the median for n=100 is [x(40), x(61)].
    assert (low, high) == (40.0, 61.0)


def test_median_interval_covers_at_its_confidence() -> None:
    rng = np.random.default_rng(7)
    covered = sum(
        low <= 1.0 <= high
        for low, high in (median_interval(rng.normal(1.0, 0.2, 50), 0.9) for _ in range(400))
    )
    assert 0.86 <= covered / 400 <= 0.97  # nominal 0.9, exact intervals are conservative


def test_too_few_samples_give_an_unbounded_interval() -> None:
    low, high = quantile_interval([1.0, 2.0, 3.0], 0.5, 0.999)
    assert math.isinf(low)
    assert math.isinf(high)
    assert relative_width(2.0, (low, high)) == math.inf


def test_empty_samples_are_rejected() -> None:
    with pytest.raises(ValueError, match="no samples"):
        summarize([])
