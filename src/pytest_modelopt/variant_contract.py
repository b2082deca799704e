"""One variant's contract in one test: its measured result and what the test asked of it.

The result (:class:`~pytest_modelopt.variant_result.VariantResult`) is immutable. The contract
is where a test's questions accumulate: the checks of each ``expect``, the budgets one meter
cannot judge, throughput at other batch sizes, the profile by operator. When a check is
inconclusive it measures again through ``remeasure`` (the session wraps it in its timing lock
when it makes the contract) and holds the new result from then on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
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
from pytest_modelopt.metrics import batch_of, per_second
from pytest_modelopt.readable import hide_plugin_frame
from pytest_modelopt.spec import ModelSpec
from pytest_modelopt.variant_result import VariantResult
from pytest_modelopt.variants.base import Variant
from pytest_modelopt.verdicts import decide


class VariantContract:
    """A measured variant under a test's contract: ``expect`` its budgets, ask for more figures.

    The fixture ``modelopt_variant`` and ``Evaluator.evaluate`` return one. What was measured is
    read through (``speedup`` is in ``metrics``, ``sizes``, ``accuracy``, ...) from ``result``.
    """

    def __init__(
        self,
        result: VariantResult,
        *,
        remeasure: Callable[[], Comparison] | None = None,
        inconclusive: str = "fail",
        retries: int = 1,
        log: Callable[[str], None] = lambda message: None,
    ) -> None:
        self._result = result
        self._remeasure = remeasure
        self.inconclusive = inconclusive
        self.retries = retries
        self.log = log
        self._checks: list[Check] = []
        self._unjudged: list[str] = []
        self._throughput: dict[int, Measured] = {}
        self._operators: dict[str, Any] = {}

    def __repr__(self) -> str:  # pytest shows test arguments: one line, not every field
        return f"<VariantContract {self.label}>"

    # -- what was measured, read through from the result --------------------------------------

    @property
    def result(self) -> VariantResult:
        """Return the latest measurement (a new one after each ``measure_again``)."""
        return self._result

    @property
    def spec(self) -> ModelSpec:
        """Return the model's spec."""
        return self._result.spec

    @property
    def variant(self) -> Variant:
        """Return the built variant."""
        return self._result.variant

    @property
    def reference(self) -> Variant:
        """Return the reference it was measured against."""
        return self._result.reference

    @property
    def comparison(self) -> Comparison:
        """Return the latest timing (or counting) against the reference."""
        return self._result.comparison

    @property
    def settings(self) -> MeasureSettings:
        """Return the settings the variant was measured with."""
        return self._result.settings

    @property
    def sizes(self) -> Mapping[str, int]:
        """Return the variant's and the reference's sizes in bytes, raw and gzipped."""
        return self._result.sizes

    @property
    def accuracy(self) -> Mapping[str, float]:
        """Return the accuracy metrics (agreement with the reference, on labels if given)."""
        return self._result.accuracy

    @property
    def efficiency(self) -> Mapping[str, Any]:
        """Return the roofline figures (reached rate against the machine's peak)."""
        return self._result.efficiency

    @property
    def meter(self) -> str:
        """Return the meter: ``wall`` or ``instructions``."""
        return self._result.meter

    @property
    def technique(self) -> str:
        """Return the name of the technique that built the variant."""
        return self._result.technique

    @property
    def label(self) -> str:
        """Name the variant in messages: ``model[technique]``."""
        return self._result.label

    @property
    def metrics(self) -> dict[str, Measured]:
        """Return every metric a budget can name, from the latest measurement."""
        return self._result.metrics

    @property
    def threads(self) -> dict[str, Any]:
        """Return every thread setting the timing ran with: torch's, and the runtime's own."""
        return self._result.threads

    @property
    def gpu_state(self) -> Mapping[str, Any] | None:
        """Return the GPU's clocks and temperature when it was measured (None on a CPU)."""
        return self._result.gpu_state

    # -- what the test asked ------------------------------------------------------------------

    @property
    def checks(self) -> tuple[Check, ...]:
        """Return every check made so far, in order."""
        return tuple(self._checks)

    @property
    def unjudged(self) -> tuple[str, ...]:
        """Return the budgets the meter does not measure, each once, with why."""
        return tuple(self._unjudged)

    @property
    def throughput(self) -> Mapping[int, Measured]:
        """Return the items per second measured at each batch size (``throughput_at``)."""
        return dict(self._throughput)

    @property
    def operators(self) -> Mapping[str, Any]:
        """Return the profile by operator, once taken (``profile_operators``); else empty."""
        return self._operators

    @property
    def verdict(self) -> Verdict | None:
        """Return the worst verdict of the checks so far (FAIL, then INCONCLUSIVE); None if none."""
        verdicts = {check.verdict for check in self._checks}
        for verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.PASS):
            if verdict in verdicts:
                return verdict
        return None

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
            measure_again=self.measure_again if self._remeasure else None,
            retries=self.retries,
            policy=self.inconclusive,
            log=self.log,
            label=f"{self.label}: inconclusive",
        )
        checks = list(decision.checks)
        self._checks += checks
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

    @property
    def can_measure_again(self) -> bool:
        """Return whether ``measure_again`` can add rounds (the evaluation left a way to)."""
        return self._remeasure is not None

    def measure_again(self) -> None:
        """Measure the same variants again: the one place a contract's result is replaced.

        Both verdict paths (``expect`` and the baseline gate) call it through ``decide`` when a
        check is inconclusive.
        """
        if self._remeasure is None:
            raise RuntimeError(f"{self.label} cannot be measured again: it has no remeasure")
        self._result = self._result.with_comparison(self._remeasure())

    def _judged(self, budgets: Mapping[str, float | str]) -> dict[str, float | str]:
        other = {
            name for meter, names in METER_METRICS.items() if meter != self.meter for name in names
        }
        for name in sorted(set(budgets) & other):
            note = (
                f"{name}={budgets[name]!r} not judged: the {self.meter} meter does not measure it"
            )
            if note not in self._unjudged:
                self._unjudged.append(note)
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
        self._throughput.update(figures)
        return figures

    def profile_operators(self) -> Mapping[str, Any]:
        """Profile the variant's and the reference's time by operator, once.

        See ``pytest_modelopt.profiling``. Taken on the built variants in this process; kept in
        the record (``operators``) and the baseline entry (``top_operators``), where a
        wall-clock regression is explained.
        """
        if not self._operators:
            from pytest_modelopt.profiling import profile_sides

            self.log(f"{self.label}: profiling the variant and the reference by operator")
            self._operators = profile_sides(
                self.variant, self.reference, self.spec.example_input, self.settings.threads
            )
            self.log(f"{self.label}: profiled in {self._operators['seconds']:.1f} s")
        return self._operators

    def to_dict(self, *, raw: bool = True) -> dict[str, Any]:
        """Return the record of the results JSON: the result, then what the test asked."""
        return {
            **self._result.to_dict(raw=raw),
            "throughput_at_batch": {
                str(size): {"items_per_s": m.value, "interval": m.interval}
                for size, m in self._throughput.items()
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
                for c in self._checks
            ],
            "verdict": self.verdict.value if self.verdict else None,
            "unjudged": list(self._unjudged),
            "operators": self._operators,
        }


def _names(checks: list[Check]) -> str:
    return ", ".join(check.budget.metric.name for check in checks)
