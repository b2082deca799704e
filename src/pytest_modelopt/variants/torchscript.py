"""TorchScript: trace, freeze, optimize_for_inference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_modelopt.errors import BuildError
from pytest_modelopt.registry import register_technique
from pytest_modelopt.variants.base import BuildContext, Variant, WarningsToNotes


@register_technique(
    "torchscript",
    backend="torch",
    description="TorchScript: trace on the example input, freeze, optimize_for_inference",
)
def build_torchscript(ctx: BuildContext) -> Variant:
    import torch

    model = ctx.model.eval()
    example = ctx.spec.example_input
    with WarningsToNotes() as recorded, torch.no_grad():
        try:
            traced = torch.jit.trace(model, example if isinstance(example, tuple) else (example,))
        except Exception as error:
            raise BuildError(
                f"torchscript: torch.jit.trace failed on {ctx.spec.name}: "
                f"{type(error).__name__}: {error}"
            ) from error
        optimized = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
        path = ctx.workdir / "model.ts"
        saved = _save_loadable(optimized, traced, path, recorded.notes)

    def run(batch: object) -> object:
        with torch.no_grad():
            return optimized(*batch) if isinstance(batch, tuple) else optimized(batch)

    return Variant(
        "torchscript",
        run,
        (path,),
        runtime=f"torch.jit {torch.__version__}",
        precision="fp32",
        details={"path": "trace", "frozen": True, "optimize_for_inference": True, "saved": saved},
        notes=recorded.notes,
    )


def _save_loadable(optimized: Any, traced: Any, path: Path, notes: list[str]) -> str:
    """Save the optimized module if it loads back; else the traced one, which always does.

    Some torch releases write frozen modules whose constants cannot be read back ("required
    keyword attribute 'value' is undefined"); the size would then count a file without weights.
    """
    import torch

    torch.jit.save(optimized, str(path))
    try:
        torch.jit.load(str(path))
    except RuntimeError as error:
        notes.append(
            "the frozen module does not load back after torch.jit.save "
            f"({str(error).splitlines()[0]}); saved the traced module instead, which users "
            "freeze after loading"
        )
        torch.jit.save(traced, str(path))
        torch.jit.load(str(path))
        return "traced"
    return "optimized"
