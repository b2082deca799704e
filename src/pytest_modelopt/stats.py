"""Summary statistics and distribution-free confidence intervals of latency samples."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

# Fewest samples for which a percentile may decide a verdict (MLPerf LoadGen's early-stopping
# rule: below these, the percentile is shown as indicative only).
MIN_SAMPLES_FOR_PERCENTILE = {50: 1, 90: 64, 99: 662}


@dataclass(frozen=True)
class Summary:
    """Statistics of one set of latency samples, in seconds."""

    n: int
    mean: float
    stdev: float
    min: float
    max: float
    p50: float
    p90: float
    p99: float
    iqr: float

    @property
    def relative_iqr(self) -> float:
        """IQR / median (of the per-round speedups, it decides 'too noisy to judge')."""
        return self.iqr / self.p50 if self.p50 > 0 else math.inf

    def reliable(self, percentile: int) -> bool:
        """Return whether there are enough samples for ``percentile`` to decide a verdict."""
        return self.n >= MIN_SAMPLES_FOR_PERCENTILE[percentile]

    def to_dict(self) -> dict[str, Any]:
        """Return the statistics, relative IQR included, as JSON-ready values."""
        return {**asdict(self), "relative_iqr": self.relative_iqr}


def summarize(samples: ArrayLike) -> Summary:
    """Summarize latency samples (seconds); no samples is a ValueError."""
    x = np.asarray(samples, dtype=float)
    if x.size == 0:
        raise ValueError("no samples to summarize")
    q25, p50, q75, p90, p99 = np.percentile(x, [25, 50, 75, 90, 99])
    return Summary(
        n=int(x.size),
        mean=float(x.mean()),
        stdev=float(x.std(ddof=1)) if x.size > 1 else 0.0,
        min=float(x.min()),
        max=float(x.max()),
        p50=float(p50),
        p90=float(p90),
        p99=float(p99),
        iqr=float(q75 - q25),
    )


def quantile_interval(
    samples: ArrayLike, quantile: float, confidence: float
) -> tuple[float, float]:
    """Exact, distribution-free confidence interval of a quantile (binomial order statistics).

    Too few samples for the requested confidence give an unbounded side (-inf or inf).
    """
    from scipy import stats

    x = np.asarray(samples, dtype=float)
    if x.size == 0:
        return (-math.inf, math.inf)
    interval = stats.quantile_test(x, q=float(np.median(x)), p=quantile).confidence_interval(
        confidence
    )
    low, high = float(interval.low), float(interval.high)
    return (-math.inf if math.isnan(low) else low, math.inf if math.isnan(high) else high)


def median_interval(samples: ArrayLike, confidence: float) -> tuple[float, float]:
    """Return the distribution-free confidence interval of the samples' median."""
    return quantile_interval(samples, 0.5, confidence)


def relative_width(estimate: float, interval: tuple[float, float]) -> float:
    """Return the interval's width relative to the estimate; inf when it cannot be computed.

    That is, when the estimate is not positive or the interval is unbounded.
    """
    low, high = interval
    if estimate <= 0 or not (math.isfinite(low) and math.isfinite(high)):
        return math.inf
    return (high - low) / estimate


# Rounds up to which the signed-rank distribution is computed exactly; above, its normal
# approximation (as scipy.stats.wilcoxon does) is accurate to well below a rank.
EXACT_SIGNED_RANK_MAX_N = 60


