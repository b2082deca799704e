"""The reference: the model as written, in fp32, run eagerly."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from pytest_modelopt.registry import register_technique
from pytest_modelopt.variants.base import BuildContext, Variant


@register_technique(
    "eager",
    frameworks=("torch", "keras", "python"),
    description="the fp32 model as written, run eagerly: the reference of every comparison",
)
def build_eager(ctx: BuildContext) -> Variant:
    """Build the reference: the model as written, run eagerly; every variant is compared to it.

    A Keras model gets its own reference; a plain Python model is pickled for worker processes.
    """
    if ctx.spec.framework == "keras":
        from pytest_modelopt.variants.tflite import keras_reference

        return keras_reference(ctx)
    from pytest_modelopt.worker import Loader

    if ctx.spec.framework != "torch":
        path = ctx.workdir / "model.pkl"
        path.write_bytes(pickle.dumps(ctx.model))
        return Variant(
            ctx.model,
            (path,),
            runtime="python",
            precision="fp32",
            # A worker unpickles the model: its class must be importable there.
            loader=Loader(
                "pytest_modelopt.variants.torch_eager:pickled_runner", {"path": str(path)}
            ),
        )

    model = ctx.model.eval()
    return saved_variant(
        ctx,
        model,
        model.state_dict(),
        precision="fp32",
        # A worker gets the module itself (pickled: its class must be importable).
        loader=Loader("pytest_modelopt.variants.torch_eager:eager_runner", {"model": model}),
    )


def saved_variant(
    ctx: BuildContext,
    run_module: Any,
    saved: Any,
    *,
    precision: str,
    runtime: str = "torch",
    filename: str = "model.pt",
    **fields: Any,
) -> Variant:
    """Build a variant that runs ``run_module`` eagerly and ships ``saved`` (``torch.save``).

    ``saved`` (a state dict, a module, or another picklable form) goes to ``filename`` in the
    workdir; the runtime is ``runtime`` and torch's version; ``fields`` are the Variant's
    others (details, notes, model, loader, prepare).
    """
    import torch

    path = ctx.workdir / filename
    torch.save(saved, path)
    return Variant(
        eager_runner(run_module),
        (path,),
        runtime=f"{runtime} {torch.__version__}",
        precision=precision,
        **fields,
    )


def eager_runner(model: Any) -> Callable[[Any], Any]:
    """``run(batch)``: the module called under inference mode (also a worker's loader)."""
    import torch

    from pytest_modelopt.torchtools import call_model

    def run(batch: Any) -> Any:
        with torch.inference_mode():
            return call_model(model, batch)

    return run


def pickled_runner(path: str) -> Callable[[Any], Any]:
    """``run(batch)`` of a plain Python model pickled at ``path`` (a worker's loader)."""
    with open(path, "rb") as file:
        model: Callable[[Any], Any] = pickle.load(file)
    return model
