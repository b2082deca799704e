"""Baselines: the last accepted measurements of each test, stored per hardware fingerprint.

Layout: ``<root>/<fingerprint>/<module>-<hash>.json``, one file per test module, keyed inside by
test id. Files are written with sorted keys (a diff reads well), atomically (temp file, fsync,
rename), with the mode the umask gives, and only by the process that ran the session (the xdist
controller); a save reads, merges and writes each file holding the fingerprint directory's lock
(``.modelopt.lock``), so two runs saving at once keep both runs' entries. A file that cannot
be read or has the wrong shape is an error naming it, never skipped and never overwritten.

Regression rules (each a :class:`~pytest_modelopt.budget.Budget` judged by the engine's
``judge``, so an interval decides and INCONCLUSIVE exists):

- ``speedup``: the new interval against ``stored speedup * (1 - speedup_tolerance)``: FAIL only
  when the whole interval lies below it. A stored speedup the engine found too noisy to judge,
  or left unbounded, sets no limit.
- ``latency_p50_ms``: only with a latency tolerance (off by default) and only when the detected
  hardware matches the stored one, the new interval against ``stored p50 * (1 + tolerance)``.
- ``size_bytes``: at most ``stored * (1 + size_tolerance)``.
- ``accuracy`` and ``top1_agreement``: at least ``stored - accuracy_tolerance`` (points).
- Counted entries (the instructions meter, kept under ``<fingerprint>-counted``): in place of
  speedup and latency, the variant's ``instructions_per_call`` at most
  ``stored * (1 + instructions_tolerance)``; counts barely move between processes, so the default
  tolerance is 1%. The instructions ratio is stored, not gated: its denominator, the reference's
  count, moves with what else the worker imported, and on tiny models its interval over the
  rounds is as wide as the gate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pytest_modelopt.atomic import atomic_write_text, directory_lock
from pytest_modelopt.budget import METRICS, Budget, Check, Measured, Verdict, judge
from pytest_modelopt.errors import InvalidFileError
from pytest_modelopt.validate import finite_or_none, load_json

if TYPE_CHECKING:
    from pytest_modelopt.hardware import Hardware

SCHEMA = 1
OBTAINED_SUFFIX = ".obtained.json"
ACCURACY_METRICS = ("accuracy", "top1_agreement")

_MEASURED = {"value": "number", "interval?": "interval", "n?": "int"}
ENTRY_SHAPE = {
    "spec": "str",
    "technique": "str",
    "recorded": "str",
    "speedup?": {**_MEASURED, "value": "positive", "interval": "interval", "confidence": "number"},
    "latency_p50_ms?": _MEASURED,
    "reference_p50_ms?": _MEASURED,
    "meter?": "str",
    "instructions_ratio?": {**_MEASURED, "value": "positive", "interval": "interval"},
    "instructions_per_call?": _MEASURED,
    "reference_instructions_per_call?": _MEASURED,
    "estimated_cycles?": _MEASURED,
    "top_operators?": ("map", "number"),
    "reference_top_operators?": ("map", "number"),
    "top_functions?": ("map", "number"),
    "reference_top_functions?": ("map", "number"),
    "size_bytes": "int",
    "reference_bytes": "int",
    "accuracy": ("map", "number"),
    "settings": "dict",
    "environment": ("map", "str"),
    # a search's recorded choice (the modelopt_best marker); absent from other entries
    "choice?": {
        "objective": "str",
        "metric": "str",
        "budgets": ("list", "str"),
        "recommended": "str",
        "value": "number",
        "interval": "interval?",
        "tied": ("list", "str"),
    },
}
FILE_SHAPE = {
    "schema": "int",
    "fingerprint": "str",
    "module": "str",
    "hardware": {"fingerprint": "str", "detected_fingerprint": "str", "cpu": "dict"},
    "entries": ("map", ENTRY_SHAPE),
}


# -- tolerances ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerances:
    """How far a metric may move from its baseline before it is a regression."""

    # Between sessions on one quiet 2-core VM, torch-vs-torch speedups of the same build moved by
    # up to 6% with intervals of 1 to 2%: a 5% default cried wolf, 10% still catches 20%.
    speedup: float = 0.10
    size: float = 0.01
    accuracy: float = 0.005
    latency: float | None = None
    # Per-call counts of one build moved by up to 0.6% between processes (a tiny torch MLP; a
    # pure-Python model 0.006%): docs/architecture.md, "Meters".
    instructions: float = 0.01

    MARKER_KEYWORDS: ClassVar[tuple[str, ...]] = (
        "speedup_tolerance",
        "size_tolerance",
        "accuracy_tolerance",
        "latency_tolerance",
        "instructions_tolerance",
    )

    def override(self, where: str, **keywords: Any) -> Tolerances:
        """Return these tolerances with a marker's keywords applied; a bad keyword is an error."""
        unknown = sorted(set(keywords) - set(self.MARKER_KEYWORDS))
        if unknown:
            raise ValueError(
                f"{where}: @pytest.mark.modelopt_baseline takes {', '.join(self.MARKER_KEYWORDS)}"
                f"; got unknown {', '.join(unknown)}"
            )
        changes: dict[str, float | None] = {}
        for keyword, value in keywords.items():
            if value is None and keyword == "latency_tolerance":
                changes["latency"] = None
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(
                    f"{where}: modelopt_baseline({keyword}={value!r}): give a number >= 0 "
                    "(a fraction: 0.05 is 5%; accuracy_tolerance is in points of 1.0)"
                )
            changes[keyword.removesuffix("_tolerance")] = float(value)
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def choice_tolerance(metric: str, tolerances: Tolerances) -> tuple[float, bool]:
    """Return how far a recorded choice may be beaten before it is a regression.

    For an objective's metric: a fraction (speedup tolerance for speed, instructions for counts,
    size for bytes), or, for an accuracy metric, points of 1.0 (``absolute``).
    """
    if metric in {
        "instructions_ratio",
        "instructions_per_call",
        "estimated_cycles",
        "cycles_ratio",
    }:
        return tolerances.instructions, False
    if metric in {"size_bytes", "size_ratio", "gzip_size_ratio"}:
        return tolerances.size, False
    if metric in {"accuracy", "top1_agreement", "accuracy_drop", "relative_accuracy_drop"}:
        return tolerances.accuracy, True
    return tolerances.speedup, False


