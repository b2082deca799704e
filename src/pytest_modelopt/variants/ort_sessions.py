"""ONNX Runtime sessions as the variants run them: providers by hardware, options, runners.

A CPU session is configured for latency (all graph optimizations, the harness's intra-op threads,
spinning stopped between runs) and can be rebuilt in a worker process from its file
(:func:`ort_runner`) or with ORT's profiling on (:func:`ort_profiler`); a GPU one binds its inputs
and outputs where they lie (IO binding), and TensorRT gets an engine cache and a batch profile.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_modelopt.errors import PackageMissing

if TYPE_CHECKING:
    import onnxruntime

    from pytest_modelopt.variants.base import BuildContext


# Execution providers, best first; the first available one that the hardware supports runs.
TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"


PROVIDER_ORDER = (TENSORRT, CUDA, CPU)


_NUMPY_TYPES = {"torch.float32": "float32", "torch.float16": "float16", "torch.int64": "int64"}


def providers_for(ctx: BuildContext) -> list[str]:
    """Return the execution providers to ask for, best first: the CPU alone without a GPU."""
    import onnxruntime

    available = set(onnxruntime.get_available_providers())
    wanted = [p for p in PROVIDER_ORDER if p in available]
    if not ctx.hardware.gpus:
        wanted = ["CPUExecutionProvider"]
    return wanted


def session_for(
    path: Path, ctx: BuildContext, providers: list[str] | None = None
) -> onnxruntime.InferenceSession:
    """Make the variant's session: the harness's threads, providers by hardware.

    TensorRT gets an engine cache and an optimization profile for the batch sizes the spec uses.
    """
    providers = providers or providers_for(ctx)
    chosen: list[Any] = [
        (name, tensorrt_options(path, ctx)) if name == TENSORRT else name for name in providers
    ]
    return make_session(str(path), ctx.threads, chosen)


def make_session(
    path: str, threads: int | None, providers: list[Any], *, profile_prefix: str | None = None
) -> onnxruntime.InferenceSession:
    """Make a session configured as ORT's own guidance says for latency.

    All graph optimizations, intra-op threads from the harness, sequential execution; with
    ``profile_prefix``, ORT's profiling on, its JSON written to a file of that prefix.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Spin while a run is under way (fast), stop once it returns: idle spinning threads would
    # steal the cores of whatever runs next in this process (the reference, another variant).
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return onnxruntime.InferenceSession(path, options, providers=providers)


def ort_runner(path: str, threads: int | None) -> Callable[[Any], Any]:
    """``run(batch)`` of a new CPU session on the model at ``path``: a worker process's loader."""
    return plain_runner(make_session(path, threads, ["CPUExecutionProvider"]))


def ort_profiler(path: str, threads: int | None) -> Callable[[Any, int], dict[str, float]]:
    """Return the variant's ``profiler``: ``profile(batch, calls)``, ms per call by operator.

    Milliseconds per call by ``op_type`` of a CPU session on the model at ``path`` with ORT's
    profiling on (node events of the calls after a warm-up; a fused node counts under the type
    ORT gives it).
    """

    def profile(batch: Any, calls: int) -> dict[str, float]:
        import tempfile

        from pytest_modelopt.profiling import WARMUP_CALLS, per_call

        with tempfile.TemporaryDirectory(prefix="modelopt-ort-profile-") as directory:
            session = make_session(
                path, threads, ["CPUExecutionProvider"], profile_prefix=f"{directory}/ort"
            )
            run = plain_runner(session)
            for _ in range(WARMUP_CALLS + calls):
                run(batch)
            events = json.loads(Path(session.end_profiling()).read_text())
        runs = sorted(e["ts"] for e in events if e.get("name") == "model_run")
        start = runs[WARMUP_CALLS] if len(runs) > WARMUP_CALLS else 0
        totals: dict[str, float] = {}
        for event in events:
            node = event.get("cat") == "Node" and event["name"].endswith("_kernel_time")
            if node and event["ts"] >= start:
                name = event.get("args", {}).get("op_name", event["name"])
                totals[name] = totals.get(name, 0.0) + event["dur"] / 1e3
        return per_call(totals, calls)

    return profile


