"""The plain Python API: build a variant of a spec, measure it against the reference, judge it.

    evaluator = Evaluator(spec)
    result = evaluator.evaluate("torchscript")
    result.expect(speedup=">=1.2", size_ratio="<=1.05")

The pytest fixtures are thin wrappers over this module; it works without pytest.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import math
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_modelopt.budget import (
    AFTER_BROKEN_BUDGET,
    INCONCLUSIVE_POLICIES,
    METER_METRICS,
    METERS,
    Check,
    Measured,
    Verdict,
    format_checks,
    judge_all,
    what_to_do,
)
from pytest_modelopt.efficiency import count_flops, measured_peak, precision_class, roofline
from pytest_modelopt.errors import BuildError, ContractViolation, ModeloptError, NotApplicable
from pytest_modelopt.hardware import Hardware, detect_hardware, gpu_state
from pytest_modelopt.measure import (
    Comparison,
    Interleaver,
    MeasureSettings,
    Side,
    time_alone,
)
from pytest_modelopt.memory import PeakMemory
from pytest_modelopt.readable import hide_plugin_frame
from pytest_modelopt.registry import get_technique
from pytest_modelopt.spec import ModelSpec
from pytest_modelopt.variants.base import BuildContext, Variant
from pytest_modelopt.worker import Worker

if TYPE_CHECKING:
    from pytest_modelopt.search import SearchResult

REFERENCE = "eager"
# Counted calls of a tiny torch model vary by about 1% (glibc malloc, CPython's call paths); more
# than this between rounds means the work itself changes from call to call.
COUNT_NOISE = 0.05
# Counted rounds per comparison: calls vary so little that three bound a narrow interval.
COUNTED_ROUNDS = 3


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
        checks = judge_all(budgets, self.metrics)
        for _ in range(self.retries):
            if not any(c.verdict is Verdict.INCONCLUSIVE for c in checks) or not self.remeasure:
                break
            self.log(f"{self.label}: inconclusive, measuring once more")
            self.comparison = self.remeasure()
            checks = judge_all(budgets, self.metrics)
        self.checks += checks
        failed = [c for c in checks if c.verdict is Verdict.FAIL]
        undecided = [c for c in checks if c.verdict is Verdict.INCONCLUSIVE]
        if failed:
            table = format_checks(checks, f"{self.label}: contract broken ({_names(failed)})")
            raise ContractViolation(f"{table}\n{AFTER_BROKEN_BUDGET}")
        if undecided and self.inconclusive == "fail":
            table = format_checks(
                checks,
                f"{self.label}: inconclusive ({_names(undecided)}): the measurements "
                "cannot decide the budget on this machine",
            )
            raise ContractViolation(f"{table}\n{what_to_do(undecided, self.comparison.elapsed_s)}")
        return checks

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
                size / p50, (_per_second(size, high * 1e3), _per_second(size, low * 1e3))
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


class Evaluator:
    """Builds and measures variants of one spec; the reference is built and run only once."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        settings: MeasureSettings | None = None,
        hardware: Hardware | None = None,
        workdir: Path | None = None,
        inconclusive: str = "fail",
        retries: int = 1,
        cache_dir: Path | None = None,
        log: Callable[[str], None] = lambda message: None,
    ) -> None:
        if inconclusive not in INCONCLUSIVE_POLICIES:
            raise ValueError(f"inconclusive policy must be one of {INCONCLUSIVE_POLICIES}")
        self.spec = spec
        self.hardware = hardware or detect_hardware()
        self.settings = settings or MeasureSettings(threads=self.hardware.cpu.physical_cores)
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"modelopt-{spec.name}-"))
        self.inconclusive = inconclusive
        self.retries = retries
        self.log = log
        self.cache_dir = cache_dir
        self._variants: dict[str, Variant] = {}
        self._reference_outputs: list[np.ndarray] | None = None

    def build(self, technique_name: str, params: Mapping[str, Any] | None = None) -> Variant:
        """Build a variant, once per technique and parameters.

        Raises RequirementMissing if it cannot run here, ParameterError for a parameter the
        technique does not take.
        """
        technique = get_technique(technique_name)
        merged = technique.resolve_params(params)
        key = f"{technique_name} {sorted(merged.items())!r}" if params else technique_name
        if key in self._variants:
            return self._variants[key]
        missing = technique.unmet(self.hardware)
        if missing is not None:
            raise missing
        framework = self.spec.framework
        if framework not in technique.frameworks:
            raise NotApplicable(
                f"{technique_name}: applies to {'/'.join(technique.frameworks)} models; "
                f"{self.spec.name} is a {framework} model"
            )
        # One directory per technique and parameters: a second build with other parameters must
        # not overwrite the files (size, worker reload) of the first.
        suffix = f"-{hashlib.sha256(key.encode()).hexdigest()[:8]}" if params else ""
        workdir = self.workdir / _safe(technique_name + suffix)
        workdir.mkdir(parents=True, exist_ok=True)
        context = BuildContext(
            spec=self.spec,
            model=copy.deepcopy(self.spec.load()),
            workdir=workdir,
            hardware=self.hardware,
            params=merged,
            threads=self.settings.threads,
            cache_dir=self.cache_dir,
            log=self.log,
        )
        self.log(f"{self.spec.name}[{technique_name}]: building")
        start = time.perf_counter()
        try:
            with PeakMemory() as build_memory:
                variant = technique.build(context)
        except ModeloptError:
            raise
        except Exception as error:
            raise BuildError(
                f"{technique_name} failed on {self.spec.name}: {type(error).__name__}: {error}"
            ) from error
        variant.build_seconds = time.perf_counter() - start
        variant.memory["build_peak_mb"] = build_memory.host_mb
        try:
            self._first_call(variant)
        except Exception as error:  # a variant that builds but cannot run is that build's failure
            raise BuildError(
                f"{technique_name} built a variant of {self.spec.name} that fails on the example "
                f"input: {type(error).__name__}: {error}"
            ) from error
        self.log(f"{self.spec.name}[{technique_name}]: built in {variant.build_seconds:.1f} s")
        self._variants[key] = variant
        return variant

    def _first_call(self, variant: Variant) -> None:
        """Time the variant's very first call (lazy initialization, JIT) and its peak memory."""
        gpu = variant.device.startswith("cuda")
        with PeakMemory(gpu=gpu) as run_memory:
            start = time.perf_counter()
            variant.run(self.spec.example_input)
            if gpu:
                sys.modules["torch"].cuda.synchronize()
            variant.first_call_seconds = time.perf_counter() - start
        variant.memory["run_peak_mb"] = run_memory.host_mb
        variant.memory["memory_method"] = run_memory.method
        if run_memory.gpu_mb is not None:
            variant.memory["gpu_peak_mb"] = run_memory.gpu_mb

    def evaluate(
        self,
        technique_name: str,
        params: Mapping[str, Any] | None = None,
        *,
        max_time_s: float | None = None,
        meter: str | None = None,
    ) -> VariantResult:
        """Build, measure against the reference, size and score one variant.

        ``max_time_s`` replaces the settings' time cap for this variant, ``meter`` the settings'
        meter (``wall`` or ``instructions``).
        """
        settings = self.settings
        if max_time_s is not None:
            settings = dataclasses.replace(settings, max_time_s=float(max_time_s))
        meter = meter or settings.meter
        if meter not in METERS:
            raise ValueError(f"meter must be one of {', '.join(METERS)}, got {meter!r}")
        if meter == "instructions":
            self._start_counting_worker(technique_name)
        reference = self.build(REFERENCE)
        variant = self.build(technique_name, params)
        cross_runtime = variant.runtime_family != reference.runtime_family
        sides: tuple[Callable[[], Any] | Side, Callable[[], Any] | Side]
        if meter == "instructions":
            settings = counting_settings(settings)
            sides = self._counted_sides(variant, reference)
            cross_runtime = False  # counts do not suffer from a neighbour's thread pool
        else:
            sides = (self._side(variant, cross_runtime), self._side(reference, cross_runtime))
        interleaver = Interleaver(
            sides[0],
            sides[1],
            settings,
            device=variant.device,
            cross_runtime=cross_runtime,
            log=lambda message: self.log(f"{self.spec.name}[{technique_name}]: {message}"),
        )
        verb = "counting instructions" if meter == "instructions" else "timing"
        self.log(
            f"{self.spec.name}[{technique_name}]: {verb} against {REFERENCE} "
            f"(up to {settings.max_time_s:g} s)"
        )
        comparison = interleaver.run()
        ratio = "instructions ratio" if meter == "instructions" else "speedup"
        self.log(
            f"{self.spec.name}[{technique_name}]: {ratio} {comparison.speedup:.4g}x in "
            f"{comparison.rounds} rounds ({comparison.stopped_by})"
        )
        result = VariantResult(
            spec=self.spec,
            variant=variant,
            reference=reference,
            comparison=comparison,
            sizes=self._sizes(variant, reference),
            accuracy=self._accuracy(variant),
            efficiency=self._efficiency(variant, comparison) if meter == "wall" else {},
            gpu_state=gpu_state(0) if variant.device.startswith("cuda") else None,
            settings=settings,
            inconclusive=self.inconclusive,
            retries=self.retries,
            remeasure=interleaver.run,
            log=self.log,
        )
        if settings.profile_operators and meter == "wall":
            result.profile_operators()
        return result

    def best(
        self,
        budgets: Mapping[str, float | str] | Sequence[str] | None = None,
        techniques: Sequence[str] | None = None,
        chains: bool = True,
        objective: str = "latency",
        max_time: float = 600.0,
        params: Mapping[str, Mapping[str, Any]] | None = None,
        first: Sequence[str] = (),
    ) -> SearchResult:
        """Search for the variant to ship on this machine.

        Evaluate ``techniques`` (default: every registered one; those this machine or model
        cannot run are skipped with the reason), then the chains of those that kept the quality
        budgets (``chains``), starting no new candidate once ``max_time`` seconds are spent, and
        rank them under ``budgets`` (``{"accuracy_drop": "<=1%"}`` or ``["accuracy_drop<=1%"]``)
        by ``objective`` (``latency``, ``throughput``, ``size``). Progress goes to the
        evaluator's log. The result holds the ranked candidates, ties, Pareto front and
        recommendation, and the skipped, failed, pruned and untried techniques
        (``pytest_modelopt.search``). ``first`` names candidates (a recorded choice) measured
        before the rest, whatever the time.
        """
        from pytest_modelopt.search import search

        return search(
            self,
            budgets,
            techniques=techniques,
            chains=chains,
            objective=objective,
            max_time=max_time,
            params=params,
            first=first,
        )

    def _side(self, variant: Variant, cross_runtime: bool) -> Callable[[], Any] | Worker:
        """Return how one side is timed: in a worker process of its own, or in this one.

        In a worker when two runtimes meet (their thread pools would distort each other in one
        process) and the variant can be reloaded there; else in this process.
        """
        batch = self.spec.example_input

        def call() -> Any:
            return variant.run(batch)

        if not (cross_runtime and self.settings.workers and variant.loader):
            return call
        return Worker(
            variant.loader,
            batch,
            threads=self.settings.threads,
            fallback=call,
            label=f"{self.spec.name}[{variant.technique}]",
        )

    def _start_counting_worker(self, technique_name: str) -> None:
        """Start the session's counting worker importing the runtimes this comparison needs.

        Those are torch and the technique's packages, imported there while the variants are
        built here.
        """
        from pytest_modelopt.counting import shared_worker
        from pytest_modelopt.registry import get_technique

        packages = get_technique(technique_name).requires.packages
        frameworks = ("torch",) if self.spec.framework == "torch" else ()
        shared_worker(1).start(preload=tuple(dict.fromkeys(frameworks + packages)))

    def _counted_sides(self, variant: Variant, reference: Variant) -> tuple[Side, Side]:
        """Return both sides, counted under valgrind in one worker process.

        A variant that cannot be rebuilt there (no loader) cannot be counted.
        """
        from pytest_modelopt.counting import counted_sides, find_valgrind

        find_valgrind()  # ValgrindMissing (a skip, a failure under strict mode) before any work
        for side in (variant, reference):
            if side.loader is None:
                raise NotApplicable(
                    f"{self.spec.name}[{side.technique}] cannot be counted: the instructions meter "
                    "rebuilds each side in a worker process under valgrind, and this variant has "
                    "no loader; measure it with --modelopt-measure=wall"
                )
        assert variant.loader is not None
        assert reference.loader is not None
        batch = self.spec.example_input
        return counted_sides(
            (variant.loader, batch),
            (reference.loader, batch),
            threads=1,
            label=f"{self.spec.name}[{variant.technique}]",
        )

    @functools.cached_property
    def flops_per_call(self) -> int | None:
        """Operations of one call of the reference on the example input (torch models)."""
        return count_flops(self.spec.load(), self.spec.example_input)

    def _efficiency(self, variant: Variant, comparison: Comparison) -> dict[str, Any]:
        """Set achieved operations per second against this machine's peak for the precision.

        The peak is the best matrix product of every installed runtime; the theoretical ceiling
        stands beside it.
        """
        if self.spec.framework != "torch":
            return {}
        precision = precision_class(variant.precision)
        latency_s = comparison.variant.summary().p50
        flops = self.flops_per_call
        peak = None
        if not variant.device.startswith("cuda"):
            peak = measured_peak(
                precision,
                threads=self.settings.threads or self.hardware.cpu.physical_cores,
                hardware=self.hardware,
                cache_dir=self.cache_dir,
                log=self.log,
                reached=flops / latency_s if flops and latency_s > 0 else None,
            )
        figures = roofline(flops, latency_s, peak)
        return {"precision": precision, **figures}

    def _sizes(self, variant: Variant, reference: Variant) -> dict[str, int]:
        return {
            "variant_bytes": variant.size_bytes(),
            "variant_gzip_bytes": variant.gzip_bytes(),
            "reference_bytes": reference.size_bytes(),
            "reference_gzip_bytes": reference.gzip_bytes(),
        }

    def _accuracy(self, variant: Variant) -> dict[str, float]:
        batches = self.spec.accuracy_batches()
        if self._reference_outputs is None:
            reference = self._variants[REFERENCE]
            self._reference_outputs = [to_numpy(reference.run(x)) for x, _ in batches]
        outputs = [to_numpy(variant.run(x)) for x, _ in batches]
        return accuracy_metrics(outputs, self._reference_outputs, [y for _, y in batches])


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


