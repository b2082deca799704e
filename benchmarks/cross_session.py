"""Cross-session verdicts: a baseline recorded in one process, compared in others.

Each probe is a fresh interpreter, as two CI runs are: it builds resnet18 (one input channel,
1x1x32x32, the suites' ``resnet18_digits`` shape; weights from a fixed seed, the same in every
process), measures each runtime pair of the suites (eager torch against torchscript, ONNX Runtime
and OpenVINO in fp32) with one meter, and the ONNX Runtime variant again with +2% and +5%
injected compute (``pytest_modelopt.testing.inject_slowdown``: a fixed loop per call in the
worker, calibrated on this process's timing, so its actual size is measured and printed). The
analysis takes every ordered pair of probes (i, j), i's clean result as the baseline, and judges
j's results with the baseline gate's rule for that meter:

- instructions: FAIL when j's variant instructions per call exceed i's by more than 1%
  (``--modelopt-instructions-tolerance``, default 0.01);
- wall: FAIL when j's speedup interval lies wholly below i's speedup x (1 - tolerance), at the
  plugin's default tolerance (10%) and the suites' (20%).

Pairs of probes are not independent trials (each probe takes part in many), so rates are
reported with the number of probes beside them, and the spread as the largest and median
relative difference between any two probes.

    python benchmarks/verdict_quality.py --sections x --processes 20 --jobs 2
    python benchmarks/cross_session.py probe --meter instructions --out probe.json  # one probe
    python benchmarks/cross_session.py rules  # the wall limit from the stored value or low end
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

TECHNIQUES = ("torchscript", "onnxruntime", "openvino_fp32")
INJECTED = {"onnxruntime": (0.02, 0.05)}
INSTRUCTIONS_TOLERANCE = 0.01
WALL_TOLERANCES = (0.10, 0.20)


def probe(meter: str, cap: float, threads: int) -> dict[str, Any]:
    """One fresh process's measurements: each pair clean, and the injected ones."""
    import timm
    import torch

    from pytest_modelopt import Evaluator, MeasureSettings, ModelSpec
    from pytest_modelopt.testing import INJECTED as INJECTED_KEY
    from pytest_modelopt.testing import inject_slowdown

    def resnet18_32() -> torch.nn.Module:
        torch.manual_seed(0)
        return timm.create_model("resnet18", pretrained=False, in_chans=1, num_classes=10)

    example = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    settings = MeasureSettings(threads=threads, max_time=cap)
    results: dict[str, Any] = {}
    levels = [(t, 0.0) for t in TECHNIQUES] + [
        (t, f) for t, fractions in INJECTED.items() for f in fractions
    ]
    for technique, fraction in levels:
        spec = ModelSpec.from_torch("resnet18_32", resnet18_32, example_input=example)
        evaluator = Evaluator(spec, settings=settings, workdir=Path(tempfile.mkdtemp()))
        if fraction:
            inject_slowdown(evaluator.build(technique), fraction, batch=example)
        begin = time.perf_counter()
        result = evaluator.evaluate(technique, meter=meter)
        comparison = result.comparison
        record: dict[str, Any] = {
            "technique": technique,
            "injected": result.variant.details.get(INJECTED_KEY, 0.0),
            "speedup": comparison.speedup,
            "interval": list(comparison.speedup_interval),
            "rounds": comparison.rounds,
            "seconds": time.perf_counter() - begin,
        }
        if meter == "instructions":
            record["variant"] = comparison.counts["variant"]["instructions"]
            record["reference"] = comparison.counts["reference"]["instructions"]
            record["load_seconds"] = comparison.counts["variant"]["load_seconds"]
            # wall time of a counted call under valgrind: the slowdown factor's numerator
            record["valgrind_call_seconds"] = {
                side: comparison.counts[side]["seconds_per_call"]
                for side in ("variant", "reference")
            }
        else:
            record["variant"] = comparison.variant.summary().p50
            record["reference"] = comparison.reference.summary().p50
        results[f"{technique}+{fraction:g}" if fraction else technique] = record
    return {"meter": meter, "pid": os.getpid(), "results": results}


