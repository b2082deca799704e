"""What a run shows: the terminal results table and the environment recorded with results."""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_modelopt.evaluation import VariantResult

# Distributions whose versions change what is measured.
TRACKED_DISTRIBUTIONS = (
    "pytest-modelopt",
    "torch",
    "timm",
    "numpy",
    "onnx",
    "onnxruntime",
    "openvino",
    "nncf",
    "tensorflow",
    "tensorflow-cpu",
    "ai-edge-litert",
)
_MARKUP = {"PASS": {"green": True}, "FAIL": {"red": True, "bold": True}}


def environment() -> dict[str, Any]:
    versions = {}
    for name in TRACKED_DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"python": platform.python_version(), "platform": platform.platform(), **versions}


def benchmark_entry(nodeid: str, result: VariantResult) -> dict[str, Any]:
    """One variant in pytest-benchmark's ``benchmarks`` schema, so that its tools (for example
    ``pytest-benchmark compare``) read our results: statistics computed by its own Stats class."""
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
        "options": {"timer": "perf_counter", "disable_gc": True, "interleaved_with": "eager"},
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


def results_table(
    results: Iterable[tuple[str, VariantResult]],
) -> list[tuple[str, dict[str, bool]]]:
    """One line per variant: test, technique, latency, speedup with interval, sizes, accuracy."""
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
    )
    rows = [header]
    for nodeid, result in results:
        comparison = result.comparison
        low, high = comparison.speedup_interval
        sizes = result.sizes
        rows.append(
            (
                nodeid.split("::")[-1].split("[")[0],
                result.technique,
                f"{comparison.variant.summary().p50 * 1e3:.3g}",
                f"{comparison.reference.summary().p50 * 1e3:.3g}",
                f"{comparison.speedup:.2f}x [{low:.2f}, {high:.2f}]",
                f"{sizes['variant_bytes'] / sizes['reference_bytes']:.2f}x",
                f"{sizes['variant_gzip_bytes'] / sizes['reference_gzip_bytes']:.2f}x",
                _accuracy(result.accuracy),
                _fraction(result.efficiency.get("fraction_of_peak")),
                result.verdict.value if result.verdict else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        text = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        lines.append((text.rstrip(), _MARKUP.get(row[-1], {}) if index else {"bold": True}))
    return lines


def _accuracy(accuracy: dict[str, float]) -> str:
    if "accuracy" in accuracy:
        return f"{accuracy['accuracy']:.1%} ({-accuracy['accuracy_drop'] * 100:+.1f} pt)"
    if "top1_agreement" in accuracy:
        return f"agree {accuracy['top1_agreement']:.1%}"
    return f"max err {accuracy['max_abs_error']:.2g}"


def _fraction(value: float | None) -> str:
    return f"{value:.0%}" if value is not None else "-"
