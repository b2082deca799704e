"""How an OpenVINO variant runs: a compilation per input shape, and a runner per hint.

:class:`ShapeCompiled` compiles the model once for each input shape it is called with (static
shapes run faster on the CPU plugin); a LATENCY runner binds the caller's arrays to one request
without copies, a THROUGHPUT one splits the batch across streams. A worker process rebuilds the
same from the saved IR (:func:`openvino_runner`), or with per-layer counters
(:func:`openvino_profiler`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any


def runtime_precisions(compiled: Any) -> dict[str, int]:
    """How many of the compiled graph's executed nodes run in each precision (``f32``, ``i8``)."""
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "runtimePrecision" in info and op.get_type_name() not in {"Parameter", "Result"}:
            counts[str(info["runtimePrecision"].value).strip().lower()] += 1
    return dict(sorted(counts.items()))


def openvino_runner(xml: str, device: str, config: dict[str, Any]) -> Callable[[Any], Any]:
    """``run(batch)`` of the saved IR compiled with ``config``: a worker process's loader."""
    import openvino as ov

    core = ov.Core()
    return runner(ShapeCompiled(core, core.read_model(xml), device, config))


def openvino_profiler(
    xml: str, device: str, config: dict[str, Any]
) -> Callable[[Any, int], dict[str, float]]:
    """Return the variant's ``profiler``: ``profile(batch, calls)``, ms per call by operator.

    Milliseconds per call by layer type and kernel (``Convolution (brgconv_avx2_FP32)``: a change
    of kernel shows as one row leaving and another coming) of the saved IR compiled with
    ``config`` and ``PERF_COUNT``, one request on the whole batch (a THROUGHPUT variant too),
    summed over the calls.
    """

    def profile(batch: Any, calls: int) -> dict[str, float]:
        import openvino as ov

        from pytest_modelopt.profiling import WARMUP_CALLS, per_call

        core = ov.Core()
        models = ShapeCompiled(core, core.read_model(xml), device, {**config, "PERF_COUNT": True})
        request = models.bound_request(batch_arrays(batch))
        for _ in range(WARMUP_CALLS):
            request.infer()
        totals: Counter[str] = Counter()
        for _ in range(calls):
            request.infer()  # the counters are those of the last inference
            for layer in request.get_profiling_info():
                if layer.status == ov.ProfilingInfo.Status.EXECUTED:
                    name = f"{layer.node_type} ({layer.exec_type})"
                    totals[name] += layer.real_time.total_seconds() * 1e3
        return per_call(totals, calls)

    return profile


class ShapeCompiled:
    """A model compiled once for each input shape it is called with, as an expert deploys it.

    OpenVINO's CPU plugin runs a static-shape compilation faster than the same model with dynamic
    dimensions (mobilenetv3_small_100, 2 cores, ``benchmark_app``: 1.31-1.41 ms static against
    1.46-1.62 ms dynamic), and the converted model has a dynamic batch. Past ``MAX_STATIC_SHAPES``
    shapes, or where a shape cannot be made static, calls run on the dynamic compilation.
    """

    MAX_STATIC_SHAPES = 8

    def __init__(self, core: Any, model: Any, device: str, config: dict[str, Any]) -> None:
        self.core, self.model, self.device, self.config = core, model, device, config
        self.dtypes = [port.get_element_type().to_dtype() for port in model.inputs]
        self.static_failure: str | None = None  # why static shapes could not be used, if so
        self._compiled: dict[Any, Any] = {}  # input shapes (None: dynamic) -> compiled model
        self._requests: dict[int, Any] = {}  # id of a compiled model -> its request

    def compiled(self, shapes: tuple[tuple[int, ...], ...] | None = None) -> Any:
        """Return the compilation for ``shapes``, compiling it on first use.

        The dynamic one for ``None``, past the static limit, or once a static compilation has
        failed.
        """
        if shapes is not None and shapes not in self._compiled and self._static_allowed():
            try:
                self._compiled[shapes] = self._compile_static(shapes)
            except Exception as error:  # OpenVINO raises plain RuntimeErrors
                self.static_failure = first_line(error)
        if shapes not in self._compiled:
            shapes = None
            if None not in self._compiled:
                self._compiled[None] = self.core.compile_model(self.model, self.device, self.config)
        return self._compiled[shapes]

    def _static_allowed(self) -> bool:
        static = sum(shapes is not None for shapes in self._compiled)
        return not self.static_failure and static < self.MAX_STATIC_SHAPES

    def bound_request(self, arrays: list[Any]) -> Any:
        """Return a request of the compilation for these arrays' shapes, bound to the arrays.

        It reads them without a copy (a converted copy where the dtype differs: the tensor keeps
        it alive).
        """
        import numpy as np
        import openvino as ov

        if len(arrays) != len(self.dtypes):
            raise ValueError(
                f"the model takes {len(self.dtypes)} inputs, the batch has {len(arrays)}"
            )
        arrays = [
            np.ascontiguousarray(a, dtype=d) for a, d in zip(arrays, self.dtypes, strict=True)
        ]
        compiled = self.compiled(tuple(array.shape for array in arrays))
        request = self._requests.get(id(compiled))
        if request is None:
            request = self._requests[id(compiled)] = compiled.create_infer_request()
        for index, array in enumerate(arrays):
            request.set_input_tensor(index, ov.Tensor(array, shared_memory=True))
        return request

    def _compile_static(self, shapes: tuple[tuple[int, ...], ...]) -> Any:
        import openvino as ov

        static = self.model.clone()
        static.reshape({index: ov.PartialShape(list(shape)) for index, shape in enumerate(shapes)})
        return self.core.compile_model(static, self.device, self.config)


