"""Testing aids: prove that a gate catches a slowdown by injecting one.

``--modelopt-inject-slowdown technique=0.3`` makes every call of that technique's variant spend
30% of its own time again in extra compute (a busy loop on the calling thread), so that the
regression gate can be seen to fail on the variant it names. Never use it outside such a check:
the variant's notes and the summary say it was slowed down.

A variant that a worker process rebuilds (its ``Loader``) gets the slowdown there too, as a fixed
number of loop iterations per call. In a timing worker they are calibrated here, on the variant's
own calls. In the counting worker they are sized in instructions: the worker counts one call of
the variant and of the loop and sets the iterations so that the loop adds the fraction asked of
the variant's instructions (a timing calibration, run on a busy machine, came out anywhere from
+0.2% to +3.7% of the instructions for a +2% asked). Either way the same work in every call.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pytest_modelopt.worker import Loader

if TYPE_CHECKING:
    from pytest_modelopt.variants.base import Variant

INJECTED = "injected_slowdown"
INJECTED_ITERATIONS = "injected_loop_iterations"


def inject_slowdown(variant: Variant, fraction: float, batch: Any = None) -> None:
    """Wrap ``variant.run`` so each call takes ``1 + fraction`` times as long (once per variant).

    With the ``batch`` it runs on, wrap its loader too (a fixed loop, calibrated on it).
    """
    if INJECTED in variant.details:
        return
    if variant.loader is not None and batch is not None:
        iterations = calibrated_iterations(variant.run, batch, fraction)
        variant.loader = Loader(
            "pytest_modelopt.testing:slowed_runner",
            {"loader": variant.loader, "iterations": iterations, "fraction": fraction},
            numpy_inputs=variant.loader.numpy_inputs,
        )
        variant.details[INJECTED_ITERATIONS] = iterations
    variant.run = _slowed(variant.run, fraction)
    variant.details[INJECTED] = fraction
    variant.notes.append(
        f"slowed down by {fraction:.0%} on purpose (--modelopt-inject-slowdown, a testing aid)"
    )


def _slowed(run: Callable[[Any], Any], fraction: float) -> Callable[[Any], Any]:
    def run_slowed(batch: Any) -> Any:
        start = time.perf_counter()
        output = run(batch)
        busy_wait((time.perf_counter() - start) * fraction)
        return output

    return run_slowed


def calibrated_iterations(
    run: Callable[[Any], Any], batch: Any, fraction: float, calls: int = 21
) -> int:
    """Return the iterations of :func:`busy_loop` that take ``fraction`` of a call of ``run``.

    Both are timed here, in this process.
    """
    import statistics  # here, not at the top: a worker that loads slowed_runner never needs it

    run(batch)
    call_s = statistics.median(_seconds(lambda: run(batch)) for _ in range(calls))
    iterations = 1000
    loop_s = statistics.median(_seconds(lambda: busy_loop(iterations)) for _ in range(calls))
    return max(1, round(fraction * call_s / (loop_s / iterations)))


def slowed_runner(loader: Loader, iterations: int, fraction: float = 0.0) -> SlowedRun:
    """Load a worker's run: the wrapped loader's run, then ``iterations`` of :func:`busy_loop`."""
    return SlowedRun(loader.load(), iterations, fraction)


class SlowedRun:
    """A run followed by a fixed loop; the counting worker resizes the loop in instructions."""

    def __init__(self, run: Callable[[Any], Any], iterations: int, fraction: float) -> None:
        self.run, self.iterations, self.fraction = run, iterations, fraction

    def __call__(self, batch: Any) -> Any:
        """Run the batch, then the loop; return the run's output."""
        output = self.run(batch)
        busy_loop(self.iterations)
        return output

    def calibrate_with(
        self, instructions_of: Callable[[Callable[[], Any]], float], batch: Any
    ) -> None:
        """Size the loop at ``fraction`` of the run's instructions, as ``instructions_of`` counts.

        ``instructions_of`` is the counting worker's callgrind. The loop's fixed cost (the call)
        is small beside its iterations, and the size is refined on the loop itself.
        """
        target = self.fraction * instructions_of(lambda: self.run(batch))
        iterations = 10_000
        for _ in range(3):
            per_iteration = instructions_of(functools.partial(busy_loop, iterations)) / iterations
            if per_iteration <= 0:
                return
            iterations = max(1, round(target / per_iteration))
        self.iterations = iterations


def busy_loop(iterations: int) -> int:
    """Run a fixed amount of compute: the same instructions in every process.

    It allocates nothing (only cached small ints), so its count does not depend on the state of
    Python's allocator.
    """
    total = 0
    for _ in itertools.repeat(None, iterations):
        total = (total + 1) & 127
    return total


def _seconds(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def busy_wait(seconds: float) -> None:
    """Spend ``seconds`` of CPU on this thread: compute, not sleep, as a real slowdown would."""
    deadline = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < deadline:
        for i in range(50):
            total += i * i
