"""Ahead-of-time graph capture (torch.export) and compilation (torch.compile with inductor)."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from pytest_modelopt.errors import BuildError, NoEffectError
from pytest_modelopt.measure.conditions import fixed_threads
from pytest_modelopt.parameters import param
from pytest_modelopt.registry import register_technique
from pytest_modelopt.variants.base import BuildContext, Restore, Variant, WarningsToNotes


def example_args(example: Any) -> tuple[Any, ...]:
    """Return a spec's example input as positional arguments: a tuple as is, else a 1-tuple."""
    return example if isinstance(example, tuple) else (example,)


def export_program(model: Any, example: Any, technique: str, model_name: str) -> Any:
    """torch.export's ExportedProgram of ``model``, or a BuildError with torch's reason.

    The batch dimension of every tensor input is left dynamic (``Dim.AUTO``: dynamic where the
    model allows it), so the program runs on the accuracy batches too.
    """
    import torch

    # A dimension of size 1 is specialized by torch.export, so a single-item example would give a
    # program that only runs at batch 1: trace on the example repeated twice instead.
    args = tuple(
        torch.cat([arg, arg])
        if isinstance(arg, torch.Tensor) and arg.dim() and len(arg) == 1
        else arg
        for arg in example_args(example)
    )
    dynamic = tuple(
        {0: torch.export.Dim.AUTO} if isinstance(arg, torch.Tensor) and arg.dim() else None
        for arg in args
    )
    try:
        return torch.export.export(model.eval(), args, dynamic_shapes=dynamic)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise BuildError(
            f"{technique}: torch.export could not capture {model_name}: "
            f"{type(error).__name__}: {first}"
        ) from error


@register_technique(
    "export",
    backend="torch",
    description="torch.export with a dynamic batch dimension, saved as .pt2; runs the program "
    "loaded back",
)
def build_export(ctx: BuildContext) -> Variant:
    """Capture the model with torch.export, save it as .pt2 and run the program loaded back."""
    import torch

    with WarningsToNotes() as recorded:
        program = export_program(ctx.model, ctx.spec.example_input, ctx.technique, ctx.spec.name)
        path = ctx.workdir / "model.pt2"
        torch.export.save(program, str(path))
        variant = exported_variant(path)  # run what was shipped
    operators = sum(1 for node in program.graph.nodes if node.op == "call_function")
    if operators == 0:
        raise NoEffectError(f"export captured no operator of {ctx.spec.name}")
    variant.details = {
        "path": "torch.export.export",
        "graph_operators": operators,
        "loaded": True,
    }
    variant.notes = recorded.notes
    return variant


def restore_export(ctx: BuildContext, *, filename: str) -> Variant:
    """Load the program a build saved in ``ctx.workdir`` again (the build cache's Restore)."""
    return exported_variant(ctx.workdir / filename)


def exported_variant(path: Path) -> Variant:
    """Make the variant that runs the torch.export program saved at ``path``, loaded back."""
    import torch

    from pytest_modelopt.torchtools import call_model

    module = torch.export.load(str(path)).module()

    def run(batch: object) -> object:
        with torch.no_grad():
            return call_model(module, batch)

    return Variant(
        run,
        (path,),
        runtime=f"torch.export {torch.__version__}",
        precision="fp32",
        restore=Restore(
            "pytest_modelopt.variants.compilation:restore_export", {"filename": path.name}
        ),
    )


def use_inductor_cache(cache_dir: Path | None) -> Path | None:
    """Point inductor's on-disk cache at ``cache_dir/inductor`` for the rest of the process.

    Kept in pytest's cache directory, compiled kernels survive the session: a second run loads
    them instead of invoking the C++ compiler again. It stays set because a compiled model
    recompiles later, for each new input shape (the accuracy batches).
    """
    if cache_dir is None:
        return None
    directory = cache_dir / "inductor"
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)
    return directory


