"""What one evaluation measured of a variant against the reference: an immutable record."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_modelopt.budget import Measured
from pytest_modelopt.measure import Comparison, MeasureSettings
from pytest_modelopt.metrics import counted_metrics, latency_metrics
from pytest_modelopt.spec import ModelSpec
from pytest_modelopt.variants.base import Variant


@dataclass(frozen=True)
class VariantResult:
    """Everything one evaluation measured of a variant: timing or counts, sizes, accuracy.

    Never changed once made: a second measurement (an inconclusive check measured again) is a
    new result, ``with_comparison``. What a test then asks of it (checks, throughput, operator
    profiles) is kept by its :class:`~pytest_modelopt.variant_contract.VariantContract`.
    """

    spec: ModelSpec
    variant: Variant
    reference: Variant
    comparison: Comparison
    sizes: Mapping[str, int]
    accuracy: Mapping[str, float]
    settings: MeasureSettings
    efficiency: Mapping[str, Any] = field(default_factory=dict)
    gpu_state: Mapping[str, Any] | None = None

    def __repr__(self) -> str:  # pytest shows test arguments: one line, not every field
        return f"<VariantResult {self.label}>"

    @property
    def meter(self) -> str:
        """Return the meter the variant was measured with: ``wall`` or ``instructions``."""
        return self.comparison.meter

    @property
    def technique(self) -> str:
        """Return the name of the technique that built the variant."""
        return self.variant.technique

    @property
    def label(self) -> str:
        """Name the variant in messages: ``model[technique]``."""
        return f"{self.spec.name}[{self.technique}]"

    @property
    def metrics(self) -> dict[str, Measured]:
        """Return every metric a budget can name, as measured (with intervals where they exist).

        Latency metrics or counted ones, depending on the meter; sizes, accuracy and peak memory
        either way.
        """
        if self.meter == "instructions":
            metrics = counted_metrics(self.comparison)
        else:
            metrics = latency_metrics(self.comparison, self.spec.batch_size, self.settings)
        sizes = self.sizes
        metrics["size_bytes"] = Measured(sizes["variant_bytes"])
        metrics["size_ratio"] = Measured(sizes["variant_bytes"] / sizes["reference_bytes"])
        metrics["gzip_size_ratio"] = Measured(
            sizes["variant_gzip_bytes"] / sizes["reference_gzip_bytes"]
        )
        metrics.update({name: Measured(value) for name, value in self.accuracy.items()})
        metrics["peak_memory_mb"] = Measured(self.variant.memory["run_peak_mb"])
        return metrics

    @property
    def threads(self) -> dict[str, Any]:
        """Every thread setting the timing ran with: torch's, and the variant runtime's own."""
        runtime = {k: v for k, v in self.variant.details.items() if "thread" in k}
        return {"torch_intra_op": self.comparison.threads, **runtime}

    def with_comparison(self, comparison: Comparison) -> VariantResult:
        """Return this result with another comparison (the same variants measured again)."""
        return dataclasses.replace(self, comparison=comparison)

    def to_dict(self, *, raw: bool = True) -> dict[str, Any]:
        """Return what was measured as the results JSON records it; ``raw`` includes samples."""
        return {
            "spec": self.spec.name,
            "technique": self.technique,
            "variant": self.variant.describe(),
            "reference": self.reference.describe(),
            "latency": self.comparison.to_dict(raw=raw),
            "sizes": dict(self.sizes),
            "accuracy": dict(self.accuracy),
            "efficiency": dict(self.efficiency),
            "gpu_state": None if self.gpu_state is None else dict(self.gpu_state),
            "threads": self.threads,
            "metrics": {
                name: {"value": m.value, "interval": m.interval, "undecidable": m.undecidable}
                for name, m in self.metrics.items()
            },
            "meter": self.meter,
        }