def run_probes(
    meter: str, processes: int, jobs: int, cap: float, threads: int, directory: Path
) -> list[dict[str, Any]]:
    """``processes`` fresh probes, ``jobs`` at a time (counts do not mind a neighbour; timing
    does, so wall probes should run one at a time)."""
    directory.mkdir(parents=True, exist_ok=True)

    def one(index: int) -> dict[str, Any]:
        out = directory / f"{meter}-{index:02d}.json"
        if not out.exists():  # a rerun resumes where an interrupted one stopped
            command = [sys.executable, __file__, "probe", "--meter", meter, "--out", str(out)]
            command += ["--cap", str(cap), "--threads", str(threads)]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        data: dict[str, Any] = json.loads(out.read_text())
        print(f"  {meter} probe {index + 1}/{processes} done", flush=True)
        return data

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, range(processes)))


def spread(values: list[float]) -> tuple[float, float]:
    """Largest and median relative difference between any two of ``values``."""
    differences = [abs(b / a - 1) for a, b in itertools.permutations(values, 2)]
    return max(differences), statistics.median(differences)


def counted_gate(baseline: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether the counted baseline gate fails ``new`` against ``baseline``."""
    return bool(new["variant"] > baseline["variant"] * (1 + INSTRUCTIONS_TOLERANCE))


def wall_gate(baseline: dict[str, Any], new: dict[str, Any], tolerance: float) -> bool:
    """Whether the wall-clock baseline gate fails ``new`` (its interval wholly below)."""
    return bool(new["interval"][1] < baseline["speedup"] * (1 - tolerance))


def low_end_gate(baseline: dict[str, Any], new: dict[str, Any], tolerance: float) -> bool:
    """The rule not taken: the limit from the baseline interval's low end, not its value."""
    return bool(new["interval"][1] < baseline["interval"][0] * (1 - tolerance))


def cut(record: dict[str, Any], fraction: float) -> dict[str, Any]:
    """``record`` with its speedup and interval lowered by ``fraction``: a synthetic regression
    that keeps the measured noise."""
    factor = 1 - fraction
    return {
        **record,
        "speedup": record["speedup"] * factor,
        "interval": [bound * factor for bound in record["interval"]],
    }


def compare_rules(
    probes: list[dict[str, Any]], cuts: tuple[float, ...] = (0.0, 0.2, 0.3)
) -> list[str]:
    """How often each wall rule fails pairs of clean probes with j's speedup cut by each fraction:
    false alarms at 0, the share of regressions caught above it."""
    lines = []
    for technique in TECHNIQUES:
        clean = [p["results"][technique] for p in probes]
        pairs = list(itertools.permutations(clean, 2))
        for tolerance, fraction in itertools.product(WALL_TOLERANCES, cuts):
            value = _rate(wall_gate(b, cut(n, fraction), tolerance) for b, n in pairs)
            low = _rate(low_end_gate(b, cut(n, fraction), tolerance) for b, n in pairs)
            lines.append(
                f"(x) rules eager/{technique:<13} tolerance {tolerance:.0%}, speedup cut "
                f"{fraction:.0%}: fails {value:.1%} of {len(pairs)} pairs with the limit from "
                f"the stored value, {low:.1%} from its interval's low end"
            )
    return lines


def analyse(probes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (technique, level): spread, false alarms or detections over probe pairs."""
    meter = probes[0]["meter"]
    rows = []
    keys = list(probes[0]["results"])
    for key in keys:
        technique = key.split("+")[0]
        clean = [p["results"][technique] for p in probes]
        new = [p["results"][key] for p in probes]
        pairs = [(clean[i], new[j]) for i, j in itertools.permutations(range(len(probes)), 2)]
        row: dict[str, Any] = {"meter": meter, "key": key, "probes": len(probes)}
        if meter == "instructions":
            row["variant_spread"] = spread([r["variant"] for r in new])
            row["reference_spread"] = spread([r["reference"] for r in new])
            row["alarms"] = {"1%": _rate(counted_gate(b, n) for b, n in pairs)}
            clean_count = statistics.median(c["variant"] for c in clean)
            actual = [n["variant"] / clean_count - 1 for n in new]
        else:
            row["speedup_spread"] = spread([r["speedup"] for r in new])
            row["alarms"] = {
                f"{t:.0%}": _rate(wall_gate(b, n, t) for b, n in pairs) for t in WALL_TOLERANCES
            }
            median_speedup = statistics.median(c["speedup"] for c in clean)
            actual = [median_speedup / n["speedup"] - 1 for n in new]
        row["actual_slowdown"] = statistics.median(actual) if "+" in key else 0.0
        row["call_seconds"] = _call_seconds(meter, new)
        row["speedup"] = statistics.median(r["speedup"] for r in new)
        row["seconds"] = statistics.median(r["seconds"] for r in new)
        rows.append(row)
    return rows


def _call_seconds(meter: str, records: list[dict[str, Any]]) -> dict[str, float] | None:
    """Median seconds a call of each side took: natively (wall) or under valgrind (counted)."""
    if meter == "wall":
        calls = records
    else:  # probes from before the field was recorded lack it
        calls = [r["valgrind_call_seconds"] for r in records if "valgrind_call_seconds" in r]
    if not calls:
        return None
    return {side: statistics.median(c[side] for c in calls) for side in ("variant", "reference")}


def valgrind_slowdowns(rows: list[dict[str, Any]]) -> list[str]:
    """How much slower a counted call is than a timed one, per side of each clean pair."""
    by_key = {(row["meter"], row["key"]): row.get("call_seconds") for row in rows}
    lines = []
    for technique in TECHNIQUES:
        counted, timed = by_key.get(("instructions", technique)), by_key.get(("wall", technique))
        if counted and timed:
            lines.append(
                f"(x) valgrind slowdown eager/{technique}: variant "
                f"{counted['variant'] / timed['variant']:.0f}x "
                f"({counted['variant'] * 1e3:.1f} ms vs {timed['variant'] * 1e3:.2f} ms a call), "
                f"reference {counted['reference'] / timed['reference']:.0f}x"
            )
    return lines


def _rate(outcomes: Iterable[bool]) -> float:
    outcomes = list(outcomes)
    return sum(outcomes) / len(outcomes)


def report(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        injected = "+" in row["key"]
        what = "detected" if injected else "false alarms"
        gates = ", ".join(f"{rate:.1%} at a {gate} gate" for gate, rate in row["alarms"].items())
        if row["meter"] == "instructions":
            largest, median = row["variant_spread"]
            spread_text = (
                f"variant counts spread {largest:.3%} max, {median:.3%} median; reference "
                f"{row['reference_spread'][0]:.3%} max"
            )
        else:
            largest, median = row["speedup_spread"]
            spread_text = f"speedups spread {largest:.1%} max, {median:.1%} median"
        actual = f" (actual +{row['actual_slowdown']:.1%})" if injected else ""
        lines.append(
            f"(x) {row['meter']:<12} eager/{row['key']:<20} {what} {gates}{actual}; {spread_text}; "
            f"ratio {row['speedup']:.4g}x, {row['seconds']:.0f} s per verdict, "
            f"{row['probes']} processes"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("probe", help="one fresh process's measurements, written as JSON")
    one.add_argument("--meter", choices=("wall", "instructions"), required=True)
    one.add_argument("--out", required=True)
    one.add_argument("--cap", type=float, default=3.0)
    one.add_argument("--threads", type=int, default=2)
    rules = sub.add_parser(
        "rules", help="the wall gate's limit from the stored value or its low end, on saved probes"
    )
    rules.add_argument("--probes-dir", default="cross-session-probes")
    args = parser.parse_args()
    if args.command == "rules":
        paths = sorted(Path(args.probes_dir).glob("wall-*.json"))
        if len(paths) < 2:
            parser.error(
                f"{args.probes_dir}: needs two or more wall-*.json probes, found {len(paths)}"
            )
        print("\n".join(compare_rules([json.loads(path.read_text()) for path in paths])))
        return
    data = probe(args.meter, args.cap, args.threads)
    Path(args.out).write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
