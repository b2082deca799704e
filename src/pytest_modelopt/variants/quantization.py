"""Integer quantization of torch models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pytest_modelopt.errors import BuildError, NoEffectError, ParameterError, SpecError
from pytest_modelopt.parameters import param
from pytest_modelopt.registry import register_technique
from pytest_modelopt.variants.base import BuildContext, Variant, WarningsToNotes

if TYPE_CHECKING:
    from torch import nn

    from pytest_modelopt.hardware import Hardware

# Subclasses of torch layers whose forward computes exactly what the base class's does, so they can
# be quantized as the base class. torch's quantization matches exact types and silently skips
# subclasses: timm's Linear (a subclass that only adds a dtype cast for TorchScript) is the common
# case, and left alone it makes quantize_dynamic a no-op on every timm classifier head.
EQUIVALENT_SUBCLASSES = {"timm.layers.linear.Linear"}
# The profiler keys of int8 matrix kernels: oneDNN's, as inductor lowers a PT2E graph, and the
# quantized engine's, as an FX-converted module calls them.
INT8_OPERATOR_PREFIXES = (
    "onednn::qconv",
    "onednn::qlinear",
    "quantized::conv",
    "quantized::linear",
)


def quantized_engine(hardware: Hardware) -> str:
    """Return the quantized kernel library for this CPU: x86 (fbgemm/onednn) or qnnpack on ARM."""
    import torch

    supported = torch.backends.quantized.supported_engines
    preferred = (
        ["qnnpack"] if hardware.cpu.arch.lower() in {"aarch64", "arm64"} else ["x86", "fbgemm"]
    )
    for engine in preferred:
        if engine in supported:
            return engine
    raise BuildError(f"no quantized engine for {hardware.cpu.arch}; torch offers {supported}")


@dataclass(frozen=True)
class DynamicInt8Params:
    """Parameters of ``dynamic_int8``."""

    path: Literal["auto", "torch.ao", "torchao"] = param(
        "auto",
        '`"torch.ao"` (`quantize_dynamic`, fbgemm/x86 or qnnpack), `"torchao"` '
        '(`quantize_`, Linear only), `"auto"` = torch.ao: torchao\'s int8 tensors run '
        "eagerly were 23x slower than fp32 here",
    )


@register_technique(
    "dynamic_int8",
    backend="torch",
    description="int8 weights, activations quantized at run time (Linear, LSTM, GRU)",
    params=DynamicInt8Params,
)
def build_dynamic_int8(ctx: BuildContext) -> Variant:
    """``path``: ``torch.ao`` (quantize_dynamic), ``torchao`` (quantize_), or ``auto``.

    ``auto`` takes torch.ao: torchao's int8 tensor subclass is meant to be compiled, and run
    eagerly it was 23x slower than fp32 on a 256x512 MLP here, where torch.ao's fbgemm kernels run
    at fp32 speed; torchao also does not cover LSTM and GRU.
    """
    path = ctx.params["path"]
    if path not in ("auto", "torch.ao", "torchao"):
        raise ParameterError(
            f"dynamic_int8: path must be 'auto', 'torch.ao' or 'torchao', got {path!r}"
        )
    if path == "torchao":
        return _dynamic_int8_torchao(ctx)
    return _dynamic_int8_torch_ao(ctx)


def _dynamic_int8_torch_ao(ctx: BuildContext) -> Variant:
    import torch
    from torch import nn

    engine = quantized_engine(ctx.hardware)
    torch.backends.quantized.engine = engine
    model = ctx.model.eval()
    targets: set[type[nn.Module]] = {nn.Linear, nn.LSTM, nn.GRU}
    notes = treat_equivalent_subclasses_as_base(model, targets)
    with WarningsToNotes() as recorded:
        quantized = torch.ao.quantization.quantize_dynamic(model, targets, dtype=torch.qint8)
    changed = [
        name
        for name, module in quantized.named_modules()
        if type(module).__module__.startswith("torch.ao.nn.quantized.dynamic")
    ]
    if not changed:
        skipped = _unquantizable_subclasses(quantized, targets)
        hint = f"; subclasses left alone: {', '.join(skipped)}" if skipped else ""
        raise NoEffectError(
            f"dynamic_int8 changed nothing in {ctx.spec.name}: it has no nn.Linear, nn.LSTM or "
            f"nn.GRU layer that quantize_dynamic can replace{hint}. Use a technique that "
            "quantizes convolutions (static_int8) for this model."
        )
    coverage, coverage_note = int8_coverage("dynamic_int8", model, quantized)
    return _quantized_variant(
        ctx,
        "dynamic_int8",
        quantized,
        precision="int8 weights, dynamic int8 activations",
        details={
            "path": "torch.ao.quantization.quantize_dynamic",
            "engine": engine,
            "quantized_layers": len(changed),
            **coverage,
        },
        notes=[*notes, coverage_note, *recorded.notes],
    )


def _dynamic_int8_torchao(ctx: BuildContext) -> Variant:
    from pytest_modelopt.registry import Requirements

    Requirements(packages=("torchao",)).check(ctx.hardware)
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    model = ctx.model.eval()
    with WarningsToNotes() as recorded:
        quantize_(model, Int8DynamicActivationInt8WeightConfig())
    changed = [
        name
        for name, module in model.named_modules()
        if type(getattr(module, "weight", None)).__module__.startswith("torchao")
    ]
    if not changed:
        raise NoEffectError(
            f"dynamic_int8 (torchao) changed nothing in {ctx.spec.name}: torchao quantizes "
            "Linear layers only, and it has none"
        )
    return _quantized_variant(
        ctx,
        "dynamic_int8",
        model,
        precision="int8 weights, dynamic int8 activations",
        details={"path": "torchao.quantization.quantize_", "quantized_layers": len(changed)},
        notes=[*recorded.notes, "torchao's int8 tensors run eagerly here; compile to speed up"],
    )


def _quantized_variant(
    ctx: BuildContext,
    technique: str,
    model: Any,
    *,
    precision: str,
    details: dict[str, Any],
    notes: list[str],
    run_model: Any = None,
    state: dict[str, Any] | None = None,
) -> Variant:
    """Save ``state`` and wrap ``run_model`` as the variant.

    ``state`` defaults to the model's state dict, ``run_model`` to the model.
    """
    import torch

    from pytest_modelopt.variants.torch_eager import eager_runner

    path = ctx.workdir / "model.pt"
    torch.save(model.state_dict() if state is None else state, path)
    runner = run_model if run_model is not None else model

    return Variant(
        technique,
        eager_runner(runner),
        (path,),
        runtime=f"torch {torch.__version__}",
        precision=precision,
        details=details,
        notes=notes,
    )


@dataclass(frozen=True)
class StaticInt8Params:
    """Parameters of ``static_int8``."""

    path: Literal["auto", "pt2e", "fx"] = param(
        "auto",
        '`"pt2e"` (torchao `X86InductorQuantizer`, compiled with inductor), `"fx"` '
        '(`prepare_fx`/`convert_fx`, the engine\'s default qconfig mapping), `"auto"` = '
        "pt2e where torchao is installed on x86",
    )
    calibration_batches: int = param(16, "calibration batches taken from `spec.calibration_data`")


@register_technique(
    "static_int8",
    backend="torch",
    description="calibrated post-training int8: PT2E (torchao, compiled) or FX graph mode",
    params=StaticInt8Params,
)
def build_static_int8(ctx: BuildContext) -> Variant:
    """Quantize weights and activations to int8, calibrated on the spec's calibration data.

    ``path``: ``pt2e`` (torchao's X86InductorQuantizer, then inductor), ``fx``
    (prepare_fx/convert_fx with the engine's qconfig mapping), or ``auto``: pt2e where torchao is
    installed on an x86 CPU, else fx.
    """
    import importlib.util

    path = ctx.params["path"]
    if path not in ("auto", "pt2e", "fx"):
        raise ParameterError(f"static_int8: path must be 'auto', 'pt2e' or 'fx', got {path!r}")
    x86 = ctx.hardware.cpu.arch.lower() in {"x86_64", "amd64", "x86"}
    if path == "auto":
        path = "pt2e" if importlib.util.find_spec("torchao") and x86 else "fx"
    batches = calibration_batches(ctx, "static_int8")
    if path == "pt2e":
        return _static_int8_pt2e(ctx, batches)
    return _static_int8_fx(ctx, batches)


def calibration_batches(ctx: BuildContext, technique: str) -> list[Any]:
    """Return the first ``calibration_batches`` of the spec's calibration data.

    A spec without calibration data is a SpecError: ``technique`` calibrates activation ranges.
    """
    count = int(ctx.params["calibration_batches"])
    batches = list(ctx.spec.calibration_data)[:count]
    if not batches:
        raise SpecError(
            f"{technique} calibrates activation ranges, and the ModelSpec {ctx.spec.name!r} has "
            "no calibration_data: pass a few representative input batches"
        )
    return batches


def _static_int8_fx(ctx: BuildContext, batches: list[Any]) -> Variant:
    import torch
    from torch import nn

    from pytest_modelopt.torchtools import call_model

    engine = quantized_engine(ctx.hardware)
    torch.backends.quantized.engine = engine
    model = ctx.model.eval()
    notes = treat_equivalent_subclasses_as_base(model, {nn.Linear, nn.Conv2d})
    with WarningsToNotes() as recorded, torch.no_grad():
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        example = _args(ctx.spec.example_input)
        try:
            prepared = prepare_fx(model, get_default_qconfig_mapping(engine), example)
        except Exception as error:
            raise fx_trace_error(model, ctx.spec.name, "static_int8", error) from error
        for batch in batches:
            call_model(prepared, batch)
        quantized = convert_fx(prepared)
    count = _count_quantized_modules(quantized)
    if count == 0:
        raise NoEffectError(
            f"static_int8 (FX) quantized no layer of {ctx.spec.name}: no Conv or Linear matched "
            f"the {engine} qconfig mapping"
        )
    coverage, coverage_note = int8_coverage("static_int8", model, quantized)
    return _quantized_variant(
        ctx,
        "static_int8",
        quantized,
        precision="int8 weights, static int8 activations",
        details={
            "path": "fx (torch.ao prepare_fx/convert_fx)",
            "engine": engine,
            "quantized_layers": count,
            "calibration_batches": len(batches),
            **coverage,
        },
        notes=[*notes, coverage_note, *recorded.notes],
    )


def _static_int8_pt2e(ctx: BuildContext, batches: list[Any]) -> Variant:
    import torch
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from pytest_modelopt.torchtools import call_model
    from pytest_modelopt.variants.compilation import compile_now, export_program
    from pytest_modelopt.variants.torch_eager import eager_runner

    with WarningsToNotes() as recorded, torch.no_grad():
        program = export_program(ctx.model, ctx.spec.example_input, "static_int8", ctx.spec.name)
        quantizer = x86.X86InductorQuantizer()
        quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(program.module(), quantizer)
        for batch in batches:
            call_model(prepared, batch)
        converted = convert_pt2e(prepared)
    quantize_ops = sum(
        1
        for node in converted.graph.nodes
        if node.op == "call_function" and "quantize_per_tensor" in str(node.target)
    )
    if quantize_ops == 0:
        raise NoEffectError(
            f"static_int8 (PT2E) quantized nothing in {ctx.spec.name}: X86InductorQuantizer "
            "annotated no operator"
        )
    compiled, compile_details, compile_notes = compile_now(
        converted, ctx.spec.example_input, ctx, freezing=True
    )
    kernels = int8_kernels(eager_runner(compiled), ctx.spec.example_input)
    if not kernels:
        raise NoEffectError(
            f"static_int8 (PT2E) on {ctx.spec.name}: the compiled graph runs no int8 kernel "
            "(inductor did not lower its quantize/dequantize pairs to oneDNN); use "
            'params={"path": "fx"}'
        )
    state = _graph_state(converted)
    coverage, coverage_note = _graph_coverage(state)
    variant = _quantized_variant(
        ctx,
        "static_int8",
        converted,
        precision="int8 weights, static int8 activations",
        details={
            "path": "pt2e (torchao X86InductorQuantizer, inductor)",
            "quantize_ops": quantize_ops,
            "calibration_batches": len(batches),
            "int8_kernels": kernels,
            **coverage,
            **compile_details,
        },
        notes=[coverage_note, *recorded.notes, *compile_notes],
        run_model=compiled,
        state=state,
    )
    variant.runtime = f"torch.compile {torch.__version__}"
    return variant


def int8_kernels(run: Any, batch: Any) -> dict[str, int]:
    """Count the int8 operators one call of ``run`` executes, by torch profiler key.

    What proves a compiled PT2E graph int8: inductor runs a quantize/dequantize pair it did not
    fuse as float arithmetic around an fp32 convolution, with the same weights and outputs.
    """
    import torch

    from pytest_modelopt.profiling import quiet_stderr

    run(batch)
    with quiet_stderr(), torch.autograd.profiler.profile(use_device=None) as profiler:
        run(batch)
    return {
        event.key: event.count
        for event in profiler.key_averages()
        if event.key.startswith(INT8_OPERATOR_PREFIXES)
    }


def _graph_coverage(state: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Count the weights a PT2E graph reads, int8 and fp32: it has no layers to name."""
    import torch

    int8 = sum(t.numel() for t in state.values() if t.dtype in (torch.int8, torch.uint8))
    fp32 = sum(t.numel() for t in state.values() if t.is_floating_point() and t.dim() > 0)
    share = fp32 / (int8 + fp32) if int8 + fp32 else 0.0
    note = (
        f"static_int8: {int8:,} weights in int8, {fp32:,} left in fp32 ({share:.0%} of them: "
        "biases, and what X86InductorQuantizer does not annotate, such as embeddings, "
        "recurrent layers and norms)"
    )
    details = {
        "int8_weight_count": int8,
        "fp32_weight_count": fp32,
        "fp32_weight_share": round(share, 4),
    }
    return details, note


def _graph_state(module: Any) -> dict[str, Any]:
    """Return the tensors a graph module's graph reads.

    convert_pt2e folds int8 weights into new attributes and leaves the fp32 originals on the
    module, unused; they must not count.
    """
    used = {node.target for node in module.graph.nodes if node.op == "get_attr"}
    return {name: value for name, value in module.state_dict().items() if name in used}


@dataclass(frozen=True)
class QatInt8Params:
    """Parameters of ``qat_int8``."""

    steps: int = param(30, "fine-tuning steps with fake quantization")
    lr: float = param(1e-4, "Adam learning rate")


@register_technique(
    "qat_int8",
    backend="torch",
    description="quantization-aware fine-tuning on the spec's train_data, then int8 (FX)",
    params=QatInt8Params,
)
def build_qat_int8(ctx: BuildContext) -> Variant:
    """Fine-tune with fake quantization on the spec's train_data, then convert to int8 (FX).

    No fine-tuning step, or no layer quantized, is a NoEffectError.
    """
    import torch
    from torch import nn

    from pytest_modelopt.torchtools import fine_tune, training_batches

    batches = training_batches(ctx.spec, "qat_int8")
    engine = quantized_engine(ctx.hardware)
    torch.backends.quantized.engine = engine
    model = ctx.model.train()
    notes = treat_equivalent_subclasses_as_base(model, {nn.Linear, nn.Conv2d})
    with WarningsToNotes() as recorded:
        from torch.ao.quantization import get_default_qat_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_qat_fx

        example = _args(ctx.spec.example_input)
        try:
            prepared = prepare_qat_fx(model, get_default_qat_qconfig_mapping(engine), example)
        except Exception as error:
            raise fx_trace_error(model, ctx.spec.name, "qat_int8", error) from error
        ctx.log(f"{ctx.spec.name}: quantization-aware fine-tuning, {ctx.params['steps']} steps")
        steps = fine_tune(prepared, batches, steps=int(ctx.params["steps"]), lr=ctx.params["lr"])
        quantized = convert_fx(prepared.eval())
    count = _count_quantized_modules(quantized)
    if count == 0 or steps == 0:
        raise NoEffectError(
            f"qat_int8 on {ctx.spec.name}: {steps} fine-tuning steps, {count} quantized layers"
        )
    coverage, coverage_note = int8_coverage("qat_int8", model, quantized)
    return _quantized_variant(
        ctx,
        "qat_int8",
        quantized,
        precision="int8 weights, static int8 activations",
        details={
            "path": "fx (torch.ao prepare_qat_fx/convert_fx)",
            "engine": engine,
            "quantized_layers": count,
            "fine_tune_steps": steps,
            **coverage,
        },
        notes=[*notes, coverage_note, *recorded.notes],
    )


def fx_trace_error(
    model: nn.Module, model_name: str, technique: str, error: Exception
) -> BuildError:
    """Return a BuildError naming the innermost submodule that torch.fx cannot trace."""
    name, module = _untraceable_module(model)
    where = (
        f"module {name!r} ({_qualname(type(module))})"
        if name
        else f"the forward of {_qualname(type(model))} itself"
    )
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return BuildError(
        f"{technique}: torch.fx cannot trace {model_name}: {where} failed "
        f"({type(error).__name__}: {first}). Make that forward traceable (no data-dependent "
        "control flow), or use static_int8 with path='pt2e', which captures with torch.export"
    )


def _untraceable_module(model: nn.Module) -> tuple[str, nn.Module]:
    import torch

    def traces(module: nn.Module) -> bool:
        try:
            torch.fx.symbolic_trace(module)
        except Exception:
            return False
        return True

    name, module = "", model
    while True:
        failing = next(
            (
                (child_name, child)
                for child_name, child in module.named_children()
                if not traces(child)
            ),
            None,
        )
        if failing is None:
            return name, module
        name = f"{name}.{failing[0]}" if name else failing[0]
        module = failing[1]


def int8_coverage(
    technique: str, original: nn.Module, quantized: nn.Module
) -> tuple[dict[str, Any], str]:
    """Say which layers a torch.ao quantization turned into int8 kernels, and which it left.

    Which weights it left in fp32 (an embedding, a convolution that dynamic quantization does not
    cover): the variant's details and a note. An embedding-heavy model barely shrinks, and this
    says why.
    """
    int8: dict[str, int] = {}
    fp32: dict[str, int] = {}
    for module in quantized.modules():
        cls = type(module)
        if ".quantized" in cls.__module__ and not _is_quantization_plumbing(cls.__name__):
            int8[cls.__name__] = int8.get(cls.__name__, 0) + 1
        weights = sum(p.numel() for p in module.parameters(recurse=False) if p.is_floating_point())
        if weights:
            fp32[cls.__name__] = fp32.get(cls.__name__, 0) + weights
    total = sum(p.numel() for p in original.parameters() if p.is_floating_point())
    share = sum(fp32.values()) / total if total else 0.0
    layers = ", ".join(f"{name} x{count}" for name, count in sorted(int8.items()))
    left = ", ".join(f"{name} {count:,}" for name, count in sorted(fp32.items(), key=_largest))
    note = f"{technique}: int8 layers: {layers or 'none'}; "
    if fp32:
        note += f"weights left in fp32: {left} ({share:.0%} of the model's weights)"
        if share >= 0.5:
            note += ": the size shrinks little"
    else:
        note += "no fp32 weights left"
    details = {"int8_layers": int8, "fp32_weights": fp32, "fp32_weight_share": round(share, 4)}
    return details, note


def _is_quantization_plumbing(name: str) -> bool:
    """Modules that hold or convert int8 data but are not layers of the model."""
    return "Packed" in name or name in {"Quantize", "DeQuantize"}


def _largest(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def _count_quantized_modules(model: nn.Module) -> int:
    return sum(
        1
        for module in model.modules()
        if type(module).__module__.startswith("torch.ao.nn.quantized")
    )


def _args(example: Any) -> tuple[Any, ...]:
    return example if isinstance(example, tuple) else (example,)


def treat_equivalent_subclasses_as_base(model: nn.Module, bases: set[type[nn.Module]]) -> list[str]:
    """Give known-equivalent subclass instances their base class, for exact-type matching."""
    notes = []
    for name, module in model.named_modules():
        cls = type(module)
        base = next((b for b in bases if issubclass(cls, b) and cls is not b), None)
        if base is not None and _qualname(cls) in EQUIVALENT_SUBCLASSES:
            module.__class__ = base  # same attributes and parameters, base forward
            notes.append(f"{name}: {_qualname(cls)} quantized as {_qualname(base)}")
    return _summarize(notes)


def _unquantizable_subclasses(model: nn.Module, bases: set[type[nn.Module]]) -> list[str]:
    return sorted(
        {
            _qualname(type(m))
            for m in model.modules()
            if any(isinstance(m, b) and type(m) is not b for b in bases)
        }
    )


def _summarize(notes: list[str]) -> list[str]:
    if len(notes) <= 3:
        return notes
    return [*notes[:2], f"... and {len(notes) - 2} more layers treated the same way"]


def _qualname(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
