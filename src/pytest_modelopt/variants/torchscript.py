"""TorchScript: script (or trace), freeze, optimize_for_inference.

torch 2.14 deprecates torch.jit; users still ship TorchScript, so the technique stays, the
deprecation is recorded in the variant's notes, and ``export`` is its successor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pytest_modelopt.errors import BuildError, ParameterError
from pytest_modelopt.parameters import param
from pytest_modelopt.registry import register_technique
from pytest_modelopt.variants.base import BuildContext, Variant, WarningsToNotes
from pytest_modelopt.worker import Loader


@dataclass(frozen=True)
class TorchscriptParams:
    """Parameters of ``torchscript``."""

    method: Literal["script", "trace"] = param(
        "script", '`"script"` (falls back to `"trace"`, the reason in the notes) or `"trace"`'
    )


@register_technique(
    "torchscript",
    backend="torch",
    description="TorchScript: script (else trace), freeze, optimize_for_inference",
    params=TorchscriptParams,
)
def build_torchscript(ctx: BuildContext) -> Variant:
    """Script the model (trace it where scripting fails, noted), freeze and optimize it."""
    import torch

    method = ctx.params["method"]
    if method not in ("script", "trace"):
        raise ParameterError(f"torchscript: method must be 'script' or 'trace', got {method!r}")
    model = ctx.model.eval()
    with WarningsToNotes() as recorded, torch.no_grad():
        if method == "script":
            try:
                traced = torch.jit.script(model)
            except Exception as error:
                reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
                recorded.notes.append(
                    f"torch.jit.script failed ({type(error).__name__}: {reason}); traced instead"
                )
                method = "trace"
        if method == "trace":
            traced = _trace(model, ctx)
        optimized = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
        path = ctx.workdir / "model.ts"
        saved = _save_loadable(optimized, traced, path, recorded.notes)

    def run(batch: object) -> object:
        with torch.no_grad():
            return optimized(*batch) if isinstance(batch, tuple) else optimized(batch)

    return Variant(
        run,
        (path,),
        runtime=f"torch.jit {torch.__version__}",
        precision="fp32",
        details={"path": method, "frozen": True, "optimize_for_inference": True, "saved": saved},
        notes=recorded.notes,
        # A worker loads the saved file (and freezes it there when the traced module was saved).
        loader=Loader(
            "pytest_modelopt.variants.torchscript:torchscript_runner",
            {"path": str(path), "freeze": saved == "traced"},
        ),
    )


def torchscript_runner(path: str, freeze: bool) -> Callable[[Any], Any]:
    """``run(batch)`` of the saved TorchScript module (a worker process's loader)."""
    import torch

    module = torch.jit.load(path).eval()
    if freeze:
        module = torch.jit.optimize_for_inference(torch.jit.freeze(module))

    def run(batch: Any) -> Any:
        with torch.no_grad():
            return module(*batch) if isinstance(batch, tuple) else module(batch)

    return run


def _trace(model: Any, ctx: BuildContext) -> Any:
    import torch

    example = ctx.spec.example_input
    try:
        return torch.jit.trace(model, example if isinstance(example, tuple) else (example,))
    except Exception as error:
        raise BuildError(
            f"torchscript: torch.jit.trace failed on {ctx.spec.name}: "
            f"{type(error).__name__}: {error}"
        ) from error


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
