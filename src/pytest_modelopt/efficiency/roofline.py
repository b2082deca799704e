"""A variant's achieved operations per second, set against the peak of its precision."""

from __future__ import annotations

from typing import Any

from pytest_modelopt.efficiency.peak import Peak


def precision_class(precision: str) -> str:
    """Map a variant's stated precision (``f32``, ``int8 weights, ...``, ``bf16``) to a peak."""
    text = precision.lower()
    if "int8" in text:
        return "int8"
    if "bf16" in text:
        return "bf16"
    if "16" in text:
        return "fp16"
    return "fp32"


def count_flops(model: Any, batch: Any) -> int | None:
    """Floating-point operations of one call of a torch model on ``batch``; None if uncountable."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pytest_modelopt.torchtools import call_model

    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            call_model(model, batch)
    except Exception:  # a model FlopCounterMode cannot trace simply has no roofline figure
        return None
    total = int(counter.get_total_flops())
    return total or None


def roofline(flops: int | None, latency_s: float, peak: Peak | None) -> dict[str, Any]:
    """Set achieved operations per second against the measured peak and the theoretical ceiling.

    Faster than the measured peak is a measurement problem: ``fraction_of_peak`` is then None,
    ``measurement_problem`` says why, and ``achieved_over_peak`` keeps the ratio.
    """
    achieved = flops / latency_s if flops and latency_s > 0 else None
    figures: dict[str, Any] = {
        "flops_per_call": float(flops) if flops else None,
        "achieved_gops": achieved / 1e9 if achieved else None,
        "peak_gops": peak.ops_per_s / 1e9 if peak else None,
        "peak_kernel": peak.kernel if peak else None,
        "ceiling_gops": (peak.ceiling.ops_per_s / 1e9 if peak and peak.ceiling.ops_per_s else None),
        "ceiling": peak.ceiling.describe() if peak else None,
        "fraction_of_peak": achieved / peak.ops_per_s if achieved and peak else None,
        "measurement_problem": None,
    }
    if achieved and peak and achieved > peak.ops_per_s:
        figures["fraction_of_peak"] = None
        figures["achieved_over_peak"] = achieved / peak.ops_per_s
        figures["measurement_problem"] = (
            f"achieved {achieved / 1e9:.1f} GOP/s is {achieved / peak.ops_per_s:.2f}x the "
            f"measured {peak.precision} peak ({peak.ops_per_s / 1e9:.1f} GOP/s, {peak.kernel}; "
            f"theoretical ceiling {peak.ceiling.describe()}): the peak was measured too low, or "
            "the runtime computes fewer operations than counted (Winograd or FFT convolutions)"
        )
    return figures