class Compiled(NamedTuple):
    """What :func:`compile_now` made: the callable, what compiling did, and how to re-prepare it."""

    call: Callable[..., Any]
    details: dict[str, Any]
    notes: list[str]
    prepare: Callable[[], list[str]]


def compile_now(
    model: Any, example: Any, ctx: BuildContext, *, freezing: bool, max_autotune: bool = False
) -> Compiled:
    """torch.compile ``model`` and run it on every shape it will see, so compiling is the build's.

    Returns the compiled callable, what the compilation did, the warnings it raised, and the
    variant's ``prepare``: the same calls again, which compile anew only if torch's compiled code
    was reset since (another build's ONNX export can reset it, see :func:`prepare_calls`).
    """
    import torch
    from torch._dynamo.utils import counters

    from pytest_modelopt.torchtools import call_model

    counters.clear()
    ctx.log(f"{ctx.spec.name}: torch.compile (inductor, freezing={freezing}); may take a minute")
    cache = use_inductor_cache(ctx.cache_dir)
    # Inductor reads ``freezing`` from its global config when it compiles, and torch.compile's
    # ``options`` do not reach the int8 lowering (it then fails on onednn.qlinear_prepack). So
    # each call sets the config, for the compilations a call may trigger (a new shape, a guard
    # on inference tensors or on the thread count). A PT2E graph recompiled
    # outside the patch ran dequantized weights through fp32 convolutions, no int8 kernel at
    # all. The example's shape and each other batch shape of the evaluation are compiled now,
    # under inference mode as the runs are, so no timed call compiles (static shapes: the
    # dynamic-shape int8 lowering fails).
    compiled = _under_inductor_config(
        torch.compile(model, backend="inductor", dynamic=False),
        freezing=freezing,
        max_autotune=max_autotune,
    )
    # Dynamo guards on torch's thread count too: the accuracy batches run at this process's
    # count, the timed calls at the harness's, so each count gets its graphs now.
    thread_counts = list(
        dict.fromkeys([ctx.threads or torch.get_num_threads(), torch.get_num_threads()])
    )
    others = _other_shapes(example, [batch for batch, _ in ctx.spec.accuracy_batches()])
    with WarningsToNotes() as recorded, torch.inference_mode():
        start = time.perf_counter()
        with fixed_threads(thread_counts[0]):
            call_model(compiled, example)
        seconds = time.perf_counter() - start
        _calls(compiled, example, others, thread_counts)
        other_seconds = time.perf_counter() - start - seconds
    graphs = counters["stats"]["unique_graphs"]
    if graphs == 0:
        raise NoEffectError(f"torch.compile captured no graph of {ctx.spec.name}")
    inductor = counters["inductor"]
    details = {
        "backend": "inductor",
        "freezing": freezing,
        "max_autotune": max_autotune,
        "compile_seconds": round(seconds, 3),
        "other_shapes": len(others),
        "other_shapes_compile_seconds": round(other_seconds, 3),
        "graphs": graphs,
        "graph_breaks": sum(counters["graph_break"].values()),
        "fx_graph_cache": {
            key.removeprefix("fxgraph_cache_"): value
            for key, value in inductor.items()
            if key.startswith("fxgraph_cache_")
        },
        "cache_dir": str(cache) if cache else None,
    }
    prepare = functools.partial(prepare_calls, compiled, example, others, thread_counts)
    return Compiled(compiled, details, recorded.notes, prepare)


