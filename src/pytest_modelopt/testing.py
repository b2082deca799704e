"""Testing aids: prove that a gate catches a slowdown by injecting one.

``--modelopt-inject-slowdown technique=0.3`` makes every call of that technique's variant spend
30% of its own time again in extra compute (a busy loop on the calling thread), so that the
regression gate can be seen to fail on the variant it names. Never use it outside such a check:
the variant's notes and the summary say it was slowed down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_modelopt.variants.base import Variant

INJECTED = "injected_slowdown"


def inject_slowdown(variant: Variant, fraction: float) -> None:
    """Wrap ``variant.run`` so each call takes ``1 + fraction`` times as long (once per variant)."""
    if INJECTED in variant.details:
        return
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


def busy_wait(seconds: float) -> None:
    """Spend ``seconds`` of CPU on this thread: compute, not sleep, as a real slowdown would."""
    deadline = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < deadline:
        for i in range(50):
            total += i * i