def runner(models: ShapeCompiled) -> Callable[[Any], Any]:
    """Run one batch: a single request (LATENCY), or split across streams (THROUGHPUT)."""
    if models.config.get("PERFORMANCE_HINT") == "THROUGHPUT":
        compiled = models.compiled()
        return _throughput_runner(compiled, int(compiled.get_property("NUM_STREAMS")))
    return _latency_runner(models)


def _latency_runner(models: ShapeCompiled) -> Callable[[Any], Any]:
    """One synchronous request whose inputs are bound once, as OpenVINO's ``benchmark_app`` does.

    ``request.infer(arrays)`` copies every input on every call (0.1 ms of a 1.4 ms mobilenetv3
    call on 2 cores); binding the caller's arrays as shared-memory tensors avoids the copy, and
    they are rebound only when the caller passes other objects or reshaped ones. Shared memory
    means an array changed in place is read as changed, as with any zero-copy runtime.
    """
    bound: list[tuple[Any, tuple[int, ...]]] = []  # the caller's objects, with their shapes
    current: list[Any] = []  # the request reading them

    def run(batch: Any) -> Any:
        items = list(batch) if isinstance(batch, tuple) else [batch]
        if [(id(item), _shape(item)) for item in items] != [(id(i), s) for i, s in bound]:
            current[:] = [models.bound_request(batch_arrays(batch))]
            bound[:] = [(item, _shape(item)) for item in items]
        (request,) = current
        request.infer()
        return request.get_output_tensor(0).data.copy()

    return run


def _shape(item: Any) -> tuple[int, ...]:
    return tuple(getattr(item, "shape", ()))


def _throughput_runner(compiled: Any, streams: int) -> Callable[[Any], Any]:
    """Split the batch across the compiled model's streams, run the parts in parallel."""
    import numpy as np
    import openvino as ov

    queue = ov.AsyncInferQueue(compiled, streams)
    results: dict[int, Any] = {}

    def done(request: Any, index: int) -> None:
        results[index] = request.get_output_tensor(0).data.copy()

    queue.set_callback(done)

    def run(batch: Any) -> Any:
        inputs = batch_arrays(batch)
        parts = min(streams, len(inputs[0]))
        pieces = [np.array_split(item, parts) for item in inputs]
        results.clear()
        for index in range(parts):
            queue.start_async([piece[index] for piece in pieces], index, share_inputs=True)
        queue.wait_all()
        return np.concatenate([results[index] for index in range(parts)])

    return run


def batch_arrays(batch: Any) -> list[Any]:
    """Return a batch's items as arrays (a torch tensor is read as numpy)."""
    items = batch if isinstance(batch, tuple) else (batch,)
    return [item.numpy() if hasattr(item, "numpy") else item for item in items]


def first_line(error: BaseException) -> str:
    """Return the first non-empty line of an error's message (OpenVINO's run to many)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__
