"""Operator profiles: where a variant's time goes, by operator, as its runtime names them.

A profile maps each operator to its self time in milliseconds per call, ``TOP`` rows in all:
the largest operators and one row, ``OUTSIDE``, for the time of a call spent in no operator
(the variant's own Python, input copies, the runtime's dispatch): the median wall time of plain
calls of ``variant.run`` less the operators' sum. It explains a wall-clock regression against a
baseline; it is never gated.

Who profiles what:

- torch variants (eager, TorchScript, torch.compile, torch.export, the torch techniques): their
  ``run`` itself, under torch's profiler; operators are its ``key_averages()`` keys (``aten::``
  ops, TorchScript's ``forward``, a compiled region), by self CPU time;
- a variant whose runtime profiles only when told so at build time carries a
  :attr:`~pytest_modelopt.variants.base.Variant.profiler`, a :class:`~pytest_modelopt.worker.Loader`
  of a function ``profile(batch, calls) -> {operator: ms per call}`` that rebuilds it from its
  files with profiling on: ONNX Runtime (a session with ``enable_profiling``: node events by
  ``op_type``), OpenVINO (compiled with ``PERF_COUNT``: per-layer counters by layer type and
  kernel);
- anything else (TFLite, plain Python, GPU variants for now) has none: the profile is empty and
  :func:`why_none` says why. Nothing is estimated in its place.

Profiles are taken in this process on the built variant, even where the wall meter timed it in a
worker process of its own: what a profile is for is the relative time of its operators, and
profilers add their own overhead (torch's a few microseconds an operator), so its figures are
compared with other profiles, never with the timed latency. Backends are imported in the
functions that use them.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_modelopt.variants.base import Variant

TOP = 30
OUTSIDE = "(outside operators)"
# Plain calls are timed for about this long (3 calls at least, MAX_CALLS at most), then as many
# are profiled: enough to average out a tiny model's scheduling noise, little next to the seconds
# of a comparison.
SECONDS = 0.2
MAX_CALLS = 200
WARMUP_CALLS = 2

Profile = dict[str, float]
# profile(batch, calls): a variant's ``profiler`` loads one (a Loader's function, loosely typed)
ProfileFunction = Callable[..., Profile]


def why_none(variant: Variant) -> str | None:
    """Why this variant cannot be profiled by operator; None when it can."""
    if variant.device != "cpu":
        return f"{variant.runtime} on {variant.device}: operator profiles are taken on CPU only"
    if variant.profiler is None and variant.runtime_family != "torch":
        return f"no operator profiler for {variant.runtime} variants"
    return None


def operator_profile(
    variant: Variant, batch: Any, *, seconds: float = SECONDS, top: int = TOP
) -> Profile:
    """Return milliseconds per call by operator (self time).

    The ``top - 1`` largest and ``OUTSIDE``; empty when the variant has no profiler
    (:func:`why_none`).
    """
    if why_none(variant) is not None:
        return {}
    for _ in range(WARMUP_CALLS):
        variant.run(batch)
    wall_s: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(wall_s) < MAX_CALLS and (len(wall_s) < 3 or time.perf_counter() < deadline):
        wall_s.append(_seconds(variant.run, batch))
    operators = _profile_function(variant)(batch, len(wall_s))
    kept = dict(sorted(operators.items(), key=lambda item: (-item[1], item[0]))[: top - 1])
    kept[OUTSIDE] = max(0.0, statistics.median(wall_s) * 1e3 - sum(operators.values()))
    return kept


def profile_sides(
    variant: Variant, reference: Variant, batch: Any, threads: int | None = None
) -> dict[str, Any]:
    """Profile a variant and its reference by operator: the ``operators`` of a result record.

    Torch's intra-op threads are fixed as they were timed (the other runtimes' profilers rebuild
    them with their own settings). The record also says what the profiles cost, and why a side
    has none.
    """
    from pytest_modelopt.measure import fixed_threads

    start = time.perf_counter()
    sides: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for side, built in (("variant", variant), ("reference", reference)):
        reason = why_none(built)
        try:
            with fixed_threads(threads):
                sides[side] = operator_profile(built, batch)
        except Exception as error:  # an explanation aid: its failure must not hide the verdict
            sides[side], reason = {}, f"profiling failed: {type(error).__name__}: {error}"[:300]
        if reason is not None:
            missing[side] = reason
    return {**sides, "unavailable": missing, "seconds": round(time.perf_counter() - start, 3)}


def _profile_function(variant: Variant) -> ProfileFunction:
    if variant.profiler is not None:
        profile: ProfileFunction = variant.profiler.load()
        return profile
    run = variant.run

    def profile_torch(batch: Any, calls: int) -> Profile:
        return torch_operators(run, batch, calls)

    return profile_torch


def torch_operators(run: Callable[[Any], Any], batch: Any, calls: int) -> Profile:
    """Self CPU milliseconds per call by torch profiler key over ``calls`` calls of ``run``.

    ``torch.autograd.profiler.profile`` with no device: ``torch.profiler.profile`` first asks for
    CUDA, which takes seconds on a CUDA build of torch without a GPU. A first profile of one call
    is thrown away: the profiler's own start-up in a process (tens of milliseconds) lands in the
    self time of whichever operator runs first.
    """
    import torch

    for profiled_calls in (1, calls):
        with quiet_stderr(), torch.autograd.profiler.profile(use_device=None) as profiler:
            for _ in range(profiled_calls):
                run(batch)
    return per_call(
        {event.key: event.self_cpu_time_total / 1e3 for event in profiler.key_averages()}, calls
    )


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to the null device for the block.

    Torch's profiler backend writes ``profiler_start``/``profiler_stop`` lines, and without a GPU
    ``ERROR: gpuGetDeviceCount failed``, on every profile, which would read as trouble in a
    failing test's output.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def per_call(totals_ms: Mapping[str, float], calls: int) -> Profile:
    """Totals over ``calls`` calls as per-call figures, operators that took no time left out."""
    return {name: total / calls for name, total in totals_ms.items() if total > 0}


def _seconds(run: Callable[[Any], Any], batch: Any) -> float:
    start = time.perf_counter()
    run(batch)
    return time.perf_counter() - start
