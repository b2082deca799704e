"""The reference of plain Python models: the callable as given, pickled for worker processes."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from pytest_modelopt.reference import register_reference
from pytest_modelopt.variants.base import BuildContext, Variant


@register_reference("python")
def build_python_reference(ctx: BuildContext) -> Variant:
    """Build the reference of a plain Python model: the callable as given, pickled for workers."""
    from pytest_modelopt.worker import Loader

    path = ctx.workdir / "model.pkl"
    path.write_bytes(pickle.dumps(ctx.model))
    return Variant(
        ctx.model,
        (path,),
        runtime="python",
        precision="fp32",
        # A worker unpickles the model: its class must be importable there.
        loader=Loader("pytest_modelopt.variants.python_eager:pickled_runner", {"path": str(path)}),
    )


def pickled_runner(path: str) -> Callable[[Any], Any]:
    """``run(batch)`` of a plain Python model pickled at ``path`` (a worker's loader)."""
    with open(path, "rb") as file:
        model: Callable[[Any], Any] = pickle.load(file)
    return model
