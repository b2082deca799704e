"""Half precision: fp16 (CUDA; emulated on a CPU only on request) and bf16 (CPUs with the ISA)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pytest_modelopt.errors import HardwareMissing, NoEffectError
from pytest_modelopt.parameters import param
from pytest_modelopt.registry import register_technique
from pytest_modelopt.variants.base import BuildContext, Variant, WarningsToNotes


def cast_model(ctx: BuildContext, dtype: Any, device: str, *, precision: str) -> Variant:
    """Build a variant of the model with its floating-point weights cast to ``dtype`` on ``device``.

    Inputs are cast to follow; ``precision`` is the variant's (``fp16``, ``bf16``).
    """
    import torch

    from pytest_modelopt.torchtools import call_model

    model = ctx.model.eval().to(device=device, dtype=dtype)
    dtypes = {str(p.dtype) for p in model.parameters() if p.is_floating_point()}
    if dtypes != {str(dtype)}:
        raise NoEffectError(
            f"{ctx.technique}: {ctx.spec.name} still holds {sorted(dtypes)} weights after "
            f"casting to {dtype}"
        )
    path = ctx.workdir / "model.pt"
    torch.save(model.state_dict(), path)

    def convert(batch: Any) -> Any:
        if isinstance(batch, tuple):
            return tuple(convert(item) for item in batch)
        if isinstance(batch, torch.Tensor):
            batch = batch.to(device, non_blocking=True)
            return batch.to(dtype) if batch.is_floating_point() else batch
        return batch

    def run(batch: object) -> object:
        with torch.inference_mode():
            return call_model(model, convert(batch))

    return Variant(
        run,
        (path,),
        runtime=f"torch {torch.__version__}",
        precision=precision,
        device=device,
        details={"weight_dtypes": sorted(dtypes)},
        model=model,
    )


@dataclass(frozen=True)
class Fp16Params:
    """Parameters of ``fp16``."""

    allow_cpu: bool = param(
        False, 'without a CUDA GPU, skip unless `True` (then labelled "emulated on CPU")'
    )


@register_technique(
    "fp16",
    backend="torch",
    description="half precision on CUDA; on a CPU only with allow_cpu=True, labelled emulated",
    params=Fp16Params,
)
def build_fp16(ctx: BuildContext) -> Variant:
    """Cast the model to fp16 on CUDA; on a CPU only with ``allow_cpu``, labelled emulated."""
    import torch

    if torch.cuda.is_available():
        return cast_model(ctx, torch.float16, "cuda", precision="fp16")
    if not ctx.params["allow_cpu"]:
        raise HardwareMissing(
            "fp16: needs a CUDA GPU, none available; CPUs emulate fp16 (measured: resnet18 34x "
            "slower than fp32); pass params={'fp16': {'allow_cpu': True}} to measure it anyway"
        )
    with WarningsToNotes() as recorded:
        variant = cast_model(ctx, torch.float16, "cpu", precision="fp16")
    variant.precision = "fp16 (emulated on CPU)"
    variant.notes += [
        *recorded.notes,
        "fp16 on a CPU without native fp16 arithmetic is emulated: expect it to be slower",
    ]
    return variant


@register_technique(
    "bf16",
    backend="torch",
    isa="avx512_bf16|amx_bf16",
    description="bfloat16 weights and activations on CPUs with native bf16 (AVX512-BF16, AMX)",
)
def build_bf16(ctx: BuildContext) -> Variant:
    """Cast the model to bfloat16 on the CPU; it requires native bf16 (AVX512-BF16 or AMX)."""
    import torch

    with WarningsToNotes() as recorded:
        variant = cast_model(ctx, torch.bfloat16, "cpu", precision="bf16")
    variant.notes += recorded.notes
    return variant
