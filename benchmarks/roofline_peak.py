"""Issue 17: the fraction of peak of timm resnet50 at 1x3x384x384 and resnet18 at batch 8 under
TorchScript, ONNX Runtime and OpenVINO, and the peak each runtime's kernels reach.

1. Every peak kernel (``pytest_modelopt.efficiency.KERNELS``: matrix products and convolutions)
   in fp32, bf16 and int8, timed as the peak measurement times it, with the theoretical ceiling
   of each precision (skipped where the code under test has no such kernels: the peak was then
   torch's alone).
2. resnet50 (``pretrained=False``) at 1x3x384x384, and resnet18 at 8x3x224x224 (the bundled
   suite's batch-8 spec, where OpenVINO's bf16 convolutions beat every bf16 matrix product),
   evaluated with each technique through the
   ``Evaluator``, as the plugin runs it (``--max-time`` seconds of timing): its precision,
   achieved GOP/s, the peak it is measured against (and, after issue 17, the kernel that set it)
   and the fraction of peak. No cache directory: the peak is measured in this run.

Run it against the code before and after a change by pointing ``PYTHONPATH`` at each ``src``:

    PYTHONPATH=src python benchmarks/roofline_peak.py [--threads 2] [--max-time 8] [--json out]
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path
from typing import Any

TECHNIQUES = ("torchscript", "onnxruntime", "openvino")
# name: (timm model, input size, batch size)
MODELS = {
    "resnet50_384": ("resnet50", (3, 384, 384), 1),
    "resnet18_batch8": ("resnet18", (3, 224, 224), 8),
}
PRECISIONS = ("fp32", "bf16", "int8")


def kernels(threads: int) -> list[dict[str, Any]]:
    from pytest_modelopt.efficiency import (
        KERNELS,
        KernelUnavailable,
        theoretical_ceiling,
        time_kernel,
    )
    from pytest_modelopt.hardware import detect_hardware

    hardware = detect_hardware(gpus=False)
    rows = []
    for precision in PRECISIONS:
        ceiling = theoretical_ceiling(hardware, precision, threads)
        print(f"{precision}: theoretical ceiling {ceiling.describe()}", flush=True)
        for kernel in KERNELS:
            if precision not in kernel.precisions:
                continue
            try:
                timing = time_kernel(kernel, precision, threads=threads, hardware=hardware)
            except KernelUnavailable as reason:
                print(f"  {kernel.runtime} {kernel.name}: skipped ({reason})", flush=True)
                continue
            print(
                f"  {timing.kernel}: {timing.ops_per_s / 1e9:.1f} GOP/s best, "
                f"{timing.median_ops_per_s / 1e9:.1f} median, {timing.shape}, "
                f"{timing.calls} calls, stable={timing.stable}",
                flush=True,
            )
            rows.append({"precision": precision, **timing.__dict__})
    return rows


def evaluate(name: str, threads: int, max_time: float) -> list[dict[str, Any]]:
    from pytest_modelopt import Evaluator, ModelSpec
    from pytest_modelopt.measure import MeasureSettings

    model, input_size, batch_size = MODELS[name]
    spec = ModelSpec.from_timm(
        model, pretrained=False, input_size=input_size, batch_size=batch_size, name=name
    )
    evaluator = Evaluator(
        spec,
        settings=MeasureSettings(threads=threads, max_time=max_time),
        log=lambda message: print(f"  {message}", flush=True),
    )
    rows = []
    for technique in TECHNIQUES:
        result = evaluator.evaluate(technique)
        figures = result.efficiency
        row = {
            "model": name,
            "technique": technique,
            "precision": result.variant.precision,
            "p50_ms": result.comparison.variant.summary().p50 * 1e3,
            "speedup": result.comparison.speedup,
            **figures,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-time", type=float, default=8.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    started = time.time()
    report: dict[str, Any] = {"threads": args.threads}
    if hasattr(importlib.import_module("pytest_modelopt.efficiency"), "KERNELS"):
        report["kernels"] = kernels(args.threads)
    for name in MODELS:
        report[name] = evaluate(name, args.threads, args.max_time)
    header = f"{'model':<16} {'technique':<12} {'precision':<10} {'p50 ms':>7} {'GOP/s':>6}"
    print(f"{header} {'peak':>6} of peak")
    for row in (row for name in MODELS for row in report[name]):
        fraction = row.get("fraction_of_peak")
        shown = f"{fraction:.0%}" if fraction is not None else "-"
        if row.get("measurement_problem") or (fraction or 0) > 1:
            shown = f"BAD PEAK ({row.get('achieved_over_peak', fraction):.2f}x peak)"
        print(
            f"{row['model']:<16} {row['technique']:<12} {row['precision'][:10]:<10} "
            f"{row['p50_ms']:>7.1f} "
            f"{row['achieved_gops']:>6.1f} {row['peak_gops']:>6.1f} {shown}  "
            f"{row.get('peak_kernel') or 'torch only'}"
        )
    print(f"{time.time() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
