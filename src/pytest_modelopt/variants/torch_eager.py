"""The reference: the model as written, in fp32, run eagerly."""

from __future__ import annotations

import pickle

from pytest_modelopt.registry import register_technique
from pytest_modelopt.variants.base import BuildContext, Variant


@register_technique(
    "eager",
    frameworks=("torch", "keras", "python"),
    description="the fp32 model as written, run eagerly: the reference of every comparison",
)
def build_eager(ctx: BuildContext) -> Variant:
    if ctx.spec.framework == "keras":
        from pytest_modelopt.variants.tflite import keras_reference

        return keras_reference(ctx)
    if ctx.spec.framework != "torch":
        path = ctx.workdir / "model.pkl"
        path.write_bytes(pickle.dumps(ctx.model))
        return Variant("eager", ctx.model, (path,), runtime="python", precision="fp32")

    import torch

    from pytest_modelopt.torchtools import call_model

    model = ctx.model.eval()
    path = ctx.workdir / "model.pt"
    torch.save(model.state_dict(), path)

    def run(batch: object) -> object:
        with torch.inference_mode():
            return call_model(model, batch)

    return Variant("eager", run, (path,), runtime=f"torch {torch.__version__}", precision="fp32")