def prepare_calls(
    compiled: Callable[..., Any], example: Any, others: list[Any], thread_counts: list[int]
) -> list[str]:
    """Run the compiled model as the build did, before it is timed; return what recompiled.

    Building an ONNX variant can reset every compiled graph of the process: the ONNX exporter's
    strict capture (``torch.export(strict=True)``) calls ``torch._dynamo.reset()``. The next call
    would then compile inside the measurement, with the session's warnings filters (pytest's
    ``error`` turned an inductor warning into a failed search). These calls compile there instead,
    their warnings kept as notes; where nothing was reset they cost a few calls.
    """
    import torch
    from torch._dynamo.utils import counters

    from pytest_modelopt.torchtools import call_model

    before = counters["stats"]["unique_graphs"]
    with WarningsToNotes() as recorded, torch.inference_mode():
        start = time.perf_counter()
        with fixed_threads(thread_counts[0]):
            call_model(compiled, example)
        _calls(compiled, example, others, thread_counts)
        seconds = time.perf_counter() - start
    graphs = counters["stats"]["unique_graphs"] - before
    if graphs == 0:
        return []
    return [
        f"compiled again before timing ({graphs} graphs, {seconds:.1f} s): torch's compiled code "
        "had been reset since the build (an ONNX export's strict capture resets it)",
        *recorded.notes,
    ]


def _calls(
    compiled: Callable[..., Any], example: Any, others: list[Any], thread_counts: list[int]
) -> None:
    """Call ``compiled`` on every other shape at every thread count, and on the example again."""
    from pytest_modelopt.torchtools import call_model

    for batch in others:
        for threads in thread_counts:
            with fixed_threads(threads):
                call_model(compiled, batch)
    for threads in thread_counts[1:]:
        with fixed_threads(threads):
            call_model(compiled, example)


def _other_shapes(example: Any, batches: list[Any]) -> list[Any]:
    """One batch of each input shape other than the example's."""
    seen, others = {_shapes(example)}, []
    for batch in batches:
        if _shapes(batch) not in seen:
            seen.add(_shapes(batch))
            others.append(batch)
    return others


def _under_inductor_config(
    compiled: Callable[..., Any], *, freezing: bool, max_autotune: bool
) -> Callable[..., Any]:
    """``compiled``, called with inductor's config set as it was compiled.

    Dynamo reads ``freezing`` while it traces, before any backend runs, so the config has to
    hold around the call that may compile. Writing ``freezing`` and restoring it costs about 4
    microseconds a call (``config.patch`` costs 25).
    """
    import torch

    config = torch._inductor.config
    if max_autotune:  # rare: patching both settings costs more

        def patched(*args: Any, **kwargs: Any) -> Any:
            with config.patch(freezing=freezing, max_autotune=True):
                return compiled(*args, **kwargs)

        return patched

    def call(*args: Any, **kwargs: Any) -> Any:
        saved = config.freezing
        config.freezing = freezing
        try:
            return compiled(*args, **kwargs)
        finally:
            config.freezing = saved

    return call


def _shapes(batch: Any) -> tuple[Any, ...]:
    return tuple(tuple(getattr(arg, "shape", ())) for arg in example_args(batch))


@dataclass(frozen=True)
class CompileParams:
    """Parameters of ``compile``."""

    freezing: bool = param(True, "inductor freezing (weights folded as constants)")
    max_autotune: bool = param(False, "inductor's autotuning (much longer compiles)")


@register_technique(
    "compile",
    backend="torch",
    description="torch.compile with inductor, freezing on; compile time recorded apart",
    params=CompileParams,
)
def build_compile(ctx: BuildContext) -> Variant:
    """Compile the model with torch.compile (inductor) now, so compile time is not timed.

    What ships is the fp32 state dict: the compiled kernels are rebuilt where it runs.
    """
    from pytest_modelopt.variants.torch_eager import saved_variant

    model = ctx.model.eval()
    compiled, details, notes, prepare = compile_now(
        model,
        ctx.spec.example_input,
        ctx,
        freezing=ctx.params["freezing"],
        max_autotune=ctx.params["max_autotune"],
    )
    # run under inference mode (eager_runner), as compile_now compiled it: no recompilation
    return saved_variant(
        ctx,
        compiled,
        model.state_dict(),
        runtime="torch.compile",
        precision="fp32",
        details=details,
        notes=notes,
        prepare=prepare,
    )
