"""Does where eager torch is timed change its time? The allocator figures of issue 19.

    python benchmarks/allocator_probe.py                      # resnet50 at 384, 5 runs a mode
    python benchmarks/allocator_probe.py --model convnext_atto --size 224 --runs 3

(1) Four worker processes time the same eager model, blocks interleaved: two with glibc's
default allocator (``PYTEST_MODELOPT_SYSTEM_ALLOCATOR=1``), two keeping freed memory (the
engine's default, pytest_modelopt.allocator). Each one's median per-round time relative to the
first default one.
(2) The engine times eager in a worker against eager in this process (after a session's accuracy
evaluation, as in a real run), ``--runs`` fresh processes per allocator mode: the time ratio
in-process/worker should be 1.
(3) As (2) with freed memory kept, in a fresh process that only builds the model (no ModelSpec,
no Evaluator): whether a gap in (2) comes from what the session did in the process before.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

SYSTEM = {"PYTEST_MODELOPT_SYSTEM_ALLOCATOR": "1"}


def fresh_model(name: str, size: int) -> Any:
    """A worker's loader: the timm model built in the worker, called under inference mode."""
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()

    def run(batch: Any) -> Any:
        with torch.inference_mode():
            return model(batch)

    return run


def with_environment(extra: dict[str, str], start: Any) -> Any:
    saved = dict(os.environ)
    os.environ.update(extra)
    try:
        return start()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def four_workers(name: str, size: int, rounds: int) -> dict[str, Any]:
    import torch

    from pytest_modelopt.worker import Loader, Worker

    batch = torch.randn(1, 3, size, size)
    loader = Loader("allocator_probe:fresh_model", {"name": name, "size": size})

    def started(extra: dict[str, str]) -> Worker:
        worker = Worker(loader, batch, threads=2, fallback=lambda: None)
        with_environment(extra, worker.start)
        return worker

    sides = {
        "system 1": started(SYSTEM),
        "system 2": started(SYSTEM),
        "kept 1": started({}),
        "kept 2": started({}),
    }
    try:
        for worker in sides.values():
            worker.sample(3)
        medians: dict[str, list[float]] = {label: [] for label in sides}
        for _ in range(rounds):
            for label, worker in sides.items():
                worker.sample(1)  # the transition after the other processes' blocks
                medians[label].append(statistics.median(worker.sample(3)))
    finally:
        for worker in sides.values():
            worker.close()
    first = medians["system 1"]
    return {
        label: {
            "median_ms": statistics.median(values) * 1e3,
            "relative": statistics.median(a / b for a, b in zip(values, first, strict=True)),
            "allocator": sides[label].allocator,
        }
        for label, values in medians.items()
    }


def one_engine_run(name: str, size: int, max_time: float) -> dict[str, Any]:
    """In this (fresh) process: the engine times eager in a worker against eager here."""
    from pytest_modelopt import Evaluator, MeasureSettings, ModelSpec
    from pytest_modelopt.measure import Interleaver
    from pytest_modelopt.worker import Worker

    spec = ModelSpec.from_timm(name, input_size=(3, size, size))
    settings = MeasureSettings(threads=2, max_time=max_time)
    evaluator = Evaluator(spec, settings=settings)
    eager = evaluator.build("eager")
    evaluator.evaluate("eager")  # what a session does here before timing: accuracy, memory
    batch = spec.example_input
    assert eager.loader is not None
    worker = Worker(eager.loader, batch, threads=2, fallback=lambda: None, label="eager worker")
    comparison = Interleaver(worker, lambda: eager.run(batch), settings, cross_runtime=True).run()
    return _row(comparison)


def _row(comparison: Any) -> dict[str, Any]:
    """What a run prints: the time ratio in-process/worker, and each side's median."""
    data = comparison.to_dict(raw=False)
    return {
        "ratio": comparison.speedup,
        "interval": list(comparison.speedup_interval),
        "worker_ms": data["variant"]["stats"]["p50"] * 1e3,
        "in_process_ms": data["reference"]["stats"]["p50"] * 1e3,
        "allocator": data["reference"]["allocator"],
    }


def one_bare_run(name: str, size: int, max_time: float) -> dict[str, Any]:
    """In this (fresh) process, with nothing else done in it: eager in a worker against here."""
    import torch

    from pytest_modelopt import MeasureSettings
    from pytest_modelopt.measure import Interleaver
    from pytest_modelopt.worker import Loader, Worker

    torch.set_num_threads(2)
    batch = torch.randn(1, 3, size, size)
    run = fresh_model(name, size)
    loader = Loader("allocator_probe:fresh_model", {"name": name, "size": size})
    worker = Worker(loader, batch, threads=2, fallback=lambda: None, label="eager worker")
    settings = MeasureSettings(threads=2, max_time=max_time)
    comparison = Interleaver(worker, lambda: run(batch), settings, cross_runtime=True).run()
    return _row(comparison)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--runs", type=int, default=5, help="engine runs per allocator mode")
    parser.add_argument("--rounds", type=int, default=12, help="rounds of the four workers")
    parser.add_argument("--max-time", type=float, default=40.0, help="engine time cap, s")
    parser.add_argument("--modes", default="system,kept", help="allocator modes of part 2")
    parser.add_argument("--parts", default="123", help="which parts to run, e.g. 1, 23, 123")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_once = one_bare_run if args.bare else one_engine_run
        print(json.dumps(run_once(args.model, args.size, args.max_time)))
        return
    if "1" in args.parts:
        print(f"(1) four workers, {args.model} at {args.size}, {args.rounds} rounds")
        for label, row in four_workers(args.model, args.size, args.rounds).items():
            relative, allocator = row["relative"], row["allocator"]
            print(f"  {label}: {row['median_ms']:.1f} ms, x{relative:.3f} ({allocator})")
    if "2" not in args.parts and "3" not in args.parts:
        return
    print("(2, 3) eager in a worker vs eager in this process (time ratio in-process/worker)")
    for part, mode, extra in (("2", "system", SYSTEM), ("2", "kept", {}), ("3", "kept", {})):
        if part not in args.parts or mode not in args.modes:
            continue
        label = f"({part}) {mode}" + (", bare process" if part == "3" else ", after an evaluation")
        ratios = []
        for _ in range(args.runs):
            command = [sys.executable, __file__, "--one", "--model", args.model]
            command += ["--size", str(args.size), "--max-time", str(args.max_time)]
            command += ["--bare"] if part == "3" else []
            done = subprocess.run(
                command, env={**os.environ, **extra}, capture_output=True, text=True, check=True
            )
            row = json.loads(done.stdout.strip().splitlines()[-1])
            ratios.append(row["ratio"])
            low, high = row["interval"]
            print(
                f"  {label}: {row['ratio']:.3f} [{low:.3f}, {high:.3f}]  worker "
                f"{row['worker_ms']:.1f} ms, in process {row['in_process_ms']:.1f} ms"
            )
        print(f"  {label}: median ratio {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
