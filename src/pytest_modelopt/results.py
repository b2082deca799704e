"""Results files (``--modelopt-json``) read back: validated, for comparisons and reports."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_modelopt.errors import InvalidFileError
from pytest_modelopt.validate import load_json

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
RESULTS_SHAPE = {
    "schema": "int",
    "created": "str",
    "fingerprint": "str",
    "hardware": {"cpu": "dict"},
    "environment": "dict",
    "settings": "dict",
    "results": ("list", RECORD_SHAPE),
}


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

    @property
    def label(self) -> str:
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
    tests = [record["test"] for record in data["results"]]
    duplicates = sorted({test for test in tests if tests.count(test) > 1})
    if duplicates:
        raise InvalidFileError(f"results file {path}: tests recorded twice: {duplicates}")
    return Run(
        path=path,
        created=created,
        fingerprint=data["fingerprint"],
        hardware=data["hardware"],
        environment=data["environment"],
        settings=data["settings"],
        records=data["results"],
    )


def accuracy_of(record: dict[str, Any]) -> tuple[str, float] | None:
    """The accuracy figure a report plots: task accuracy when labelled, else agreement."""
    for name in ("accuracy", "top1_agreement"):
        if name in record["accuracy"]:
            return name, record["accuracy"][name]
    return None
