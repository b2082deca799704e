"""What a quantized torch model holds and runs: int8 layers, weights left in fp32, int8 kernels.

Every int8 technique proves its effect with these (``NoEffectError`` when there is none), and
states its coverage in its details and notes. Also: the layer torch.fx cannot trace, named, and
timm's Linear treated as torch's, so that exact-type matching quantizes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_modelopt.errors import BuildError

if TYPE_CHECKING:
    from torch import nn


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


def graph_coverage(state: dict[str, Any]) -> tuple[dict[str, Any], str]:
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


def graph_state(module: Any) -> dict[str, Any]:
    """Return the tensors a graph module's graph reads.

    convert_pt2e folds int8 weights into new attributes and leaves the fp32 originals on the
    module, unused; they must not count.
    """
    used = {node.target for node in module.graph.nodes if node.op == "get_attr"}
    return {name: value for name, value in module.state_dict().items() if name in used}


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


def count_quantized_modules(model: nn.Module) -> int:
    """Count the modules of torch.ao's quantized layers in ``model``."""
    return sum(
        1
        for module in model.modules()
        if type(module).__module__.startswith("torch.ao.nn.quantized")
    )


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


def unquantizable_subclasses(model: nn.Module, bases: set[type[nn.Module]]) -> list[str]:
    """Name the subclasses of ``bases`` in ``model``: exact-type matching leaves them in fp32."""
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
