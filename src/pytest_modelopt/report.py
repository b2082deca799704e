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
