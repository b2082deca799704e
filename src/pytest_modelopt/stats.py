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
        """IQR / median: the noise measure behind the 'too noisy to judge' verdict."""
        return self.iqr / self.p50 if self.p50 > 0 else math.inf

    def reliable(self, percentile: int) -> bool:
        return self.n >= MIN_SAMPLES_FOR_PERCENTILE[percentile]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "relative_iqr": self.relative_iqr}


def summarize(samples: ArrayLike) -> Summary:
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
    return quantile_interval(samples, 0.5, confidence)


def relative_width(estimate: float, interval: tuple[float, float]) -> float:
    low, high = interval
    if estimate <= 0 or not (math.isfinite(low) and math.isfinite(high)):
        return math.inf
    return (high - low) / estimate
