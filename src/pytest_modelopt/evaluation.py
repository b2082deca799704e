"""The plain Python API: build a variant of a spec, measure it against the reference, judge it.

    evaluator = Evaluator(spec)
    contract = evaluator.evaluate("torchscript")
    contract.expect(speedup=">=1.2", size_ratio="<=1.05")

The pytest fixtures are thin wrappers over this module; it works without pytest. An evaluation
measures an immutable :class:`~pytest_modelopt.variant_result.VariantResult` (its metrics are
computed in :mod:`pytest_modelopt.metrics`) and returns it under a
:class:`~pytest_modelopt.variant_contract.VariantContract`, which judges budgets.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pytest_modelopt.budget import INCONCLUSIVE_POLICIES, METERS
from pytest_modelopt.building import Builder
from pytest_modelopt.devices import gpu_state
from pytest_modelopt.efficiency import count_flops, measured_peak, precision_class, roofline
from pytest_modelopt.errors import NotApplicable
from pytest_modelopt.hardware import Hardware, detect_hardware
from pytest_modelopt.measure import Comparison, Interleaver, MeasureSettings, Side
from pytest_modelopt.metrics import accuracy_metrics, to_numpy
from pytest_modelopt.reference import REFERENCE, reference_for
from pytest_modelopt.registry import get_technique
from pytest_modelopt.search.driver import search
from pytest_modelopt.spec import ModelSpec
from pytest_modelopt.variant_contract import VariantContract
from pytest_modelopt.variant_result import VariantResult
from pytest_modelopt.variants.base import Variant
from pytest_modelopt.worker import Worker

__all__ = ["REFERENCE", "Evaluator", "VariantContract", "VariantResult"]


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
        reuse_builds: bool = True,
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
        self.builder = Builder(
            spec,
            self.hardware,
            self.workdir,
            threads=self.settings.threads,
            cache_dir=cache_dir,
            reuse_builds=reuse_builds,
            log=log,
        )
        self._reference_outputs: list[np.ndarray] | None = None

    def build(self, technique_name: str, params: Mapping[str, Any] | None = None) -> Variant:
        """Build a variant (or restore it from the build cache), once per technique and params.

        Raises RequirementMissing if it cannot run here, ParameterError for a parameter the
        technique does not take.
        """
        return self.builder.build(technique_name, params)

    def _prepare(self, variant: Variant) -> None:
        """Run the variant's ``prepare`` before it is measured; log and note what it redid."""
        if variant.prepare is None:
            return
        notes = variant.prepare()
        if notes:
            self.log(f"{self.spec.name}[{variant.technique}]: {notes[0]}")
            variant.notes += [note for note in notes if note not in variant.notes]

    def evaluate(
        self,
        technique_name: str,
        params: Mapping[str, Any] | None = None,
        *,
        max_time: float | None = None,
        meter: str | None = None,
    ) -> VariantContract:
        """Build, measure against the reference, size and score one variant, under a contract.

        ``max_time`` replaces the settings' time cap for this variant, ``meter`` the settings'
        meter (``wall`` or ``instructions``).
        """
        result, remeasure = self.measure(technique_name, params, max_time=max_time, meter=meter)
        return self.contract(result, remeasure)

    def contract(
        self, result: VariantResult, remeasure: Callable[[], Comparison] | None
    ) -> VariantContract:
        """Put a result under a contract with this evaluator's policy, log and retries.

        ``remeasure`` is how an inconclusive check measures again (``measure``'s second half,
        which a session wraps in its timing lock). With the settings' ``profile_operators`` a
        wall-clock result is profiled now.
        """
        contract = VariantContract(
            result,
            remeasure=remeasure,
            inconclusive=self.inconclusive,
            retries=self.retries,
            log=self.log,
        )
        if result.settings.profile_operators and result.meter == "wall":
            contract.profile_operators()
        return contract

    def measure(
        self,
        technique_name: str,
        params: Mapping[str, Any] | None = None,
        *,
        max_time: float | None = None,
        meter: str | None = None,
    ) -> tuple[VariantResult, Callable[[], Comparison]]:
        """Build and measure one variant: its result, and how to measure the same sides again."""
        settings = self.settings
        if max_time is not None:
            settings = dataclasses.replace(settings, max_time=float(max_time))
        meter = meter or settings.meter
        if meter not in METERS:
            raise ValueError(f"meter must be one of {', '.join(METERS)}, got {meter!r}")
        if meter == "instructions":
            self._start_counting_worker(technique_name)
        reference = self.build(REFERENCE)
        variant = self.build(technique_name, params)
        for side in (reference, variant):
            self._prepare(side)
        cross_runtime = variant.runtime_family != reference.runtime_family
        sides: tuple[Callable[[], Any] | Side, Callable[[], Any] | Side]
        if meter == "instructions":
            from pytest_modelopt.counting import counting_settings

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
            f"(up to {settings.max_time:g} s)"
        )
        comparison = interleaver.run()
        ratio = "instructions ratio" if meter == "instructions" else "speedup"
        self.log(
            f"{self.spec.name}[{technique_name}]: {ratio} {comparison.speedup:.4g}x in "
            f"{comparison.rounds} rounds ({comparison.stopped_by})"
        )
        measured = VariantResult(
            spec=self.spec,
            variant=variant,
            reference=reference,
            comparison=comparison,
            sizes=self._sizes(variant, reference),
            accuracy=self._accuracy(variant),
            efficiency=self._efficiency(variant, comparison) if meter == "wall" else {},
            gpu_state=gpu_state(0) if variant.device.startswith("cuda") else None,
            settings=settings,
        )
        return measured, interleaver.run

    # The search as a method: ``evaluator.best(budgets, techniques=..., max_time=...)``.
    best = search

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

        Those are the packages of the reference (its framework's) and of the technique, imported
        there while the variants are built here.
        """
        from pytest_modelopt.counting import shared_worker

        reference = reference_for(self.spec.framework).requires.packages
        packages = get_technique(technique_name).requires.packages
        shared_worker(1).start(preload=tuple(dict.fromkeys(reference + packages)))

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
            reference = self.builder.build(REFERENCE)
            self._reference_outputs = [to_numpy(reference.run(x)) for x, _ in batches]
        outputs = [to_numpy(variant.run(x)) for x, _ in batches]
        return accuracy_metrics(outputs, self._reference_outputs, [y for _, y in batches])