# -- entries ---------------------------------------------------------------------------------


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


def _can_gate(stored: Mapping[str, Any]) -> bool:
    """Return whether a stored speedup may set a limit.

    Not one the engine found too noisy to judge or left unbounded when it was recorded (a
    3-round 18.5x [-inf, inf] on a loaded machine would fail every honest run below 14.8x).
    """
    interval = stored.get("interval")
    bounded = interval is not None and None not in interval
    return bounded and not stored.get("undecidable")


def _measured(data: Mapping[str, Any], keep_reason: bool) -> Measured:
    interval = data.get("interval")
    bounds = None
    if interval is not None:
        low, high = interval
        bounds = (
            float("-inf") if low is None else low,
            float("inf") if high is None else high,
        )
    reason = data.get("undecidable") if keep_reason else None
    return Measured(data["value"], bounds, reason)


@dataclass(frozen=True)
class BaselineCheck:
    """One metric of a test compared with its baseline."""

    check: Check
    baseline: Measured

    @property
    def verdict(self) -> Verdict:
        """Return the comparison's verdict."""
        return self.check.verdict

    @property
    def metric(self) -> str:
        """Return the name of the metric compared."""
        return self.check.budget.metric.name

    def to_dict(self) -> dict[str, Any]:
        """Return the comparison as the results JSON records it: both values, limit, verdict."""
        return {
            "metric": self.metric,
            "baseline": self.baseline.value,
            "baseline_interval": _interval(self.baseline.interval),
            "measured": self.check.measured.value,
            "interval": _interval(self.check.measured.interval),
            "limit": str(self.check.budget),
            "verdict": self.verdict.value,
            "reason": self.check.reason,
        }


