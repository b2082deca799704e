"""What one variant's evaluation measured, and the checks of its contract (``expect``)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytest_modelopt.budget import (
    AFTER_BROKEN_BUDGET,
    METER_METRICS,
    Check,
    Measured,
    Verdict,
    format_checks,
    judge_all,
    what_to_do,
)
from pytest_modelopt.errors import BuildError, ContractViolation
from pytest_modelopt.measure import Comparison, MeasureSettings, time_alone
from pytest_modelopt.metrics import batch_of, counted_metrics, latency_metrics, per_second
from pytest_modelopt.readable import hide_plugin_frame
from pytest_modelopt.spec import ModelSpec
from pytest_modelopt.variants.base import Variant
from pytest_modelopt.verdicts import decide


@dataclass
class VariantResult:
    """Everything measured of one variant, and the checks of its contract."""

    spec: ModelSpec
    variant: Variant
    reference: Variant
    comparison: Comparison
    sizes: dict[str, int]
    accuracy: dict[str, float]
    settings: MeasureSettings
    efficiency: dict[str, Any] = field(default_factory=dict)
    gpu_state: dict[str, Any] | None = None
    inconclusive: str = "fail"
    retries: int = 1
    checks: list[Check] = field(default_factory=list)
    throughput: dict[int, Measured] = field(default_factory=dict)
    remeasure: Callable[[], Comparison] | None = field(default=None, repr=False)
    log: Callable[[str], None] = field(default=lambda message: None, repr=False)
    unjudged: list[str] = field(default_factory=list)
    operators: dict[str, Any] = field(default_factory=dict)

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

    def expect(self, **budgets: float | str) -> list[Check]:
        """Check budgets; raise ContractViolation naming each metric if any is broken.

        An inconclusive latency verdict is measured once more (``retries``); if still
        inconclusive, the ``fail`` policy fails the test with the word "inconclusive" and the
        reason, the ``report`` policy lets it pass and reports it as inconclusive. Budgets on
        what the other meter measures (``speedup`` under the instructions meter,
        ``instructions_ratio`` under the wall clock) are not judged: they are listed in
        ``unjudged`` and in the results.
        """
        __tracebackhide__ = hide_plugin_frame  # a failure ends at the user's line, then the table
        budgets = self._judged(budgets)
        decision = decide(
            lambda: judge_all(budgets, self.metrics),
            measure_again=self.measure_again if self.remeasure else None,
            retries=self.retries,
            policy=self.inconclusive,
            log=self.log,
            label=f"{self.label}: inconclusive",
        )
        checks = list(decision.checks)
        self.checks += checks
        if decision.failed:
            table = format_checks(
                checks, f"{self.label}: contract broken ({_names(decision.failed)})"
            )
            raise ContractViolation(f"{table}\n{AFTER_BROKEN_BUDGET}")
        if decision.fails_inconclusive:
            table = format_checks(
                checks,
                f"{self.label}: inconclusive ({_names(decision.undecided)}): the measurements "
                "cannot decide the budget on this machine",
            )
            advice = what_to_do(decision.undecided, self.comparison.elapsed_s)
            raise ContractViolation(f"{table}\n{advice}")
        return checks

    def measure_again(self) -> None:
        """Add rounds to the comparison (``remeasure``): the one place a result's timing changes.

        Both verdict paths (``expect`` and the baseline gate) call it through ``decide`` when a
        check is inconclusive.
        """
        if self.remeasure is None:
            raise RuntimeError(f"{self.label} cannot be measured again: it has no remeasure")
        self.comparison = self.remeasure()

    def _judged(self, budgets: Mapping[str, float | str]) -> dict[str, float | str]:
        other = {
            name for meter, names in METER_METRICS.items() if meter != self.meter for name in names
        }
        for name in sorted(set(budgets) & other):
            note = (
                f"{name}={budgets[name]!r} not judged: the {self.meter} meter does not measure it"
            )
            if note not in self.unjudged:
                self.unjudged.append(note)
                self.log(f"{self.label}: {note}")
        return {name: spec for name, spec in budgets.items() if name not in other}

    def throughput_at(
        self, batch_sizes: Sequence[int], seconds: float = 1.0
    ) -> dict[int, Measured]:
        """Measure the variant's items per second at each batch size, timed alone.

        Batches are the example input's first item repeated; the interval is from the median
        latency's. A batch size the variant cannot run (a fixed input shape, say) raises
        BuildError naming it.
        """
        from pytest_modelopt.stats import median_interval

        figures: dict[int, Measured] = {}
        for size in batch_sizes:
            if size < 1:
                raise ValueError(f"{self.label}: batch sizes must be >= 1, got {size}")
            batch = batch_of(self.spec.example_input, size)
            try:
                self.variant.run(batch)
            except Exception as error:
                raise BuildError(
                    f"{self.label} cannot run a batch of {size}: {type(error).__name__}: "
                    f"{str(error).splitlines()[0][:200]}"
                ) from error
            samples = time_alone(
                functools.partial(self.variant.run, batch),
                self.settings,
                seconds,
                device=self.variant.device,
            )
            p50 = float(np.median(samples))
            low, high = median_interval(samples, self.settings.confidence)
            figures[size] = Measured(
                size / p50, (per_second(size, high * 1e3), per_second(size, low * 1e3))
            )
            self.log(f"{self.label}: batch {size}: {size / p50:.1f} items/s")
        self.throughput.update(figures)
        return figures

    def profile_operators(self) -> dict[str, Any]:
        """Profile the variant's and the reference's time by operator, once.

        See ``pytest_modelopt.profiling``. Taken on the built variants in this process; kept in
        the record (``operators``) and the baseline entry (``top_operators``), where a
        wall-clock regression is explained.
        """
        if not self.operators:
            from pytest_modelopt.profiling import profile_sides

            self.log(f"{self.label}: profiling the variant and the reference by operator")
            self.operators = profile_sides(
                self.variant, self.reference, self.spec.example_input, self.settings.threads
            )
            self.log(f"{self.label}: profiled in {self.operators['seconds']:.1f} s")
        return self.operators

    @property
    def threads(self) -> dict[str, Any]:
        """Every thread setting the timing ran with: torch's, and the variant runtime's own."""
        runtime = {k: v for k, v in self.variant.details.items() if "thread" in k}
        return {"torch_intra_op": self.comparison.threads, **runtime}

    @property
    def verdict(self) -> Verdict | None:
        """Return the worst verdict of the checks so far (FAIL, then INCONCLUSIVE); None if none."""
        verdicts = {check.verdict for check in self.checks}
        for verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.PASS):
            if verdict in verdicts:
                return verdict
        return None

    def to_dict(self, *, raw: bool = True) -> dict[str, Any]:
        """Return the result as the results JSON records it; ``raw`` includes the samples."""
        return {
            "spec": self.spec.name,
            "technique": self.technique,
            "variant": self.variant.describe(),
            "reference": self.reference.describe(),
            "latency": self.comparison.to_dict(raw=raw),
            "sizes": self.sizes,
            "accuracy": self.accuracy,
            "efficiency": self.efficiency,
            "gpu_state": self.gpu_state,
            "threads": self.threads,
            "throughput_at_batch": {
                str(size): {"items_per_s": m.value, "interval": m.interval}
                for size, m in self.throughput.items()
            },
            "metrics": {
                name: {"value": m.value, "interval": m.interval, "undecidable": m.undecidable}
                for name, m in self.metrics.items()
            },
            "checks": [
                {
                    "metric": c.budget.metric.name,
                    "budget": str(c.budget),
                    "measured": c.measured.value,
                    "interval": c.measured.interval,
                    "verdict": c.verdict.value,
                    "reason": c.reason,
                }
                for c in self.checks
            ],
            "verdict": self.verdict.value if self.verdict else None,
            "meter": self.meter,
            "unjudged": self.unjudged,
            "operators": self.operators,
        }


def _names(checks: list[Check]) -> str:
    return ", ".join(check.budget.metric.name for check in checks)
