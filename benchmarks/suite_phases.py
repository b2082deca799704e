"""Where a suite run's time went, by phase, from its results file; two files side by side.

    python benchmarks/suite_phases.py first.json second.json

Phases, summed over every variant built (each once: a spec's variant is shared by its tests and
the searches' candidates):

- building: the build functions (export, quantization, calibration, training, compilation), or
  the restore from the build cache, of every variant and reference;
- first calls: each variant's first call (lazy initialization, JIT);
- timing: the measurements against the reference (each test's and each search candidate's);
- the build cache: how many variants were reused, kept, or built without being kept, and why.

The whole run's wall time is what ``time make suites`` says: the rest of it is loading the specs
(training the digits models on first use), accuracy, sizes, profiles and pytest itself.

With two files it also lists each test whose verdict, baseline status, accuracy, sizes or
precision differ between them: a reused variant must not change what a test concludes.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path
from typing import Any


def phases(path: Path) -> dict[str, Any]:
    """Return the phase sums of one results file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    records = list(data["results"])
    for search in data.get("searches", []):
        records += search.get("records", [])
    built: dict[tuple[str, str, str], dict[str, Any]] = {}
    timing = 0.0
    for record in records:
        for role in ("variant", "reference"):
            variant = record.get(role) or {}
            if "build_seconds" not in variant:
                continue
            identity = json.dumps(variant.get("details", {}), sort_keys=True, default=str)
            built.setdefault((record["spec"], variant["technique"], identity), variant)
        timing += (record.get("latency") or {}).get("elapsed_s") or 0.0
    cache = collections.Counter(
        (variant.get("build_cache") or "not cached").split(":")[0].split(" (")[0]
        for variant in built.values()
    )
    return {
        "variants built": len(built),
        "building s": sum(v["build_seconds"] for v in built.values()),
        "first calls s": sum(v.get("first_call_seconds", 0.0) for v in built.values()),
        "timing s": timing,
        "build cache": dict(cache),
    }


def outcomes(path: Path) -> dict[str, tuple[Any, ...]]:
    """Return each test's verdict, baseline status, accuracy, sizes and precision."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {
        record["test"]: (
            record.get("verdict"),
            (record.get("baseline") or {}).get("status"),
            record.get("accuracy"),
            record.get("sizes"),
            record["variant"].get("precision"),
        )
        for record in data["results"]
    }


def print_differences(first: Path, second: Path) -> None:
    """Print how many tests concluded the same in both runs, and what differs in the others."""
    names = ("verdict", "baseline", "accuracy", "sizes", "precision")
    before, after = outcomes(first), outcomes(second)
    same = [test for test in before if before[test] == after.get(test)]
    print(f"\n{len(same)} of {len(before)} tests identical in {', '.join(names)}")
    for test, values in before.items():
        other = after.get(test, (None,) * len(names))
        for name, old, new in zip(names, values, other, strict=True):
            if old != new:
                print(f"  {test}: {name} {old} -> {new}")


def main() -> None:
    """Print each file's phases, and the ratio of the first to the second."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results files (--modelopt-json)")
    args = parser.parse_args()
    columns = [phases(path) for path in args.results]
    print("| phase | " + " | ".join(str(path) for path in args.results) + " |")
    print("| --- |" + " --- |" * len(columns))
    for name in columns[0]:
        cells = []
        for column in columns:
            value = column[name]
            cells.append(f"{value:.1f}" if isinstance(value, float) else str(value))
        print(f"| {name} | " + " | ".join(cells) + " |")
    if len(columns) == 2 and columns[1]["building s"] > 0:
        ratio = columns[0]["building s"] / columns[1]["building s"]
        print(f"\nbuilding: the first run took {ratio:.1f}x the second's time")
        print_differences(*args.results)


if __name__ == "__main__":
    main()
