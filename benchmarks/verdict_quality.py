"""How right are the engine's verdicts? A benchmark of the measurement engine itself.

    python benchmarks/verdict_quality.py            # the full run (about 40 minutes on 2 cores)
    python benchmarks/verdict_quality.py --quick    # fewer trials, for a smoke test

Measures (a) harness overhead per timed call against a bare perf_counter loop; (b) A/A: a
workload against itself, giving the false-alarm rate of a 1% regression gate and its
Clopper-Pearson upper bound; (c) detection of injected +2%, +5%, +10%, +20% slowdowns, made of
extra compute that competes for the CPU like a real regression (a calibrated extra matmul) and,
as a second series, of sleep; (d) ratio bias: for each runtime pair the suites use, the engine's
speedup against the ratio of medians measured in isolated processes; (e) time to a verdict.
(a) to (c) run on a synthetic ~1 ms matmul and on a real pair (eager torch vs ONNX Runtime on
mobilenetv3_small_100). (x) cross-session verdicts: a baseline recorded in one fresh process and
judged in others, with both meters (wall and instructions), in benchmarks/cross_session.py. The
last line is the summary:

    verdict-quality: aa_false_alarm=X% detect_2=A% detect_5=Y% detect_10=Z% detect_20=W% ...
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from pytest_modelopt import Evaluator, MeasureSettings, ModelSpec
from pytest_modelopt.budget import Verdict, judge_all
from pytest_modelopt.measure import Interleaver, fixed_threads
from pytest_modelopt.metrics import latency_metrics
from pytest_modelopt.worker import Loader, Worker

nan = math.nan
GATE = 0.99  # the regression gate: FAIL when the variant is surely more than 1% slower
SLOWDOWNS = (0.02, 0.05, 0.10, 0.20)
# The suites' runtime pairs, and resnet50 at 384x384 (issue 19: its eager reference is the one
# whose time depended most on the process it ran in). "name@size" is a timm model at that size.
PAIRS = [
    (model, technique)
    for model in ("mobilenetv3_small_100", "resnet18", "resnet50@384")
    for technique in ("onnxruntime", "openvino", "torchscript")
]
Call = Callable[[], Any]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials (a smoke test)")
    parser.add_argument("--aa", type=int, default=1000, help="A/A comparisons (synthetic)")
    parser.add_argument("--trials", type=int, default=100, help="trials per injected slowdown")
    parser.add_argument("--sleep-trials", type=int, default=50, help="trials per sleep level")
    parser.add_argument("--real-trials", type=int, default=10, help="trials per level, real pair")
    parser.add_argument("--cap", type=float, default=0.8, help="time cap per comparison, s")
    parser.add_argument(
        "--real-cap", type=float, default=5.0, help="time cap per real-pair comparison, s"
    )
    parser.add_argument("--bias-repeats", type=int, default=5, help="isolated runs per side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument(
        "--sections",
        default="abcd",
        help="which parts to run: a overhead, b/c synthetic "
        "and real gate quality, d ratio bias, x cross-session (default: abcd)",
    )
    parser.add_argument("--processes", type=int, default=20, help="fresh processes per meter (x)")
    parser.add_argument(
        "--jobs", type=int, default=2, help="counting probes at a time (x; wall ones run alone)"
    )
    parser.add_argument(
        "--probes-dir", default="cross-session-probes", help="where (x) keeps each probe's JSON"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    pairs = PAIRS
    if args.quick:  # a smoke run of every section: a few minutes on a quiet 2-core machine
        args.aa, args.trials, args.sleep_trials, args.real_trials = 40, 10, 4, 2
        args.real_cap, args.bias_repeats = 3.0, 2
        pairs = [p for p in PAIRS if p[0] == "mobilenetv3_small_100"]
    torch.set_num_threads(args.threads)
    settings = MeasureSettings(
        threads=args.threads, warmup_s=0.1, warmup_calls=10, max_time=args.cap, target_width=0.01
    )
    figures: dict[str, Any] = {"settings": vars(args)}
    rows: list[tuple[str, ...]] = []

    sections = set(args.sections)
    overhead, bookkeeping = harness_overhead_us(settings) if "a" in sections else (nan, nan)
    figures["overhead_us"], figures["bookkeeping_us"] = overhead, bookkeeping
    rows.append(
        (
            "(a) overhead per timed call",
            f"{overhead:.2f} us inside each sample",
            f"{bookkeeping:.2f} us of bookkeeping between samples; target < 1 us",
        )
    )
    synthetic: dict[str, Any] = {"aa": {"fail_rate": nan}, "compute": {}}
    if "b" in sections or "c" in sections:
        base = RepeatedMatmul(1e-3, args.threads)
        synthetic = gate_quality(
            "synthetic 1 ms matmul", base, base, settings, args.aa, args.trials, args.sleep_trials
        )
        rows += synthetic["rows"]
        real = real_pair_quality(
            replace(settings, max_time=args.real_cap), args.real_trials, args.threads
        )
        figures["real_pair"] = real
        rows += real["rows"]
    figures["synthetic"] = synthetic
    bias: dict[str, Any] = {"pairs": [], "max_bias": nan}
    if "d" in sections:
        bias = ratio_bias(pairs, args.threads, max_time=10.0, repeats=args.bias_repeats)
    figures["ratio_bias"] = bias
    for pair in bias["pairs"]:
        rows.append(
            (
                f"(d) {pair['model']} eager/{pair['technique']}",
                f"engine {pair['engine']:.3f}x, isolated {pair['isolated']:.3f}x",
                f"bias {pair['bias'] * 100:.1f}% ({pair['isolation']}; in-process blocks "
                f"{pair['in_process_bias'] * 100:.1f}%; isolated eager medians spread "
                f"{pair['isolated_spread'] * 100:.1f}%)",
            )
        )
    for model, agreement in bias.get("reference_agreement", {}).items():
        medians = ", ".join(
            f"{technique} {ms:.2f} ms ({agreement['isolation'][technique]})"
            for technique, ms in agreement["medians_ms"].items()
        )
        rows.append(
            (
                f"(d) {model} eager reference per row",
                medians,
                f"spread {agreement['spread'] * 100:.1f}% (target <= 3%)",
            )
        )

    if "x" in sections:
        figures["cross_session"] = cross_session(args)
    print_table(rows)
    for line in figures.get("cross_session", {}).get("lines", []):
        print(line)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2, default=float)
    compute = synthetic["compute"]
    print(
        "verdict-quality: "
        f"aa_false_alarm={synthetic['aa']['fail_rate'] * 100:.2f}% "
        + " ".join(
            f"detect_{int(x * 100)}={compute.get(x, {'fail_rate': nan})['fail_rate'] * 100:.0f}%"
            for x in SLOWDOWNS
        )
        + f" ratio_bias={bias['max_bias'] * 100:.1f}% overhead_us={overhead + bookkeeping:.2f}"
    )


def cross_session(args: argparse.Namespace) -> dict[str, Any]:
    """(x): fresh probe processes per meter, every ordered pair of them judged by the gate."""
    import cross_session as probes

    processes = 4 if args.quick else args.processes
    directory = Path(args.probes_dir)
    figures: dict[str, Any] = {"rows": [], "lines": []}
    for meter, jobs in (("instructions", args.jobs), ("wall", 1)):
        print(f"(x) {processes} fresh {meter} probes", flush=True)
        results = probes.run_probes(meter, processes, jobs, 3.0, args.threads, directory)
        rows = probes.analyse(results)
        figures["rows"] += rows
        figures["lines"] += probes.report(rows)
    figures["lines"] += probes.valgrind_slowdowns(figures["rows"])
    return figures


# -- workloads ---------------------------------------------------------------------------------


def median_time(call: Call, seconds: float = 0.5) -> float:
    for _ in range(5):
        call()
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


class RepeatedMatmul:
    """About target_s of work made of many identical small matmuls, so that an injected +x% is
    exact by construction: x% more of the same matmuls, competing for the same cores."""

    def __init__(self, target_s: float, threads: int, repeats: int = 100) -> None:
        self.threads = threads
        self.repeats = repeats
        with fixed_threads(threads):
            size = 16
            while True:
                self.a = torch.randn(size, size)
                if median_time(lambda: self.work(repeats), 0.2) >= target_s or size > 1024:
                    break
                size = int(size * 1.1) + 1

    def work(self, repeats: int) -> None:
        a = self.a
        for _ in range(repeats):
            torch.mm(a, a)

    def __call__(self) -> None:
        self.work(self.repeats)

    def slowed(self, fraction: float) -> Call:
        extra = round(fraction * self.repeats)
        return lambda: self.work(self.repeats + extra)


def compute_injection(base: Call, fraction: float, threads: int) -> tuple[Call, float]:
    """base plus fraction more compute; returns the slowdown measured alone (ratio of medians).

    On the synthetic workload, more of the same matmuls; on a real variant, a CPU-bound loop
    timed to the fraction of its median (a matmul of another runtime would wake that runtime's
    threads and add their transition cost, not the intended fraction).
    """
    with fixed_threads(threads):
        if isinstance(base, RepeatedMatmul):
            slowed = base.slowed(fraction)
        else:
            extra_s = fraction * median_time(base)

            def slowed() -> None:
                base()
                deadline = time.perf_counter() + extra_s
                while time.perf_counter() < deadline:
                    pass

        actual = median_time(slowed, 1.0) / median_time(base, 1.0) - 1
    return slowed, actual


def sleep_injection(base: Call, fraction: float, threads: int) -> tuple[Call, float]:
    with fixed_threads(threads):
        pause = fraction * median_time(base)

        def slowed() -> None:
            base()
            time.sleep(pause)

        actual = median_time(slowed) / median_time(base) - 1
    return slowed, actual


# -- (a) overhead ------------------------------------------------------------------------------


def harness_overhead_us(settings: MeasureSettings) -> tuple[float, float]:
    """Overhead of the engine on a no-op, against a bare perf_counter loop: inside each recorded
    sample (what would bias a measurement), and the bookkeeping between samples (what slows a
    run: random order, ratios, the periodic interval computation)."""

    def noop() -> None:
        return None

    calls = 200_000
    bare = []
    start = time.perf_counter()
    for _ in range(calls):
        t0 = time.perf_counter()
        noop()
        bare.append(time.perf_counter() - t0)
    bare_wall = (time.perf_counter() - start) / calls
    quick = replace(settings, max_time=1.0, target_width=1e-9, warmup_s=0.01)
    comparison = Interleaver(noop, noop, quick).run()
    inside = statistics.median(comparison.variant.samples_s) - statistics.median(bare)
    timed = 2 * (comparison.rounds + comparison.variant.warmup_calls + 1)
    return inside * 1e6, (comparison.elapsed_s / timed - bare_wall) * 1e6


# -- (b), (c), (e) gate quality ----------------------------------------------------------------


def verdict(
    variant: Call | Worker,
    reference: Call | Worker,
    settings: MeasureSettings,
    gate: float,
    **kw: Any,
) -> tuple[Verdict, float, float]:
    comparison = Interleaver(variant, reference, settings, **kw).run()
    check = judge_all({"speedup": f">={gate}"}, latency_metrics(comparison, 1, settings))[0]
    return check.verdict, comparison.speedup, comparison.elapsed_s


def tally(outcomes: list[tuple[Verdict, float, float]]) -> dict[str, Any]:
    n = len(outcomes)
    fails = sum(v is Verdict.FAIL for v, _, _ in outcomes)
    inconclusive = sum(v is Verdict.INCONCLUSIVE for v, _, _ in outcomes)
    upper = stats.binomtest(fails, n).proportion_ci(0.95, method="exact").high if n else 1.0
    return {
        "n": n,
        "fail_rate": fails / n,
        "fail_upper95": upper,
        "inconclusive_rate": inconclusive / n,
        "median_speedup": statistics.median(s for _, s, _ in outcomes),
        "median_seconds": statistics.median(t for _, _, t in outcomes),
    }


# An injection: (variant, kind, fraction) -> (slowed variant, slowdown measured alone, cleanup).
Inject = Callable[[Any, str, float], tuple[Any, float, Callable[[], None]]]


def in_process_injection(base: Any, kind: str, fraction: float) -> tuple[Any, float, Any]:
    threads = base.threads
    inject = compute_injection if kind == "compute" else sleep_injection
    slowed, actual = inject(base, fraction, threads)
    return slowed, actual, lambda: None


def gate_quality(
    label: str,
    variant: Any,
    reference: Any,
    settings: MeasureSettings,
    aa_trials: int,
    trials: int,
    sleep_trials: int,
    *,
    gate: float = GATE,
    inject: Inject = in_process_injection,
    cross_runtime: bool = False,
) -> dict[str, Any]:
    result: dict[str, Any] = {"rows": []}

    def run(slowed: Any, count: int) -> dict[str, Any]:
        return tally(
            [
                verdict(
                    slowed, reference, replace(settings, seed=i), gate, cross_runtime=cross_runtime
                )
                for i in range(count)
            ]
        )

    aa = run(variant, aa_trials)
    result["aa"] = aa
    result["rows"].append(
        (
            f"(b) {label}: A/A false alarms",
            f"{aa['fail_rate'] * 100:.2f}% of {aa['n']} "
            f"(95% upper {aa['fail_upper95'] * 100:.2f}%)",
            f"inconclusive {aa['inconclusive_rate'] * 100:.1f}%, "
            f"{aa['median_seconds']:.2f} s each (e)",
        )
    )
    for kind, count in (("compute", trials), ("sleep", sleep_trials)):
        result[kind] = {}
        for fraction in SLOWDOWNS:
            slowed, actual, cleanup = inject(variant, kind, fraction)
            try:
                outcome = run(slowed, count)
            finally:
                cleanup()
            outcome["actual_slowdown"] = actual
            result[kind][fraction] = outcome
            result["rows"].append(
                (
                    f"(c) {label}: +{fraction * 100:.0f}% {kind} (actual +{actual * 100:.1f}%)",
                    f"detected {outcome['fail_rate'] * 100:.0f}% of {outcome['n']}",
                    f"inconclusive {outcome['inconclusive_rate'] * 100:.0f}%, "
                    f"median speedup {outcome['median_speedup']:.3f}, "
                    f"{outcome['median_seconds']:.2f} s each (e)",
                )
            )
    return result


def worker(loader: Loader, batch: Any, threads: int, label: str) -> Worker:
    side = Worker(loader, batch, threads=threads, fallback=lambda: None, label=label)
    side.start()
    return side


def alone_median(side: Worker, warmup_s: float = 1.0, seconds: float = 2.0) -> float:
    """Median per-call time of a worker timed alone (nothing else of ours runs meanwhile)."""
    typical = statistics.median(side.sample(5))
    side.sample(max(1, round(warmup_s / typical)))
    return statistics.median(side.sample(max(10, round(seconds / typical))))


def real_pair_quality(settings: MeasureSettings, trials: int, threads: int) -> dict[str, Any]:
    """Eager vs ONNX Runtime on mobilenetv3_small_100, each in its worker process as the engine
    times any two runtimes. The gate is the pair's own speedup (median of probe comparisons) less
    1%; slowdowns are injected into the ONNX Runtime side, inside its worker."""
    spec = ModelSpec.from_timm("mobilenetv3_small_100")
    evaluator = Evaluator(spec, settings=settings)
    eager, ort = evaluator.build("eager"), evaluator.build("onnxruntime")
    assert eager.loader is not None
    assert ort.loader is not None
    batch = spec.example_input
    reference = worker(eager.loader, batch, threads, "eager")
    variant = worker(ort.loader, batch, threads, "onnxruntime")
    try:
        probe = [
            verdict(variant, reference, replace(settings, seed=1000 + i), 0.0)
            for i in range(max(3, trials // 3))
        ]
        own = statistics.median(s for _, s, _ in probe)
        base_s = alone_median(variant, 0.5, 1.0)

        def inject(base: Any, kind: str, fraction: float) -> tuple[Any, float, Any]:
            loader = Loader(
                "worker_side:injected_runner",
                {"inner": ort.loader, "extra_s": fraction * base_s, "kind": kind},
                numpy_inputs=True,
            )
            slowed = worker(loader, batch, threads, f"onnxruntime +{fraction:.0%} {kind}")
            actual = alone_median(slowed, 0.5, 1.0) / alone_median(base, 0.5, 1.0) - 1
            return slowed, actual, slowed.close

        result = gate_quality(
            "real eager vs onnxruntime",
            variant,
            reference,
            settings,
            trials * 2,
            trials,
            max(2, trials // 2),
            gate=own * GATE,
            inject=inject,
        )
    finally:
        variant.close()
        reference.close()
    result["own_speedup"] = own
    return result


# -- (d) ratio bias ----------------------------------------------------------------------------


def ratio_bias(
    pairs_to_run: list[tuple[str, str]], threads: int, max_time: float, repeats: int = 5
) -> dict[str, Any]:
    """Each side timed alone in a fresh process of its own (eager, variant, eager, ...: drift
    between processes affects both), against the engine's speedup for the pair."""
    pairs = []
    for model in sorted({m for m, _ in pairs_to_run}):
        spec = timm_spec(model)
        evaluator = Evaluator(spec, settings=MeasureSettings(threads=threads, max_time=max_time))
        eager = evaluator.build("eager")
        assert eager.loader is not None
        for _, technique in (p for p in pairs_to_run if p[0] == model):
            variant = evaluator.build(technique)
            loader = variant.loader or Loader(
                "worker_side:torchscript_runner",
                {"path": str(variant.files[0]), "optimize": variant.details["saved"] == "traced"},
            )
            eager_runs, variant_runs = [], []
            for _ in range(repeats):
                for runs, side_loader in ((eager_runs, eager.loader), (variant_runs, loader)):
                    side = worker(side_loader, spec.example_input, threads, technique)
                    try:
                        runs.append(alone_median(side))
                    finally:
                        side.close()
            iso = statistics.median(eager_runs) / statistics.median(variant_runs)
            comparison = evaluator.evaluate(technique).comparison
            engine = comparison.speedup
            reference_median = comparison.reference.summary().p50
            in_process = math.nan
            if comparison.isolation["variant"] == "worker process":  # the protocol it replaced
                evaluator.settings = replace(evaluator.settings, workers=False)
                in_process = evaluator.evaluate(technique).comparison.speedup
                evaluator.settings = replace(evaluator.settings, workers=True)
            pairs.append(
                {
                    "eager_runs_s": eager_runs,
                    "variant_runs_s": variant_runs,
                    "model": model,
                    "technique": technique,
                    "engine": engine,
                    "engine_interval": comparison.speedup_interval,
                    "isolated": iso,
                    "bias": abs(engine / iso - 1),
                    "in_process": in_process,
                    "in_process_bias": abs(in_process / iso - 1),
                    "isolated_spread": float(np.ptp(eager_runs) / np.median(eager_runs)),
                    "reference_median_s": reference_median,
                    "isolation": "workers"
                    if comparison.isolation["variant"] == "worker process"
                    else "in process",
                }
            )
    return {
        "pairs": pairs,
        "max_bias": max(p["bias"] for p in pairs),
        "reference_agreement": reference_agreement(pairs),
    }


def reference_agreement(pairs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model: the engine's median of the eager reference in each row (timed in process or in
    a worker, as that row's protocol chose), and their spread (max - min) / median: one model's
    reference should read the same whichever way its row was timed."""
    agreement = {}
    for model in sorted({p["model"] for p in pairs}):
        rows = {p["technique"]: p for p in pairs if p["model"] == model}
        medians = [row["reference_median_s"] for row in rows.values()]
        agreement[model] = {
            "medians_ms": {t: row["reference_median_s"] * 1e3 for t, row in rows.items()},
            "isolation": {t: row["isolation"] for t, row in rows.items()},
            "spread": float(np.ptp(medians) / np.median(medians)),
        }
    return agreement


def timm_spec(label: str) -> ModelSpec:
    """``"resnet50@384"``: timm's resnet50 on 3x384x384 inputs; a bare name: its default size."""
    name, _, size = label.partition("@")
    if not size:
        return ModelSpec.from_timm(name)
    return ModelSpec.from_timm(name, input_size=(3, int(size), int(size)), name=label)


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
