"""Baseline entries: typed, made from result records, written to and read from baseline files.

An entry (:class:`BaselineEntry`) keeps what the regression rules compare (speedup or counts,
p50 latency, size, accuracy), with each side's top operators or functions where the record has
them, the settings and the environment it was measured in. Also here: the records too disturbed
to be stored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_modelopt.budget import Measured
from pytest_modelopt.errors import InvalidFileError
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


@dataclass(frozen=True)
class StoredValue:
    """One figure of an entry: its value and, where recorded, interval, rounds and confidence.

    ``undecidable`` says why the engine could not judge it when it was recorded (too noisy, too
    few rounds); an interval's open end is None.
    """

    value: float
    interval: tuple[float | None, float | None] | None = None
    n: int | None = None
    confidence: float | None = None
    undecidable: str | None = None

    def measured(self, *, keep_reason: bool) -> Measured:
        """Return the figure as a budget judges it; an open end of the interval is infinite."""
        bounds = None
        if self.interval is not None:
            low, high = self.interval
            bounds = (-math.inf if low is None else low, math.inf if high is None else high)
        return Measured(self.value, bounds, self.undecidable if keep_reason else None)

    @property
    def can_gate(self) -> bool:
        """Return whether this recorded figure may set a limit.

        Not one the engine found too noisy to judge or left unbounded when it was recorded (a
        3-round 18.5x [-inf, inf] on a loaded machine would fail every honest run below 14.8x).
        """
        bounded = self.interval is not None and None not in self.interval
        return bounded and not self.undecidable

    def to_json(self, keys: tuple[str, ...]) -> dict[str, Any]:
        """Return the figure as a baseline file holds it: ``value`` and the ``keys`` given."""
        data: dict[str, Any] = {"value": self.value}
        for key in keys:
            value = getattr(self, key)
            data[key] = list(value) if key == "interval" and value is not None else value
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StoredValue:
        """Read a figure as a baseline file holds it (keys it lacks are None)."""
        interval = data.get("interval")
        return cls(
            value=data["value"],
            interval=None if interval is None else (interval[0], interval[1]),
            n=data.get("n"),
            confidence=data.get("confidence"),
            undecidable=data.get("undecidable"),
        )


# The figures an entry may hold, and the keys each is written with beside its value.
FIGURES: dict[str, tuple[str, ...]] = {
    "speedup": ("interval", "n", "confidence", "undecidable"),
    "latency_p50_ms": ("interval", "n", "undecidable"),
    "reference_p50_ms": ("n",),
    "instructions_ratio": ("interval", "n"),
    "instructions_per_call": ("n",),
    "reference_instructions_per_call": ("n",),
    "estimated_cycles": (),
}
COUNTED_LISTS = ("isa", "top_functions", "reference_top_functions")
PROFILED_LISTS = ("top_operators", "reference_top_operators")


@dataclass(frozen=True)
class BaselineEntry:
    """What a baseline keeps of one test's variant: the figures the regression rules compare.

    A timed entry (``meter`` "wall") has ``speedup``, ``latency_p50_ms`` and
    ``reference_p50_ms``, and each side's top operators where it was profiled; a counted one
    (``meter`` "instructions") has the instructions per call of each side, their ratio, the
    estimated cycles, the ISA the runtimes chose under valgrind and each side's top functions.
    Both have sizes, accuracy, and the settings and environment they were measured in.
    ``to_json`` writes, and ``from_json`` reads, the entry as a baseline file holds it.
    """

    spec: str
    technique: str
    recorded: str
    size_bytes: int
    reference_bytes: int | None
    accuracy: dict[str, float]
    settings: dict[str, Any]
    environment: dict[str, str]
    meter: str = "wall"
    speedup: StoredValue | None = None
    latency_p50_ms: StoredValue | None = None
    reference_p50_ms: StoredValue | None = None
    instructions_ratio: StoredValue | None = None
    instructions_per_call: StoredValue | None = None
    reference_instructions_per_call: StoredValue | None = None
    estimated_cycles: StoredValue | None = None
    isa: dict[str, str] = field(default_factory=dict)
    top_functions: dict[str, float] = field(default_factory=dict)
    reference_top_functions: dict[str, float] = field(default_factory=dict)
    top_operators: dict[str, float] = field(default_factory=dict)
    reference_top_operators: dict[str, float] = field(default_factory=dict)

    @property
    def counted(self) -> bool:
        """Return whether the entry was measured by the instructions meter."""
        return self.meter == "instructions"

    def to_json(self) -> dict[str, Any]:
        """Return the entry as a baseline file holds it."""
        data: dict[str, Any] = {
            "spec": self.spec,
            "technique": self.technique,
            "recorded": self.recorded,
            "size_bytes": self.size_bytes,
            "reference_bytes": self.reference_bytes,
            "accuracy": dict(self.accuracy),
            "settings": dict(self.settings),
            "environment": dict(self.environment),
        }
        if self.counted:
            data["meter"] = self.meter
        for name, keys in FIGURES.items():
            figure: StoredValue | None = getattr(self, name)
            if figure is not None:
                data[name] = figure.to_json(keys)
        for name in COUNTED_LISTS if self.counted else ():
            data[name] = dict(getattr(self, name))
        for name in PROFILED_LISTS:
            if getattr(self, name):
                data[name] = dict(getattr(self, name))
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "a baseline entry") -> BaselineEntry:
        """Read an entry as a baseline file holds it; raise InvalidFileError naming ``where``.

        ``where`` names the file and test, for the message of an entry that is not one (a
        search's recorded choice, or a file edited by hand).
        """
        try:
            figures: dict[str, Any] = {
                name: StoredValue.from_json(data[name])
                for name in FIGURES
                if data.get(name) is not None
            }
            lists: dict[str, Any] = {
                name: dict(data[name]) for name in COUNTED_LISTS + PROFILED_LISTS if name in data
            }
            return cls(
                spec=data["spec"],
                technique=data["technique"],
                recorded=data["recorded"],
                size_bytes=data["size_bytes"],
                reference_bytes=data.get("reference_bytes"),
                accuracy=dict(data["accuracy"]),
                settings=dict(data.get("settings", {})),
                environment=dict(data.get("environment", {})),
                meter=data.get("meter", "wall"),
                **figures,
                **lists,
            )
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise InvalidFileError(
                f"{where} is not a variant's baseline entry ({type(error).__name__}: {error}): "
                "re-record it with --modelopt-save-baseline"
            ) from error


def entry_from_record(
    record: Mapping[str, Any], *, recorded: str, settings: Mapping[str, Any], environment: Any
) -> BaselineEntry:
    """Make a baseline entry of one result record (``VariantContract.to_dict()`` and test id)."""
    latency = record["latency"]
    common: dict[str, Any] = {
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
        return BaselineEntry(**common, **_counted_fields(record))
    metrics = record["metrics"]
    p50 = metrics["latency_p50_ms"]
    reference = latency["reference"]["stats"]
    return BaselineEntry(
        **common,
        speedup=StoredValue(
            latency["speedup"],
            _pair(latency["speedup_interval"]),
            latency["rounds"],
            latency["confidence"],
            metrics["speedup"].get("undecidable"),
        ),
        latency_p50_ms=StoredValue(
            p50["value"],
            _pair(p50["interval"]),
            latency["variant"]["stats"]["n"],
            undecidable=p50.get("undecidable"),
        ),
        reference_p50_ms=StoredValue(reference["p50"] * 1e3, n=reference["n"]),
        **_profiled_fields(record.get("operators") or {}),
    )


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
        "instructions_ratio": StoredValue(
            latency["speedup"], _pair(latency["speedup_interval"]), latency["rounds"]
        ),
        "instructions_per_call": StoredValue(variant["instructions"], n=variant["calls"]),
        "reference_instructions_per_call": StoredValue(
            reference["instructions"], n=reference["calls"]
        ),
        "estimated_cycles": StoredValue(variant["estimated_cycles"]),
        "isa": dict(variant.get("isa", {})),
        "top_functions": dict(variant.get("top_functions", {})),
        "reference_top_functions": dict(reference.get("top_functions", {})),
    }


def _interval(interval: Any) -> list[float | None] | None:
    """Return an interval as the JSON holds it: its infinite or NaN ends as None."""
    pair = _pair(interval)
    return None if pair is None else list(pair)


def _pair(interval: Any) -> tuple[float | None, float | None] | None:
    if interval is None:
        return None
    low, high = interval
    return (finite_or_none(low), finite_or_none(high))