def tensorrt_options(path: Path, ctx: BuildContext) -> dict[str, Any]:
    """Return the TensorRT provider's options for the variant.

    An engine cache beside the variant (the engine is built on the first call, once), fp16 where
    ``params["fp16"]`` asks for it, and one optimization profile from batch 1 to the largest
    batch the spec feeds, tuned for the timed batch.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    batches = [ctx.spec.example_input] + [x for x, _ in ctx.spec.accuracy_batches()]
    largest = max(_batch_size(batch) for batch in batches)
    timed = _batch_size(ctx.spec.example_input)
    shapes: dict[str, list[str]] = {"min": [], "opt": [], "max": []}
    for graph_input in graph.input:
        rest = [str(d.dim_value) for d in graph_input.type.tensor_type.shape.dim[1:]]
        for key, size in (("min", 1), ("opt", timed), ("max", largest)):
            shapes[key].append(f"{graph_input.name}:{'x'.join([str(size), *rest])}")
    cache = ctx.workdir / "tensorrt_cache"
    cache.mkdir(exist_ok=True)
    return {
        "device_id": 0,
        "trt_fp16_enable": bool(ctx.params.get("fp16", False)),
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_builder_optimization_level": 3,
        "trt_profile_min_shapes": ",".join(shapes["min"]),
        "trt_profile_opt_shapes": ",".join(shapes["opt"]),
        "trt_profile_max_shapes": ",".join(shapes["max"]),
    }


def plain_runner(session: onnxruntime.InferenceSession) -> Callable[[Any], Any]:
    """Return a run that feeds host arrays (a torch tensor is read as numpy) to ``session``."""
    import numpy as np

    names = [i.name for i in session.get_inputs()]

    def run(batch: Any) -> Any:
        items = batch if isinstance(batch, tuple) else (batch,)
        feed = {
            name: np.ascontiguousarray(item.numpy() if hasattr(item, "numpy") else item)
            for name, item in zip(names, items, strict=True)
        }
        return session.run(None, feed)[0]

    return run


def bound_runner(session: onnxruntime.InferenceSession) -> Callable[[Any], Any]:
    """Return a run with IO binding, as ORT advises on GPU.

    CUDA tensors are bound where they lie (no copy), host inputs are copied once by ORT, and
    outputs stay on the device until someone reads them.
    """
    import numpy as np

    names = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    binding = session.io_binding()

    def run(batch: Any) -> Any:
        items = batch if isinstance(batch, tuple) else (batch,)
        for name, item in zip(names, items, strict=True):
            if getattr(item, "is_cuda", False):
                tensor = item.contiguous()
                binding.bind_input(
                    name,
                    "cuda",
                    tensor.device.index or 0,
                    np.dtype(_NUMPY_TYPES[str(tensor.dtype)]).type,
                    tuple(tensor.shape),
                    tensor.data_ptr(),
                )
            else:
                host = item.numpy() if hasattr(item, "numpy") else item
                binding.bind_cpu_input(name, np.ascontiguousarray(host))
        for name in outputs:
            binding.bind_output(name, "cuda")
        session.run_with_iobinding(binding)
        return DeviceOutput(binding.get_outputs()[0])

    return run


class DeviceOutput:
    """An output left on the GPU; copied to the host only when read as an array."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        array = self.value.numpy()
        return array if dtype is None else array.astype(dtype)


def require_provider(provider: str, technique: str) -> list[str]:
    """Return ``provider`` first, then CUDA and CPU for nodes it cannot run.

    A PackageMissing where this ONNX Runtime lacks ``provider``.
    """
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if provider not in available:
        raise PackageMissing(
            f"{technique}: ONNX Runtime here has no {provider} (providers: "
            f"{', '.join(available)}); install onnxruntime-gpu"
        )
    return [p for p in PROVIDER_ORDER[PROVIDER_ORDER.index(provider) :] if p in available]


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, tuple) else batch
    return int(first.shape[0])
