"""The reference of torch models: the module as written, in fp32, run eagerly; and its helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_modelopt.reference import register_reference
from pytest_modelopt.variants.base import BuildContext, Variant


@register_reference("torch", backend="torch")
def build_torch_reference(ctx: BuildContext) -> Variant:
    """Build the reference of a torch model: the module in eval mode, run under inference mode."""
    from pytest_modelopt.worker import Loader

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

    The build cache keeps ``run_module`` (and ``model``) to restore it, except for a variant
    with a ``prepare`` (a compiled module: its code lives in the compiler's own cache) or a
    ``loader`` (the reference).
    """
    import torch

    from pytest_modelopt.variants.base import Restore

    path = ctx.workdir / filename
    torch.save(saved, path)
    restore = None
    if not {"prepare", "loader"} & fields.keys():
        restore = Restore(
            "pytest_modelopt.variants.torch_eager:restore_saved",
            {"filename": filename},
            {"run_module": run_module, "model": fields.get("model")},
        )
    return Variant(
        eager_runner(run_module),
        (path,),
        runtime=f"{runtime} {torch.__version__}",
        precision=precision,
        restore=restore,
        **fields,
    )


def restore_saved(ctx: BuildContext, *, filename: str, run_module: Any, model: Any) -> Variant:
    """Run a module the build cache kept, shipping the file a build saved (its Restore).

    The runtime, precision, details and notes are the build's, which the cache sets.
    """
    return Variant(
        eager_runner(run_module), (ctx.workdir / filename,), runtime="", precision="", model=model
    )


def eager_runner(model: Any) -> Callable[[Any], Any]:
    """``run(batch)``: the module called under inference mode (also a worker's loader)."""
    import torch

    from pytest_modelopt.torchtools import call_model

    def run(batch: Any) -> Any:
        with torch.inference_mode():
            return call_model(model, batch)

    return run
