"""Baseline entries made from result records, and the records too disturbed to be stored.

An entry keeps what the regression rules compare (speedup or counts, p50 latency, size,
accuracy), with each side's top operators or functions where the record has them, the settings
and the environment it was measured in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from pytest_modelopt.validate import finite_or_none

# Every wall-clock row of a spec times the same fp32 reference on the same device, so its median
# agrees between rows within a factor of about 2 (in process or in a worker, neighbours). A row
# whose reference ran more than DISTURBED_FACTOR times slower than the spec's fastest row was
# disturbed: on a 2-core machine shared with other processes, the 0.2 ms digits CNN took 60 ms a
# call, both sides, whenever a neighbour held a core in the middle of an OpenMP region, and one
# such row stored a 1,955x speedup that the next quiet run "regressed" from.
DISTURBED_FACTOR = 3.0


def disturbed_records(records: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Find wall-clock records whose reference timing disagrees with the rest of the run.

    Test id -> why it is not stored as a baseline (the fastest row of the spec is the least
    disturbed).
    """
    groups: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for record in records:
        if record.get("meter", "wall") != "wall":
            continue
        p50 = record["latency"]["reference"]["stats"].get("p50")
        if isinstance(p50, int | float) and p50 > 0:
            device = str(record.get("reference", {}).get("device", "cpu"))
            groups.setdefault((record["spec"], device), []).append((record["test"], float(p50)))
    disturbed = {}
    for (spec, _), rows in groups.items():
        fastest = min(p50 for _, p50 in rows)
        for test, p50 in rows:
            if p50 > DISTURBED_FACTOR * fastest:
                disturbed[test] = (
                    f"its reference ran at {p50 * 1e3:.3g} ms a call, {p50 / fastest:.0f}x the "
                    f"{fastest * 1e3:.3g} ms of {spec}'s fastest row in this run: the timing was "
                    "disturbed (another process on the cores?); record it again on a quiet machine"
                )
    return disturbed


def entry_from_record(
    record: Mapping[str, Any], *, recorded: str, settings: Mapping[str, Any], environment: Any
) -> dict[str, Any]:
    """Make a baseline entry of one result record (``VariantResult.to_dict()`` with its test id)."""
    latency = record["latency"]
    common = {
        "spec": record["spec"],
        "technique": record["technique"],
        "recorded": recorded,
        "size_bytes": record["sizes"]["variant_bytes"],
        "reference_bytes": record["sizes"]["reference_bytes"],
        "accuracy": {
            name: value
            for name, value in record["accuracy"].items()
            if isinstance(value, int | float)
        },
        "settings": {**settings, "threads": latency.get("threads")},
        "environment": {key: str(value) for key, value in dict(environment).items()},
    }
    if latency.get("meter") == "instructions":
        return {**common, **_counted_fields(record)}
    metrics = record["metrics"]
    p50 = metrics["latency_p50_ms"]
    reference = latency["reference"]["stats"]
    return {
        **common,
        "speedup": {
            "value": latency["speedup"],
            "interval": _interval(latency["speedup_interval"]),
            "n": latency["rounds"],
            "confidence": latency["confidence"],
            "undecidable": metrics["speedup"].get("undecidable"),
        },
        "latency_p50_ms": {
            "value": p50["value"],
            "interval": _interval(p50["interval"]),
            "n": latency["variant"]["stats"]["n"],
            "undecidable": p50.get("undecidable"),
        },
        "reference_p50_ms": {"value": reference["p50"] * 1e3, "n": reference["n"]},
        **_profiled_fields(record.get("operators") or {}),
    }


def _profiled_fields(operators: Mapping[str, Any]) -> dict[str, Any]:
    """Return what an operator profile adds to a timed entry: each side's top operators.

    A record is profiled when a baseline is being saved, or a regression explained; a side
    without a profile adds nothing.
    """
    fields = {}
    for side, key in (("variant", "top_operators"), ("reference", "reference_top_operators")):
        if operators.get(side):  # a profiler's NaN is no measurement: it is left out
            fields[key] = {name: ms for name, ms in operators[side].items() if math.isfinite(ms)}
    return fields


def _counted_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return what the instructions meter adds to an entry: counts, ratio, ISA, top functions."""
    latency = record["latency"]
    counts = latency["counts"]
    variant, reference = counts["variant"], counts["reference"]
    return {
        "meter": "instructions",
        "instructions_ratio": {
            "value": latency["speedup"],
            "interval": _interval(latency["speedup_interval"]),
            "n": latency["rounds"],
        },
        "instructions_per_call": {"value": variant["instructions"], "n": variant["calls"]},
        "reference_instructions_per_call": {
            "value": reference["instructions"],
            "n": reference["calls"],
        },
        "estimated_cycles": {"value": variant["estimated_cycles"]},
        "isa": variant.get("isa", {}),
        "top_functions": variant.get("top_functions", {}),
        "reference_top_functions": reference.get("top_functions", {}),
    }


def _interval(interval: Any) -> list[float | None] | None:
    if interval is None:
        return None
    low, high = interval
    return [finite_or_none(low), finite_or_none(high)]
