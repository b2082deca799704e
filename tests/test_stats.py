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


def _walsh_averages(x: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(x.size)
    return np.sort((x[i] + x[j]) / 2)


@pytest.mark.parametrize("n", [1, 2, 7, 50, 301])
def test_walsh_order_statistics_match_brute_force(n: int) -> None:
    from pytest_modelopt.stats import _walsh_order

    x = np.sort(np.random.default_rng(n).standard_t(3, n))
    walsh = _walsh_averages(x)
    for k in {0, walsh.size // 3, walsh.size // 2, walsh.size - 1}:
        assert _walsh_order(x, k) == pytest.approx(walsh[k], abs=1e-9)


def test_ratio_estimate_is_the_hodges_lehmann_estimate_on_the_log_scale() -> None:
    from pytest_modelopt.stats import ratio_estimate

    ratios = np.random.default_rng(2).lognormal(0.1, 0.05, 200)
    estimate, _ = ratio_estimate(ratios, 0.99)
    assert estimate == pytest.approx(np.exp(np.median(_walsh_averages(np.log(ratios)))))


def _with_positive_rank_sum(n: int, total: int) -> np.ndarray:
    """Values 1..n whose positive ones' ranks sum to ``total`` (the signed-rank statistic)."""
    signs = -np.ones(n)
    for rank in range(n, 0, -1):
        if rank <= total:
            signs[rank - 1], total = 1, total - rank
    return signs * np.arange(1, n + 1)


@pytest.mark.parametrize(("n", "method"), [(10, "exact"), (25, "exact"), (60, "exact")])
def test_signed_rank_critical_value_matches_scipys_test(n: int, method: str) -> None:
    from pytest_modelopt.stats import signed_rank_critical

    alpha = 0.01
    k = signed_rank_critical(n, alpha)
    at = scipy_stats.wilcoxon(_with_positive_rank_sum(n, k), method=method)
    above = scipy_stats.wilcoxon(_with_positive_rank_sum(n, k + 1), method=method)
    assert at.statistic == k
    assert at.pvalue <= alpha < above.pvalue


def test_signed_rank_critical_value_for_many_rounds_matches_the_normal_test() -> None:
    from pytest_modelopt.stats import signed_rank_critical

    n, alpha = 400, 0.001
    k = signed_rank_critical(n, alpha)
    at = scipy_stats.wilcoxon(_with_positive_rank_sum(n, k), method="approx", correction=True)
    above = scipy_stats.wilcoxon(
        _with_positive_rank_sum(n, k + 1), method="approx", correction=True
    )
    assert at.pvalue <= alpha < above.pvalue


def test_too_few_rounds_give_an_unbounded_ratio_interval() -> None:
    from pytest_modelopt.stats import ratio_estimate

    assert ratio_estimate([1.0, 1.1, 0.9, 1.0], 0.999)[1] == (-math.inf, math.inf)


def test_ratio_interval_covers_at_its_confidence() -> None:
    from pytest_modelopt.stats import ratio_estimate

    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(400):
        _, (low, high) = ratio_estimate(1.2 * rng.lognormal(0, 0.1, 40), 0.9)
        covered += low <= 1.2 <= high
    assert 0.86 <= covered / 400 <= 0.95


def test_ratio_interval_is_narrower_than_the_medians_on_normal_noise() -> None:
    """The reason for Hodges-Lehmann: the same rounds give a narrower interval (about 1.2x
    narrower on normal log-ratios; the median's sign-test interval needs 1.5x the rounds)."""
    from pytest_modelopt.stats import ratio_estimate

    rng = np.random.default_rng(5)
    widths = []
    for _ in range(50):
        ratios = rng.lognormal(0, 0.05, 300)
        estimate, interval = ratio_estimate(ratios, 0.999)
        widths.append(
            relative_width(float(np.median(ratios)), median_interval(ratios, 0.999))
            / relative_width(estimate, interval)
        )
    assert np.median(widths) > 1.1


def test_the_counted_ratio_is_a_geometric_mean_with_a_t_interval() -> None:
    from pytest_modelopt.stats import student_t_ratio_estimate

    ratios = [1.010, 1.011, 1.013]
    estimate, (low, high) = student_t_ratio_estimate(ratios, 0.999)
    logs = np.log(ratios)
    assert estimate == pytest.approx(math.exp(logs.mean()))
    half = scipy_stats.t.ppf(0.9995, 2) * logs.std(ddof=1) / math.sqrt(3)
    assert (low, high) == pytest.approx((estimate * math.exp(-half), estimate * math.exp(half)))
    # counts that agree exactly decide at once; a single round decides nothing
    assert student_t_ratio_estimate([2.0, 2.0, 2.0], 0.999) == (2.0, (2.0, 2.0))
    assert student_t_ratio_estimate([2.0], 0.999)[1] == (-math.inf, math.inf)


def test_the_counted_ratio_interval_covers_at_its_confidence() -> None:
    from pytest_modelopt.stats import student_t_ratio_estimate

    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(1000):
        _, (low, high) = student_t_ratio_estimate(4.0 * rng.lognormal(0, 0.001, 3), 0.9)
        covered += low <= 4.0 <= high
    assert 0.87 <= covered / 1000 <= 0.93