def compare(
    stored: Mapping[str, Any],
    new: Mapping[str, Any],
    tolerances: Tolerances,
    *,
    same_hardware: bool,
) -> list[BaselineCheck]:
    """Check a new entry against a stored one for regressions (see the module docstring)."""
    checks = []

    def add(metric: str, op: str, threshold: float, old: Measured, measured: Measured) -> None:
        budget = Budget(METRICS[metric], op, threshold)
        checks.append(BaselineCheck(judge(budget, measured), old))

    if "speedup" in stored and "speedup" in new and _can_gate(stored["speedup"]):
        old_speedup = _measured(stored["speedup"], keep_reason=False)
        add(
            "speedup",
            ">=",
            old_speedup.value * (1 - tolerances.speedup),
            old_speedup,
            _measured(new["speedup"], keep_reason=True),
        )
    if "instructions_per_call" in stored and "instructions_per_call" in new:
        old_count = Measured(stored["instructions_per_call"]["value"])
        add(
            "instructions_per_call",
            "<=",
            old_count.value * (1 + tolerances.instructions),
            old_count,
            Measured(new["instructions_per_call"]["value"]),
        )
    if tolerances.latency is not None and same_hardware and "latency_p50_ms" in stored:
        old_p50 = _measured(stored["latency_p50_ms"], keep_reason=False)
        add(
            "latency_p50_ms",
            "<=",
            old_p50.value * (1 + tolerances.latency),
            old_p50,
            _measured(new["latency_p50_ms"], keep_reason=True),
        )
    old_size = stored["size_bytes"]
    add(
        "size_bytes",
        "<=",
        old_size * (1 + tolerances.size),
        Measured(old_size),
        Measured(new["size_bytes"]),
    )
    for metric in ACCURACY_METRICS:
        if metric in stored["accuracy"] and metric in new["accuracy"]:
            old = stored["accuracy"][metric]
            add(
                metric,
                ">=",
                old - tolerances.accuracy,
                Measured(old),
                Measured(new["accuracy"][metric]),
            )
    return checks


