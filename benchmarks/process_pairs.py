"""Does a comparison between two processes read 1.00x when both sides run the same model?

    python benchmarks/process_pairs.py                        # convnext_atto at 224, 2 threads
    python benchmarks/process_pairs.py --threads 1 --workers 4 --runs 4
    OMP_WAIT_POLICY=passive python benchmarks/process_pairs.py

An A/A probe of issue 19: the eager model timed in this process against the same eager model
in a worker process (the engine's protocol, as a cross-runtime row times its sides), several
comparisons per worker, several workers. A worker kept for all its comparisons separates what a
process pair carries for its life from what the machine does over time. Prints, per worker, the
time ratio in-process/worker of each comparison with its interval and both medians.

With ``--engine N``: N comparisons as a cross-runtime row makes them, both sides in fresh
workers of their own, the engine timing them in ``--pairs`` process pairs (1: the default; 3:
``--modelopt-process-pairs 3``). Prints each A/A speedup and interval, each pair's estimate, the
wall time, and how many intervals exclude 1.00x: at 99.9% confidence, any is a miss.

    python benchmarks/process_pairs.py --engine 8 --pairs 1
    python benchmarks/process_pairs.py --engine 8 --pairs 3
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="convnext_atto")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4, help="worker processes, one at a time")
    parser.add_argument("--runs", type=int, default=4, help="comparisons per worker")
    parser.add_argument("--max-time", type=float, default=5.0, help="time cap per comparison, s")
    parser.add_argument("--engine", type=int, default=0, help="A/A engine comparisons (see doc)")
    parser.add_argument("--pairs", type=int, default=3, help="process pairs per comparison")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    from pytest_modelopt import Evaluator, MeasureSettings, ModelSpec
    from pytest_modelopt.measure import Interleaver
    from pytest_modelopt.worker import Worker

    spec = ModelSpec.from_timm(args.model, input_size=(3, args.size, args.size))
    settings = MeasureSettings(threads=args.threads, max_time=args.max_time)
    eager = Evaluator(spec, settings=settings).build("eager")
    assert eager.loader is not None
    batch = spec.example_input
    if args.engine:
        engine_aa(eager, batch, args)
        return
    print(f"{args.model} at {args.size}, {args.threads} thread(s): in-process/worker time ratio")
    for index in range(args.workers):
        worker = Worker(eager.loader, batch, threads=args.threads, fallback=lambda: None)
        worker.start()
        try:
            for _ in range(args.runs):
                comparison = Interleaver(
                    worker, lambda: eager.run(batch), settings, cross_runtime=True
                ).run()
                low, high = comparison.speedup_interval
                worker_ms = comparison.variant.summary().p50 * 1e3
                here_ms = comparison.reference.summary().p50 * 1e3
                print(
                    f"  worker {index + 1}: {comparison.speedup:.3f} [{low:.3f}, {high:.3f}]  "
                    f"worker {worker_ms:.2f} ms, in process {here_ms:.2f} ms",
                    flush=True,
                )
        finally:
            worker.close()


def engine_aa(eager: Any, batch: Any, args: argparse.Namespace) -> None:
    """The engine's A/A comparisons, both sides in workers, in ``args.pairs`` process pairs."""
    import statistics
    import time

    from pytest_modelopt import MeasureSettings
    from pytest_modelopt.measure import Interleaver
    from pytest_modelopt.worker import Worker

    settings = MeasureSettings(
        threads=args.threads, max_time=args.max_time, process_pairs=args.pairs
    )
    print(
        f"{args.model} at {args.size}, {args.threads} thread(s), both sides in workers, "
        f"{args.pairs} process pair(s) per comparison: speedup of eager against itself"
    )
    misses, speedups, seconds = 0, [], []
    for index in range(args.engine):
        sides = [
            Worker(eager.loader, batch, threads=args.threads, fallback=lambda: None, label=name)
            for name in ("a", "b")
        ]
        begin = time.perf_counter()
        comparison = Interleaver(sides[0], sides[1], settings, cross_runtime=True).run()
        seconds.append(time.perf_counter() - begin)
        low, high = comparison.speedup_interval
        miss = not low <= 1.0 <= high
        misses += miss
        speedups.append(comparison.speedup)
        pairs = " ".join(f"{p['speedup']:.3f}" for p in comparison.process_pairs)
        print(
            f"  {index + 1}: {comparison.speedup:.3f} [{low:.3f}, {high:.3f}]"
            f"{'  MISS' if miss else ''}  pairs: {pairs or '-'}  ({seconds[-1]:.1f} s)",
            flush=True,
        )
    spread = (max(speedups) - min(speedups)) / statistics.median(speedups)
    print(
        f"  intervals excluding 1.00x: {misses} of {args.engine}; speedups spread "
        f"{spread:.1%}; median wall time {statistics.median(seconds):.1f} s per comparison"
    )


if __name__ == "__main__":
    main()