def counting_settings(settings: MeasureSettings) -> MeasureSettings:
    """Return the engine's settings for the counting meter.

    One thread; no first call, warm-up or settling of the engine's (the worker warms each side up
    natively and once under valgrind, and counts do not drift); Student's t interval from three
    rounds, since counts barely vary, and checked after every round, since a counted round is
    dear; and the three rounds whatever they cost (a counted round is bounded and predictable, up
    to minutes for a large model), within a time cap that allows for valgrind.
    """
    return dataclasses.replace(
        settings,
        meter="instructions",
        threads=1,
        warmup_s=0.0,
        warmup_calls=0,
        settle=False,
        first_call=False,
        estimator="student_t",
        min_rounds=COUNTED_ROUNDS,
        check_every=1,
        overrun=math.inf,
        max_time_s=max(settings.max_time_s, 60.0),
    )


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
        (_per_second(batch_size, p50_high), _per_second(batch_size, p50_low)),
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


def _per_second(batch_size: int, latency_ms: float) -> float:
    if latency_ms <= 0:
        return math.inf
    return batch_size / (latency_ms / 1e3) if math.isfinite(latency_ms) else 0.0


def _min_samples(percentile: int) -> int:
    from pytest_modelopt.stats import MIN_SAMPLES_FOR_PERCENTILE

    return MIN_SAMPLES_FOR_PERCENTILE[percentile]


def _names(checks: list[Check]) -> str:
    return ", ".join(check.budget.metric.name for check in checks)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