def format_baseline_checks(checks: Iterable[BaselineCheck], title: str) -> str:
    """Tabulate metric, baseline [interval], measured [interval], limit, verdict; then reasons."""
    rows = [("metric", "baseline", "measured", "limit", "verdict")]
    reasons = []
    for item in checks:
        metric = item.check.budget.metric
        rows.append(
            (
                metric.name,
                _with_interval(metric, item.baseline),
                _with_interval(metric, item.check.measured),
                str(item.check.budget),
                item.verdict.value,
            )
        )
        if item.check.reason:
            reasons.append(f"  {metric.name}: {item.verdict.value.lower()}: {item.check.reason}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [title]
    for index, row in enumerate(rows):
        cells = zip(row, widths, strict=True)
        lines.append("  ".join(cell.ljust(width) for cell, width in cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines + reasons)


@dataclass(frozen=True)
class TopList:
    """What a top list of an entry ranks, for the table of what changed.

    Its entry key, the name of a row, the unit and format of its figures, and where its rows go
    in the results JSON (``json_key``, each row
    ``{json_name: ..., "baseline": ..., "measured": ...}``).
    """

    key: str
    row: str
    unit: str
    digits: int
    json_key: str
    json_name: str
    rows: int = 10  # shown in a failure

    def format(self, value: float) -> str:
        """Format a figure of the list with thousands separators and its digits."""
        return f"{value:,.{self.digits}f}"


FUNCTIONS = TopList("top_functions", "function", "self Ir per call", 0, "functions", "function")
OPERATORS = TopList("top_operators", "operator", "self ms per call", 3, "operators", "operator")
# The reference's table is shorter: it says whether the reference got faster (a speedup falls
# then too), the variant's says what grew.
REFERENCE_OPERATORS = TopList(
    "reference_top_operators",
    "reference operator",
    "self ms per call",
    3,
    "reference_operators",
    "operator",
    rows=5,
)
NO_STORED_PROFILE = (
    "the baseline has no operator profile (recorded by an earlier pytest-modelopt, or where none "
    "could be taken): re-record it with --modelopt-save-baseline to see what grew by operator"
)


def top_diff(
    stored: Mapping[str, float], new: Mapping[str, float], rows: int = 10
) -> list[tuple[str, float | None, float | None]]:
    """Return the names whose figure changed most between two top lists.

    Each list is the top 30 of its run. Rows are (name, baseline, measured); None where a name is
    not in that list.
    """
    names = set(stored) | set(new)

    def change(name: str) -> float:
        return abs(new.get(name, 0.0) - stored.get(name, 0.0))

    ranked = sorted(names, key=lambda name: (-change(name), name))[:rows]
    return [(name, stored.get(name), new.get(name)) for name in ranked if change(name) > 0]


def format_top_diff(
    stored: Mapping[str, float], new: Mapping[str, float], kind: TopList = FUNCTIONS
) -> str:
    """Format a table of what grew: the rows of a top list whose figure per call changed most."""
    diff = top_diff(stored, new, kind.rows)
    if not diff:
        return ""
    rows = [(f"{kind.row} ({kind.unit})", "baseline", "measured", "change")]
    for name, old, measured in diff:
        growth = (measured or 0.0) - (old or 0.0)
        rows.append(
            (
                name[:60],
                "-" if old is None else kind.format(old),
                "-" if measured is None else kind.format(measured),
                ("+" if growth >= 0 else "") + kind.format(growth),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"what changed, by {kind.row} (- : not in that run's top 30):"]
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def what_grew(
    stored: Mapping[str, Any], new: Mapping[str, Any], unavailable: Mapping[str, str] | None = None
) -> tuple[str, dict[str, Any]]:
    """Say why an entry regressed, as far as its top lists tell.

    Return the tables for the failure message, and their rows for the results JSON
    (``functions`` of a counted entry; ``operators`` and ``reference_operators`` of a timed one,
    or ``operators_unavailable`` saying why there are none: ``unavailable`` gives a side's reason
    where it could not be profiled).
    """
    counted = new.get("meter") == "instructions"
    kinds = (FUNCTIONS,) if counted else (OPERATORS, REFERENCE_OPERATORS)
    if not counted:
        why = (unavailable or {}).get("variant")
        if why is None and not new.get(OPERATORS.key):
            why = "this run's variant was not profiled"
        if why is None and not stored.get(OPERATORS.key):
            why = NO_STORED_PROFILE
        if why is not None:
            return f"what changed, by operator: not shown: {why}", {"operators_unavailable": why}
    tables, rows = [], {}
    for kind in kinds:
        old, measured = stored.get(kind.key, {}), new.get(kind.key, {})
        if not measured and kind is REFERENCE_OPERATORS:
            continue  # the reference could not be profiled: its rows would all read "-"
        table = format_top_diff(old, measured, kind)
        if table:
            tables.append(table)
        rows[kind.json_key] = [
            {kind.json_name: name, "baseline": before, "measured": after}
            for name, before, after in top_diff(old, measured, kind.rows)
        ]
    return "\n".join(tables), rows


def _with_interval(metric: Any, measured: Measured) -> str:
    text: str = metric.format(measured.value)
    if measured.interval is not None:
        low, high = measured.interval
        text += f" [{metric.format(low)}, {metric.format(high)}]"
    return text


# -- files -----------------------------------------------------------------------------------


def module_of(nodeid: str) -> str:
    """Return the test module of a test id: the path before the first ``::``."""
    return nodeid.split("::")[0]


def baseline_filename(module: str) -> str:
    """Return a readable, safe file name for a test module, with a hash so names never collide."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", module.removesuffix(".py")).strip("._-")[:80]
    digest = hashlib.sha256(module.encode()).hexdigest()[:8]
    return f"{stem or 'tests'}-{digest}.json"


def counted_fingerprint(hardware: Hardware) -> str:
    """Return the fingerprint under which this machine's counted baselines live.

    Apart from timed ones, since counts come from valgrind's simulated CPU (AVX2 kernels at
    most), not from this CPU's timing.
    """
    return f"{hardware.fingerprint}-counted"


def hardware_record(hardware: Hardware) -> dict[str, Any]:
    """Return the hardware a baseline file records, its drifting notes left out."""
    data = hardware.to_dict()
    data.pop("notes", None)
    data["detected_fingerprint"] = dataclasses.replace(hardware, machine=None).fingerprint
    parsed: dict[str, Any] = json.loads(json.dumps(data))  # as it reads back: lists, not tuples
    return parsed


def hardware_differences(
    stored: Mapping[str, Any],
    current: Mapping[str, Any],
    names: tuple[str, str] = ("baseline", "this run"),
) -> list[str]:
    """List the fields in which two hardware records differ: ``field: a (baseline) != b (...)``."""
    left, right = _flatten(stored), _flatten(current)
    keys = sorted(set(left) | set(right))
    return [
        f"{key}: {left.get(key, '-')} ({names[0]}) != {right.get(key, '-')} ({names[1]})"
        for key in keys
        if left.get(key) != right.get(key) and not key.startswith("cpu.flags")
    ]


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(data, list) and data and isinstance(data[0], dict):
        flat = {}
        for index, value in enumerate(data):
            flat.update(_flatten(value, f"{prefix}[{index}]"))
        return flat
    return {prefix: data}


def load_baseline_file(path: Path, fingerprint: str) -> dict[str, Any]:
    """Read and validate one baseline file; any problem is an InvalidFileError naming it."""
    data: dict[str, Any] = load_json(path, FILE_SHAPE, "baseline")
    if data["schema"] != SCHEMA:
        raise InvalidFileError(
            f"baseline {path}: schema {data['schema']}, this pytest-modelopt reads schema "
            f"{SCHEMA}: re-record it with --modelopt-save-baseline or upgrade pytest-modelopt"
        )
    if data["fingerprint"] != fingerprint:
        raise InvalidFileError(
            f"baseline {path}: recorded on fingerprint {data['fingerprint']!r} but stored under "
            f"{fingerprint!r} (moved by hand?): a baseline from another machine is never compared"
        )
    if baseline_filename(data["module"]) != path.name:
        raise InvalidFileError(
            f"baseline {path}: holds module {data['module']!r}, whose file would be "
            f"{baseline_filename(data['module'])}"
        )
    for test in data["entries"]:
        if module_of(test) != data["module"]:
            raise InvalidFileError(
                f"baseline {path}: entry {test!r} is not a test of module {data['module']!r}"
            )
    return data


def _not_finite(data: Any, where: str = "") -> str | None:
    """Return the key path of the first NaN or infinity in an entry, None if it has none."""
    if isinstance(data, float) and not math.isfinite(data):
        return where or "the value"
    items = (
        data.items()
        if isinstance(data, Mapping)
        else enumerate(data)
        if isinstance(data, list)
        else ()
    )
    for key, value in items:
        if (found := _not_finite(value, f"{where}.{key}" if where else str(key))) is not None:
            return found
    return None


def dump(document: Mapping[str, Any]) -> str:
    """Serialize a baseline document as its files hold it: sorted, indented, finite numbers only."""
    return json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n"


@dataclass
class SaveReport:
    """What a save or prune did, for the terminal summary."""

    written: list[str] = field(default_factory=list)
    removed_entries: list[str] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # test id: why it was not recorded


class BaselineStore:
    """The baselines of one fingerprint under ``root``; reads are cached, writes are atomic."""

    def __init__(self, root: Path, hardware: Hardware, *, meter: str = "wall") -> None:
        self.root = root
        self.hardware = hardware
        self.meter = meter
        self.fingerprint = (
            counted_fingerprint(hardware) if meter == "instructions" else (hardware.fingerprint)
        )
        self.directory = root / self.fingerprint
        self._files: dict[Path, dict[str, Any]] = {}

    def path_for(self, module: str) -> Path:
        """Return the path of a test module's baseline file."""
        return self.directory / baseline_filename(module)

    def exists(self) -> bool:
        """Return whether this fingerprint has any baseline file."""
        return self.directory.is_dir() and any(self.baseline_files())

    def baseline_files(self) -> list[Path]:
        """Return this fingerprint's baseline files, sorted (``.obtained.json`` files left out)."""
        if not self.directory.is_dir():
            return []
        return sorted(
            path
            for path in self.directory.glob("*.json")
            if not path.name.endswith(OBTAINED_SUFFIX)
        )

    def load(self, module: str) -> dict[str, Any] | None:
        """Return the module's baseline file, validated; None when there is none."""
        path = self.path_for(module)
        if path not in self._files:
            if not path.exists():
                return None
            self._files[path] = load_baseline_file(path, self.fingerprint)
        return self._files[path]

    def entry(self, nodeid: str) -> dict[str, Any] | None:
        """Return a test's stored entry, or None when its module or the test has none."""
        document = self.load(module_of(nodeid))
        return None if document is None else document["entries"].get(nodeid)

    def same_hardware(self, module: str) -> tuple[bool, list[str]]:
        """Return whether the detected hardware matches the one that recorded this baseline.

        With the fields that differ. It may not match under a --modelopt-machine name that covers
        a class of machines; a module without a baseline is ``(False, [])``.
        """
        document = self.load(module)
        if document is None:
            return False, []
        current = hardware_record(self.hardware)
        stored = document["hardware"]
        same = stored["detected_fingerprint"] == current["detected_fingerprint"]
        return same, [] if same else hardware_differences(stored, current)

    def other_fingerprints(self) -> dict[str, list[str]]:
        """Return the fingerprints of other machines that have baselines under root.

        Each comes with how its hardware differs (this machine's timed and counted baselines are
        not listed).
        """
        found: dict[str, list[str]] = {}
        if not self.root.is_dir():
            return found
        current = hardware_record(self.hardware)
        this_machine = {self.hardware.fingerprint, counted_fingerprint(self.hardware)}
        for directory in sorted(self.root.iterdir()):
            if not directory.is_dir() or directory.name in this_machine:
                continue
            files = [p for p in directory.glob("*.json") if not p.name.endswith(OBTAINED_SUFFIX)]
            if not files:
                continue
            try:
                stored = json.loads(files[0].read_text(encoding="utf-8"))["hardware"]
                found[directory.name] = hardware_differences(stored, current)
            except (OSError, ValueError, KeyError, TypeError):
                found[directory.name] = [f"{files[0]} is unreadable: fields not shown"]
        return found

    # -- writes (controller only) ---------------------------------------------------------------

    def document(self, module: str, entries: Mapping[str, Any]) -> dict[str, Any]:
        """Return a module's baseline file contents: schema, fingerprint, hardware and entries."""
        return {
            "schema": SCHEMA,
            "fingerprint": self.fingerprint,
            "module": module,
            "hardware": hardware_record(self.hardware),
            "entries": dict(entries),
        }

    def save(self, entries: Mapping[str, Mapping[str, Any]], report: SaveReport) -> None:
        """Record or update these entries (test id -> entry); other entries are kept."""
        by_module: dict[str, dict[str, Any]] = {}
        for nodeid, entry in entries.items():
            if (where := _not_finite(entry)) is not None:  # JSON has no NaN: the others are saved
                report.errors.append(f"{nodeid}: not recorded: {where} is not a finite number")
                continue
            by_module.setdefault(module_of(nodeid), {})[nodeid] = entry
        if not by_module:
            return
        # Read afresh under the lock: another process may have saved since this one read.
        with directory_lock(self.directory):
            for module, updates in sorted(by_module.items()):
                path = self.path_for(module)
                try:
                    existing = load_baseline_file(path, self.fingerprint) if path.exists() else None
                except InvalidFileError as error:
                    report.errors.append(f"{error} [not overwritten]")
                    continue
                merged = dict(existing["entries"]) if existing else {}
                merged.update(updates)
                self._write(path, self.document(module, merged))
                path.with_name(path.name.removesuffix(".json") + OBTAINED_SUFFIX).unlink(
                    missing_ok=True
                )
                report.written.append(f"{path} ({len(updates)} recorded, {len(merged)} in all)")

    def write_obtained(self, module: str, updates: Mapping[str, Any]) -> Path:
        """Write the module's baseline as this run would record it, beside it, for diffing."""
        path = self.path_for(module)
        existing = self.load(module)
        merged = dict(existing["entries"]) if existing else {}
        merged.update(updates)
        obtained = path.with_name(path.name.removesuffix(".json") + OBTAINED_SUFFIX)
        atomic_write_text(obtained, dump(self.document(module, merged)))
        return obtained

    def unused(self, collected: set[str], in_scope: Any) -> tuple[list[str], list[Path]]:
        """Find the entries and files of this fingerprint that no collected test uses.

        Entries whose test was not collected (within ``in_scope``, a predicate on module paths),
        and files none of whose tests were collected.
        """
        entries, files = [], []
        for path in self.baseline_files():
            document = load_baseline_file(path, self.fingerprint)
            if not in_scope(document["module"]):
                continue
            stale = [test for test in document["entries"] if test not in collected]
            if len(stale) == len(document["entries"]):
                files.append(path)
            entries += stale
        return sorted(entries), files

    def prune(self, collected: set[str], in_scope: Any, report: SaveReport) -> None:
        """Remove entries and files of tests that were not collected (a full run only)."""
        if self.directory.is_dir():
            with directory_lock(self.directory):
                self._prune(collected, in_scope, report)

    def _prune(self, collected: set[str], in_scope: Any, report: SaveReport) -> None:
        for path in self.baseline_files():
            try:
                document = load_baseline_file(path, self.fingerprint)
            except InvalidFileError as error:
                report.errors.append(f"{error} [not pruned]")
                continue
            if not in_scope(document["module"]):
                continue
            entries = document["entries"]
            stale = [test for test in entries if test not in collected]
            if not stale:
                continue
            report.removed_entries += stale
            if len(stale) == len(entries):
                path.unlink()
                report.removed_files.append(str(path))
                continue
            kept = {test: entry for test, entry in entries.items() if test not in stale}
            self._write(path, {**document, "entries": kept})

    def _write(self, path: Path, document: dict[str, Any]) -> None:
        atomic_write_text(path, dump(document))
        self._files[path] = document
