"""What a run shows: the terminal results table and the environment recorded with results."""

from __future__ import annotations

import importlib.metadata
import math
import platform
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pytest_modelopt.backends import tracked_distributions
from pytest_modelopt.readable import one_line

if TYPE_CHECKING:
    from pytest_modelopt.variant_contract import VariantContract

# Distributions whose versions change what is measured.
_MARKUP = {
    "PASS": {"green": True},
    "passed": {"green": True},
    "FAIL": {"red": True, "bold": True},
    "regressed": {"red": True, "bold": True},
    "INCONCLUSIVE": {"yellow": True},
    "inconclusive": {"yellow": True},
}


def environment() -> dict[str, Any]:
    """Return the Python version, platform, and versions of the packages that change results."""
    versions = {}
    for name in tracked_distributions():
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"python": platform.python_version(), "platform": platform.platform(), **versions}


def benchmark_entry(nodeid: str, result: VariantContract) -> dict[str, Any]:
    """Return one variant in pytest-benchmark's ``benchmarks`` schema.

    So its tools (for example ``pytest-benchmark compare``) read our results: statistics are
    computed by its own Stats class.
    """
    from pytest_benchmark.stats import Stats

    stats = Stats()
    for sample in result.comparison.variant.samples_s:
        stats.update(sample)
    comparison = result.comparison
    return {
        "group": result.spec.name,
        "name": nodeid.split("::")[-1],
        "fullname": nodeid,
        "params": {"technique": result.technique},
        "param": result.technique,
        "extra_info": {
            "speedup": comparison.speedup,
            "speedup_interval": list(comparison.speedup_interval),
            "reference_median_s": comparison.reference.summary().p50,
            "size_bytes": result.sizes["variant_bytes"],
            "verdict": result.verdict.value if result.verdict else None,
        },
        "options": {
            "timer": "perf_counter",
            "disable_gc": True,
            "interleaved_with": result.reference.technique,
        },
        "stats": {**stats.as_dict(), "iterations": 1},
    }


def benchmark_header(created: str) -> dict[str, Any]:
    """pytest-benchmark's top-level fields (machine_info and commit_info from its functions)."""
    import pytest_benchmark
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info
    from pytest_benchmark.utils import get_commit_info

    return {
        "machine_info": pytest_benchmark_generate_machine_info(),
        "commit_info": get_commit_info(),
        "datetime": created,
        "version": pytest_benchmark.__version__,
    }


def results_table(records: Iterable[Mapping[str, Any]]) -> list[tuple[str, dict[str, bool]]]:
    """Return the terminal results table, one line per variant, each with its colours.

    A line shows test, technique, latency, speedup with interval, sizes, accuracy, contract
    verdict and baseline comparison. Records are ``VariantContract.to_dict()`` with the test id
    (the results JSON's ``results``), so workers' results print like local ones.
    """
    header = (
        "test",
        "technique",
        "p50 ms",
        "ref ms",
        "speedup [interval]",
        "size",
        "gzip",
        "accuracy",
        "of peak",
        "verdict",
        "baseline",
    )
    rows: list[tuple[str, ...]] = [header]
    for record in records:
        latency = record["latency"]
        sizes = record["sizes"]
        variant, reference, ratio = _measured_cells(latency)
        rows.append(
            tuple(
                one_line(cell, limit=None)
                for cell in (
                    record["test"].split("::")[-1].split("[")[0],
                    record["technique"],
                    variant,
                    reference,
                    ratio,
                    f"{sizes['variant_bytes'] / sizes['reference_bytes']:.2f}x",
                    f"{sizes['variant_gzip_bytes'] / sizes['reference_gzip_bytes']:.2f}x",
                    _accuracy(record["accuracy"]),
                    _fraction_of_peak(record.get("efficiency", {})),
                    record.get("verdict") or "-",
                    record.get("baseline", {}).get("status", "-"),
                )
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        text = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        lines.append((text.rstrip(), _row_markup(row[-2:]) if index else {"bold": True}))
    return lines


def _measured_cells(latency: Mapping[str, Any]) -> tuple[str, str, str]:
    """Return the variant's and the reference's figure, and the ratio with its interval.

    Milliseconds and the speedup, or (instructions meter) millions of instructions per call and
    their ratio.
    """
    low, high = (_number(x) for x in latency["speedup_interval"])
    if latency.get("meter") == "instructions":
        counts = latency["counts"]
        return (
            f"{counts['variant']['instructions'] / 1e6:.4g}M Ir",
            f"{counts['reference']['instructions'] / 1e6:.4g}M Ir",
            f"{latency['speedup']:.3f}x Ir [{low:.3f}, {high:.3f}]",
        )
    return (
        f"{latency['variant']['stats']['p50'] * 1e3:.3g}",
        f"{latency['reference']['stats']['p50'] * 1e3:.3g}",
        f"{latency['speedup']:.2f}x [{low:.2f}, {high:.2f}]",
    )


def _row_markup(states: tuple[str, ...]) -> dict[str, bool]:
    """Colour the row by the worse of the contract verdict and the baseline comparison."""
    for worst in (("FAIL", "regressed"), ("INCONCLUSIVE", "inconclusive"), ("PASS", "passed")):
        for state in states:
            if state in worst:
                return _MARKUP[state]
    return {}


def _number(value: float | None) -> float:
    return math.inf if value is None else value


def _accuracy(accuracy: dict[str, float]) -> str:
    if "accuracy" in accuracy:
        return f"{accuracy['accuracy']:.1%} ({-accuracy['accuracy_drop'] * 100:+.1f} pt)"
    if "top1_agreement" in accuracy:
        return f"agree {accuracy['top1_agreement']:.1%}"
    return f"max err {accuracy['max_abs_error']:.2g}"


def _fraction_of_peak(efficiency: Mapping[str, Any]) -> str:
    """Show the fraction of the measured peak.

    A variant faster than the peak is a measurement problem (a peak measured too low), flagged
    with the ratio and never shown as a fraction, also in results files written before the flag
    existed.
    """
    ratio = efficiency.get("achieved_over_peak")
    fraction = efficiency.get("fraction_of_peak")
    if ratio is None and fraction is not None and fraction > 1:
        ratio = fraction
    if ratio is not None:
        return f"BAD PEAK ({ratio:.2f}x peak)"
    return f"{fraction:.0%}" if fraction is not None else "-"
