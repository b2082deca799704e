"""Are our runtime variants configured as an expert would? Checked against the runtimes' own tools.

For each model, the same artifacts are timed four ways, each in its own process (a runtime's
threads would otherwise disturb the next one), in alternating order, ``--repeats`` times:

- ``ours onnxruntime``: our ``onnxruntime`` variant, timed as the harness times it: reloaded
  in a worker process of its own and called on the example batch in blocks;
- ``expert onnxruntime``: a hand-written session on the same ONNX file, as ONNX Runtime's
  performance guide configures one for latency (all graph optimizations, intra-op threads, one
  inter-op thread, sequential execution, default spinning), fed a prepared numpy array;
- ``ours openvino``: our ``openvino`` variant (LATENCY hint, the harness's threads), timed the
  same way;
- ``benchmark_app``: OpenVINO's own tool on the IR our variant saved, ``-hint latency`` and the
  same ``-nthreads``.

The figure is the median latency of one call (batch 1). Each repeat measures both sides back to
back, so ours / theirs is taken per repeat; the table gives each side's median of medians and the
median of those paired ratios with their range. The target: ours within 5% of each. This
machine's neighbours can slow it for seconds at a time, which neither side can see: when the
interquartile range of a row's paired ratios exceeds ``NOISY`` of their median (the engine's own
noise guard), the run is called inconclusive and should be repeated.

``benchmark_app`` reports the latency the runtime measures inside each request, which leaves out
the Python call around it (about 0.03 ms here); ours is the wall time of the whole ``run(batch)``
call, so the comparison is conservative.

    python benchmarks/runtime_config.py [--models resnet18 mobilenetv3_small_100] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Neither imports torch: the hand-written children stay free of it.
from pytest_modelopt.stats import summarize
from pytest_modelopt.worker import InProcess, Worker

WARMUP_S = 3.0
BLOCK = 50  # calls per timed block, as the engine asks a side for them
NOISY = 0.10  # relative IQR of a row's paired ratios beyond which the run says nothing


def median_latency_ms(side: Any, seconds: float) -> float:
    """Median per-call latency in ms of an engine side (``InProcess`` or a started ``Worker``),
    timed in blocks of ``BLOCK`` calls over ``seconds`` after a warm-up."""
    end = time.perf_counter() + WARMUP_S
    while time.perf_counter() < end:
        side.sample(BLOCK)
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        samples += side.sample(BLOCK)
    return statistics.median(samples) * 1e3


def evaluator(model: str, workdir: Path, threads: int) -> Any:
    from pytest_modelopt import Evaluator, MeasureSettings, ModelSpec

    spec = ModelSpec.from_timm(model)
    return Evaluator(spec, settings=MeasureSettings(threads=threads), workdir=workdir)


def ours(variant: Any, batch: Any, threads: int, seconds: float) -> float:
    """Median latency in ms of ``variant`` timed as the harness times it: in a worker process."""
    worker = Worker(variant.loader, batch, threads=threads, fallback=lambda: None)
    worker.start()
    try:
        return median_latency_ms(worker, seconds)
    finally:
        worker.close()


def child(kind: str, workdir: Path, threads: int, seconds: float) -> float:
    """One measurement by hand-written runtime code, in this (child) process."""
    if kind == "expert-onnxruntime":
        import numpy as np
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(workdir / "_onnx_export" / "model.onnx"), options, ["CPUExecutionProvider"]
        )
        (graph_input,) = session.get_inputs()
        shape = [1, *graph_input.shape[1:]]
        feed = {graph_input.name: np.random.default_rng(0).standard_normal(shape, np.float32)}
        return median_latency_ms(InProcess(lambda: session.run(None, feed)), seconds)
    raise ValueError(kind)


def benchmark_app(workdir: Path, threads: int, seconds: float) -> float:
    tool = shutil.which("benchmark_app") or str(Path(sys.executable).parent / "benchmark_app")
    xml = workdir / "openvino" / "model.xml"
    # benchmark_app refuses -nthreads next to -hint ("fine tune options"); a config file sets the
    # same properties our variant sets, and the tool prints what it compiled with.
    config = workdir / "benchmark_app.json"
    config.write_text(json.dumps({"CPU": {"INFERENCE_NUM_THREADS": str(threads)}}))
    # -ip f32: the model as compiled by our variant; benchmark_app would feed images as u8.
    options = ["-d", "CPU", "-hint", "latency", "-ip", "f32", "-load_config", str(config)]
    done = subprocess.run(
        [tool, "-m", str(xml), *options, "-shape", "[1,3,224,224]", "-t", str(int(seconds))],
        capture_output=True,
        text=True,
        check=True,
    )
    if f"INFERENCE_NUM_THREADS: {threads}" not in done.stdout:
        raise RuntimeError(f"benchmark_app did not run with {threads} threads:\n{done.stdout}")
    match = re.search(r"Median:\s+([0-9.]+) ms", done.stdout)
    if match is None:
        raise RuntimeError(f"no median latency in benchmark_app's output:\n{done.stdout[-2000:]}")
    return float(match.group(1))


def measure(kind: str, built: Any, variants: dict[str, Any], args: Any) -> float:
    workdir = built.workdir
    if kind.startswith("ours-"):
        variant = variants[kind.removeprefix("ours-")]
        return ours(variant, built.spec.example_input, args.threads, args.seconds)
    if kind == "benchmark_app":
        return benchmark_app(workdir, args.threads, args.seconds)
    command = [sys.executable, __file__, "--child", kind, "--threads", str(args.threads)]
    command += ["--seconds", str(args.seconds), "--workdir", str(workdir)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} in {workdir} failed:\n{done.stderr[-3000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["median_ms"])


PAIRS = (("ours-onnxruntime", "expert-onnxruntime"), ("ours-openvino", "benchmark_app"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenetv3_small_100"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("results/runtime_config"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        median = child(args.child, args.workdir, args.threads, args.seconds)
        print(json.dumps({"median_ms": median}))
        return

    rows = []
    for model in args.models:
        workdir = args.workdir / model
        workdir.mkdir(parents=True, exist_ok=True)
        built = evaluator(model, workdir, args.threads)  # the export and the IR every run shares
        variants = {name: built.build(name) for name in ("onnxruntime", "openvino")}
        for mine, theirs in PAIRS:
            figures: dict[str, list[float]] = {mine: [], theirs: []}
            for repeat in range(args.repeats):
                order = (mine, theirs) if repeat % 2 == 0 else (theirs, mine)
                for kind in order:
                    figures[kind].append(measure(kind, built, variants, args))
                    print(f"{model} {kind}: {figures[kind][-1]:.3f} ms", flush=True)
            ours_ms, reference = (statistics.median(figures[k]) for k in (mine, theirs))
            ratios = [a / b for a, b in zip(figures[mine], figures[theirs], strict=True)]
            rows.append((model, mine, ours_ms, theirs, reference, ratios))
    print()
    print(f"{args.threads} threads, batch 1, median of {args.repeats} medians of {args.seconds} s")
    header = ("model", "ours", "ms", "expert", "ms", "ours/expert [range of repeats]")
    table = [header] + [
        (
            m,
            o,
            f"{a:.3f}",
            t,
            f"{b:.3f}",
            f"{statistics.median(r):.3f} [{min(r):.3f}, {max(r):.3f}]",
        )
        for m, o, a, t, b, r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    worst = max(statistics.median(r) for *_, r in rows)
    noisy = [f"{m} {o}" for m, o, *_, r in rows if summarize(r).relative_iqr > NOISY]
    if noisy:
        print(f"inconclusive: paired ratios spread (IQR) over {NOISY:.0%} in {', '.join(noisy)}")
        print("(the machine was disturbed during the run): run it again")
    else:
        print(f"worst ours/expert: {worst:.3f} ({'within' if worst <= 1.05 else 'NOT within'} 5%)")


if __name__ == "__main__":
    main()
