"""How far a metric may move from its baseline: ``Tolerances`` and the marker's overrides.

Also how far a recorded choice (the ``modelopt_best`` marker) may be beaten before it is a
regression, in the units of its objective's metric (``choice_tolerance``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Tolerances:
    """How far a metric may move from its baseline before it is a regression."""

    # Between sessions on one quiet 2-core VM, torch-vs-torch speedups of the same build moved by
    # up to 6% with intervals of 1 to 2%: a 5% default cried wolf, 10% still catches 20%.
    speedup: float = 0.10
    size: float = 0.01
    accuracy: float = 0.005
    latency: float | None = None
    # Per-call counts of one build moved by up to 0.6% between processes (a tiny torch MLP; a
    # pure-Python model 0.006%): docs/architecture.md, "Meters".
    instructions: float = 0.01

    MARKER_KEYWORDS: ClassVar[tuple[str, ...]] = (
        "speedup_tolerance",
        "size_tolerance",
        "accuracy_tolerance",
        "latency_tolerance",
        "instructions_tolerance",
    )

    def override(self, where: str, **keywords: Any) -> Tolerances:
        """Return these tolerances with a marker's keywords applied; a bad keyword is an error."""
        unknown = sorted(set(keywords) - set(self.MARKER_KEYWORDS))
        if unknown:
            raise ValueError(
                f"{where}: @pytest.mark.modelopt_baseline takes {', '.join(self.MARKER_KEYWORDS)}"
                f"; got unknown {', '.join(unknown)}"
            )
        changes: dict[str, float | None] = {}
        for keyword, value in keywords.items():
            if value is None and keyword == "latency_tolerance":
                changes["latency"] = None
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(
                    f"{where}: modelopt_baseline({keyword}={value!r}): give a number >= 0 "
                    "(a fraction: 0.05 is 5%; accuracy_tolerance is in points of 1.0)"
                )
            changes[keyword.removesuffix("_tolerance")] = float(value)
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def choice_tolerance(metric: str, tolerances: Tolerances) -> tuple[float, bool]:
    """Return how far a recorded choice may be beaten before it is a regression.

    For an objective's metric: a fraction (speedup tolerance for speed, instructions for counts,
    size for bytes), or, for an accuracy metric, points of 1.0 (``absolute``).
    """
    if metric in {
        "instructions_ratio",
        "instructions_per_call",
        "estimated_cycles",
        "cycles_ratio",
    }:
        return tolerances.instructions, False
    if metric in {"size_bytes", "size_ratio", "gzip_size_ratio"}:
        return tolerances.size, False
    if metric in {"accuracy", "top1_agreement", "accuracy_drop", "relative_accuracy_drop"}:
        return tolerances.accuracy, True
    return tolerances.speedup, False