def ratio_estimate(ratios: ArrayLike, confidence: float) -> tuple[float, tuple[float, float]]:
    """Estimate the speedup from per-round ratios, with its confidence interval.

    The Hodges-Lehmann estimate of the log-ratios (the median of all pairwise means, Walsh
    averages) and the interval from inverting the Wilcoxon signed-rank test, back on the ratio
    scale. Each round times both sides in a random order, so a round's log-ratio is symmetric
    about the true one: what this interval assumes. It is about 1.5 times as efficient as the
    median's sign-test interval on normal-like data (fewer rounds for the same width, which
    matters most between runtimes, where a round is two blocks of calls) and still robust to
    outliers (29% of the rounds may be arbitrarily wrong). Too few rounds give (-inf, inf).
    """
    x = np.log(np.asarray(ratios, dtype=float))
    x = np.sort(x[np.isfinite(x)])
    n = x.size
    if n == 0:
        return math.nan, (-math.inf, math.inf)
    pairs = n * (n + 1) // 2
    estimate = math.exp(0.5 * (_walsh_order(x, (pairs - 1) // 2) + _walsh_order(x, pairs // 2)))
    k = signed_rank_critical(n, 1 - confidence)
    if k < 0:
        return estimate, (-math.inf, math.inf)
    return estimate, (math.exp(_walsh_order(x, k)), math.exp(_walsh_order(x, pairs - 1 - k)))


def student_t_ratio_estimate(
    ratios: ArrayLike, confidence: float
) -> tuple[float, tuple[float, float]]:
    """Estimate a ratio of counted rounds: the geometric mean, with a Student's t interval.

    The interval is Student's t interval of the log-ratios, back on the ratio scale.

    For instruction counts, which differ between calls only by an allocator's or a lazy cache's
    odd extra work, a rank interval wastes rounds: at 99.9% it needs 11 whatever the spread, and
    a counted round of a large model takes minutes under valgrind. The t interval is finite from
    two rounds and as narrow as the counts agree: three rounds spread by 0.01% give a 99.9%
    interval about 0.4% wide. Counts that vary widen it, and the engine adds rounds.
    """
    from scipy import stats

    x = np.log(np.asarray(ratios, dtype=float))
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, (-math.inf, math.inf)
    mean = float(x.mean())
    if x.size < 2:
        return math.exp(mean), (-math.inf, math.inf)
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1)) * float(x.std(ddof=1))
    half /= math.sqrt(x.size)
    return math.exp(mean), (math.exp(mean - half), math.exp(mean + half))


ESTIMATORS = {"signed_rank": ratio_estimate, "student_t": student_t_ratio_estimate}


def fewest_rounds(confidence: float) -> int:
    """Return the fewest rounds whose signed-rank interval is finite at ``confidence``.

    11 at 99.9%.
    """
    n = 1
    while signed_rank_critical(n, 1 - confidence) < 0:
        n += 1
    return n


def signed_rank_critical(n: int, alpha: float) -> int:
    """Return the largest k with P(T <= k) <= alpha / 2 for the signed-rank statistic T of n values.

    -1 if none. The interval runs from the (k+1)-th smallest Walsh average to the (k+1)-th
    largest.
    """
    from scipy import stats

    if n <= EXACT_SIGNED_RANK_MAX_N:
        counts = np.array([1.0])
        for rank in range(1, n + 1):  # coefficients of prod(1 + z**rank): ways to reach each T
            counts = np.concatenate([counts, np.zeros(rank)]) + np.concatenate(
                [np.zeros(rank), counts]
            )
        cdf = np.cumsum(counts) / counts.sum()
        return int(np.searchsorted(cdf, alpha / 2, side="right")) - 1
    mean, sd = n * (n + 1) / 4, math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    return math.floor(mean + float(stats.norm.ppf(alpha / 2)) * sd - 0.5)


def _walsh_order(sorted_x: np.ndarray, k: int) -> float:
    """Return the k-th smallest (0-based) of the Walsh averages (x_i + x_j) / 2, i <= j.

    Without building all n(n+1)/2 of them: bisection on the value, counting pairs below it.
    """
    n = sorted_x.size
    index = np.arange(n)

    def below(value: float) -> int:  # how many Walsh averages are <= value
        ends = np.searchsorted(sorted_x, 2 * value - sorted_x, side="right")
        return int(np.maximum(ends - index, 0).sum())

    low, high = float(sorted_x[0]), float(sorted_x[-1])
    while high - low > 1e-10:  # log-ratios: 1e-10 is a ratio known to 1e-10, relative
        middle = 0.5 * (low + high)
        if below(middle) >= k + 1:
            high = middle
        else:
            low = middle
    return high
