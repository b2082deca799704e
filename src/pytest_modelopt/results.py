"""Results files (``--modelopt-json``): written, read back validated for comparisons and reports.

A file holds each measured variant's record (``results``) and each search's
(``@pytest.mark.modelopt_best``) choice with its candidates' records (``searches``), in the
same record format. ``compare``, ``report`` and ``merge`` read ``results``; ``modelopt best``
also reads each search's candidates, apart from everything else, so that it judges them as
the session's search did.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_modelopt.atomic import atomic_write_text
from pytest_modelopt.errors import InvalidFileError
from pytest_modelopt.validate import ShapeError, check, load_json

SCHEMA = 1
_STATS = {"stats": {"p50": "positive", "n": "int"}}
RECORD_SHAPE = {
    "test": "str",
    "spec": "str",
    "technique": "str",
    "latency": {
        "speedup": "positive",
        "speedup_interval": "interval",
        "rounds": "int",
        "confidence": "number",
        "variant": _STATS,
        "reference": _STATS,
    },
    "metrics": {  # wall-clock records have the first two, counted ones the third
        "speedup?": {"value": "number", "interval": "interval"},
        "latency_p50_ms?": {"value": "number", "interval": "interval?"},
        "instructions_per_call?": {"value": "number"},
    },
    "sizes": {
        "variant_bytes": "int",
        "reference_bytes": "positive",
        "variant_gzip_bytes": "int",
        "reference_gzip_bytes": "positive",
    },
    "accuracy": ("map", "number"),
    "variant": {"notes": ("list", "str")},
    "efficiency?": "dict",
    "checks?": ("list", "dict"),
    "verdict?": "str?",
    "baseline?": {"status": "str"},
}
# Every metric of a record, whichever it is: ``modelopt best`` may rank or budget any of them.
METRIC_SHAPE = {"value": "number?", "interval?": "interval?", "undecidable?": "str?"}
# A search's entry: what it chose in the session, and under what, and each candidate's record.
SEARCH_SHAPE = {
    "test": "str",
    "spec": "str",
    "objective": {"name": "str", "metric": "str"},
    "budgets": ("list", "str"),
    "recommended": "str?",
    "tied": ("list", "str"),
    "records": ("list", RECORD_SHAPE),
}
RESULTS_SHAPE = {
    "schema": "int",
    "created": "str",
    "fingerprint": "str",
    "hardware": {"cpu": "dict"},
    "environment": "dict",
    "settings": "dict",
    "results": ("list", RECORD_SHAPE),
    "searches?": ("list", SEARCH_SHAPE),  # files written before issue 14 have none
}


@dataclass(frozen=True)
class RecordedSearch:
    """A search of a run (``@pytest.mark.modelopt_best``).

    Its test and model, what it chose in the session (the recommended candidate's label and the
    tied ones') under which objective and budgets (as the session wrote them:
    ``"top1_agreement >= 99.00%"``), and every candidate's record, in the format of the run's
    ``records``.
    """

    test: str
    spec: str
    objective: str
    budgets: list[str]
    recommended: str | None
    tied: list[str]
    records: list[dict[str, Any]]


@dataclass(frozen=True)
class Run:
    """One results file: where it ran, when, and every variant's record."""

    path: Path
    created: dt.datetime
    fingerprint: str
    hardware: dict[str, Any]
    environment: dict[str, Any]
    settings: dict[str, Any]
    records: list[dict[str, Any]]
    searches: list[RecordedSearch] = field(default_factory=list)

    @property
    def label(self) -> str:
        """Name the run for people: its machine fingerprint and when it ran (to the minute)."""
        return f"{self.fingerprint} {self.created:%Y-%m-%d %H:%M}"


def load_run(path: Path) -> Run:
    """Read and validate a results file; any problem is an InvalidFileError naming it."""
    data = load_json(path, RESULTS_SHAPE, "results file")
    if data["schema"] != SCHEMA:
        raise InvalidFileError(
            f"results file {path}: schema {data['schema']}, this pytest-modelopt reads schema "
            f"{SCHEMA}"
        )
    try:
        created = dt.datetime.fromisoformat(data["created"])
    except ValueError:
        raise InvalidFileError(
            f"results file {path}: created: {data['created']!r} is not an ISO date and time"
        ) from None
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.timezone.utc)
    _check_records(path, data["results"], "results")
    searches = data.get("searches", [])
    _check_unique(path, [search["test"] for search in searches], "searches: tests")
    for index, search in enumerate(searches):
        _check_search(path, search, f"searches[{index}]")
    return Run(
        path=path,
        created=created,
        fingerprint=data["fingerprint"],
        hardware=data["hardware"],
        environment=data["environment"],
        settings=data["settings"],
        records=data["results"],
        searches=[_recorded_search(search) for search in searches],
    )


def write_results_file(path: Path, document: Mapping[str, Any]) -> None:
    """Write a results file (a session's, a search's) atomically, for ``load_run`` to read.

    JSON has no infinity or NaN: unbounded interval sides and the like are written as null.
    """
    text = json.dumps(_json_ready(document), indent=2, sort_keys=True, allow_nan=False, default=str)
    atomic_write_text(path, text + "\n")


def _json_ready(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, Mapping):
        return {key: _json_ready(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_json_ready(value) for value in data]
    return data


def _check_records(path: Path, records: list[dict[str, Any]], where: str) -> None:
    """Each record's metrics, whichever they are, and no test recorded twice."""
    for index, record in enumerate(records):
        try:
            check(record["metrics"], ("map", METRIC_SHAPE), f"{where}[{index}].metrics")
        except ShapeError as error:
            raise InvalidFileError(f"results file {path}: {error}") from None
    _check_unique(path, [record["test"] for record in records], f"{where}: tests")


def _check_unique(path: Path, names: list[str], what: str) -> None:
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidFileError(f"results file {path}: {what} recorded twice: {duplicates}")


def _check_search(path: Path, search: dict[str, Any], where: str) -> None:
    """Check that a search's candidates are of its own model, and each recorded once."""
    _check_records(path, search["records"], f"{where}.records")
    for index, record in enumerate(search["records"]):
        if record["spec"] != search["spec"]:
            raise InvalidFileError(
                f"results file {path}: {where}.records[{index}].spec: {record['spec']!r} is "
                f"not the model of its search, {search['spec']!r}"
            )


def _recorded_search(search: dict[str, Any]) -> RecordedSearch:
    return RecordedSearch(
        test=search["test"],
        spec=search["spec"],
        objective=search["objective"]["name"],
        budgets=search["budgets"],
        recommended=search["recommended"],
        tied=search["tied"],
        records=search["records"],
    )


def accuracy_of(record: dict[str, Any]) -> tuple[str, float] | None:
    """Return the accuracy figure a report plots: task accuracy when labelled, else agreement.

    None when the record has neither.
    """
    for name in ("accuracy", "top1_agreement"):
        if name in record["accuracy"]:
            return name, record["accuracy"][name]
    return None
