"""Loaders the benchmark (verdict_quality.py) gives its worker processes.

Kept apart from the benchmark so that a worker importing it imports no ML library it does not use.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pytest_modelopt.worker import Loader


def injected_runner(inner: Loader, extra_s: float, kind: str) -> Callable[[Any], Any]:
    """The variant's ``run`` followed by ``extra_s`` of a CPU-bound loop or of sleep.

    A CPU-bound loop rather than a matmul: a matmul of another runtime would wake that runtime's
    threads and add their transition cost, not the intended fraction.
    """
    run = inner.load()
    if extra_s <= 0:
        return run

    def slowed(batch: Any) -> Any:
        out = run(batch)
        if kind == "sleep":
            time.sleep(extra_s)
        else:
            deadline = time.perf_counter() + extra_s
            while time.perf_counter() < deadline:
                pass
        return out

    return slowed


def torchscript_runner(path: str, optimize: bool) -> Callable[[Any], Any]:
    """The saved TorchScript module as the torchscript variant runs it (frozen and optimized)."""
    import torch

    module = torch.jit.load(path).eval()
    if optimize:
        module = torch.jit.optimize_for_inference(torch.jit.freeze(module))

    def run(batch: Any) -> Any:
        with torch.no_grad():
            return module(batch)

    return run
