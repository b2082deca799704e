"""The metrics a budget can name, computed from what was measured.

Accuracy against the reference and the labels, a regressor's squared error, the wall-clock
meter's speedup and latency percentiles, and the counting meter's instructions and cycles.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_modelopt.budget import Measured
from pytest_modelopt.errors import BuildError

if TYPE_CHECKING:
    from pytest_modelopt.measure import Comparison, MeasureSettings

# Counted calls of a tiny torch model vary by about 1% (glibc malloc, CPython's call paths); more
# than this between rounds means the work itself changes from call to call.
COUNT_NOISE = 0.05


def accuracy_metrics(
    outputs: list[np.ndarray], reference: list[np.ndarray], labels: list[Any]
) -> dict[str, float]:
    """Agreement with the reference, and the task metric where labels are given."""
    out = np.concatenate([o.reshape(len(o), -1) for o in outputs])
    ref = np.concatenate([r.reshape(len(r), -1) for r in reference])
    if out.shape != ref.shape:
        raise BuildError(f"variant output shape {out.shape} differs from reference {ref.shape}")
    metrics = {"max_abs_error": float(np.max(np.abs(out - ref))) if out.size else 0.0}
    if out.shape[1] > 1:
        top1, ref_top1 = out.argmax(axis=1), ref.argmax(axis=1)
        metrics["top1_agreement"] = float(np.mean(top1 == ref_top1))
        if all(y is not None for y in labels):
            truth = np.concatenate([to_numpy(y).reshape(-1) for y in labels])
            metrics["accuracy"] = float(np.mean(top1 == truth))
            metrics["reference_accuracy"] = float(np.mean(ref_top1 == truth))
            metrics["accuracy_drop"] = metrics["reference_accuracy"] - metrics["accuracy"]
            if metrics["reference_accuracy"] > 0:
                metrics["relative_accuracy_drop"] = (
                    metrics["accuracy_drop"] / metrics["reference_accuracy"]
                )
    elif out.shape[1] == 1 and labels and all(y is not None for y in labels):
        metrics.update(regression_metrics(out[:, 0], ref[:, 0], labels))
    return metrics


def regression_metrics(out: np.ndarray, ref: np.ndarray, labels: list[Any]) -> dict[str, float]:
    """Mean squared error of a single-output regressor against its targets, and the change."""
    truth = np.concatenate([to_numpy(y).reshape(-1) for y in labels])
    if truth.shape != out.shape:
        raise BuildError(
            f"{truth.size} regression targets for {out.size} outputs: give one label per item"
        )
    mse, reference_mse = float(np.mean((out - truth) ** 2)), float(np.mean((ref - truth) ** 2))
    metrics = {"mse": mse, "reference_mse": reference_mse, "mse_increase": mse - reference_mse}
    if reference_mse > 0:
        metrics["relative_mse_increase"] = (mse - reference_mse) / reference_mse
    return metrics


def counted_metrics(comparison: Comparison) -> dict[str, Measured]:
    """Return the counting meter's metrics.

    The instructions ratio with its interval over the rounds, the variant's instructions and
    estimated cycles per call, and the cycles ratio.
    """
    variant, reference = comparison.counts["variant"], comparison.counts["reference"]
    noisy = (
        f"counts vary between rounds: IQR/median of the per-round ratios {comparison.noise:.1%} "
        f"> {COUNT_NOISE:.0%}: a call's work is not the same every time (threads? a cache that "
        "fills over the calls?)"
        if comparison.noise > COUNT_NOISE
        else None
    )
    cycles_ratio = reference["estimated_cycles"] / max(variant["estimated_cycles"], 1.0)
    return {
        "instructions_ratio": Measured(comparison.speedup, comparison.speedup_interval, noisy),
        "instructions_per_call": Measured(variant["instructions"]),
        "estimated_cycles": Measured(variant["estimated_cycles"]),
        "cycles_ratio": Measured(cycles_ratio),
    }


def latency_metrics(
    comparison: Comparison, batch_size: int, settings: MeasureSettings
) -> dict[str, Measured]:
    """Speedup with its interval, and the variant's absolute latency percentiles."""
    from pytest_modelopt.stats import quantile_interval

    noise = comparison.noise
    noisy = (
        f"too noisy to judge: IQR/median of the per-round speedups {noise:.0%} > "
        f"{settings.noise_threshold:.0%}"
        if noise > settings.noise_threshold
        else None
    )
    samples = comparison.variant.samples_s
    summary = comparison.variant.summary()
    metrics = {
        "speedup": Measured(comparison.speedup, comparison.speedup_interval, noisy),
    }
    for percentile in (50, 90, 99):
        low, high = quantile_interval(samples, percentile / 100, settings.confidence)
        reason = noisy
        if not summary.reliable(percentile):
            reason = (
                f"p{percentile} is indicative only: {summary.n} samples, a verdict needs "
                f"at least {_min_samples(percentile)}"
            )
        value = getattr(summary, f"p{percentile}")
        metrics[f"latency_p{percentile}_ms"] = Measured(
            value * 1e3, (low * 1e3, high * 1e3), reason
        )
    p50_low, p50_high = metrics["latency_p50_ms"].interval or (0.0, math.inf)
    metrics["throughput"] = Measured(
        batch_size / summary.p50,
        (per_second(batch_size, p50_high), per_second(batch_size, p50_low)),
        noisy,
    )
    return metrics


def batch_of(example: Any, size: int) -> Any:
    """Make a batch of ``size`` items: the example's first item repeated (tensors and arrays)."""
    if isinstance(example, tuple):
        return tuple(batch_of(item, size) for item in example)
    first = example[:1]
    if hasattr(first, "repeat") and hasattr(first, "dim"):  # a torch tensor
        return first.repeat(size, *([1] * (first.dim() - 1)))
    return np.repeat(np.asarray(first), size, axis=0)


def to_numpy(output: Any) -> np.ndarray:
    """Return a model output (tensor, array, nested list, or tuple led by one) as a float array."""
    if isinstance(output, tuple) and output:
        output = output[0]  # multi-output models: the first output is the prediction
    if hasattr(output, "detach"):
        output = output.detach().float().cpu().numpy()
    return np.asarray(output, dtype=float)


def per_second(batch_size: int, latency_ms: float) -> float:
    """Items per second of a batch taking ``latency_ms``; an unbounded latency gives zero."""
    if latency_ms <= 0:
        return math.inf
    return batch_size / (latency_ms / 1e3) if math.isfinite(latency_ms) else 0.0


def _min_samples(percentile: int) -> int:
    from pytest_modelopt.stats import MIN_SAMPLES_FOR_PERCENTILE

    return MIN_SAMPLES_FOR_PERCENTILE[percentile]
