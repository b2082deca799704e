"""The baseline store: one fingerprint's files, read and validated, saved and pruned under a lock.

Layout: ``<root>/<fingerprint>/<module>-<hash>.json``, one file per test module, keyed inside by
test id. Files are written with sorted keys (a diff reads well), atomically (temp file, fsync,
rename), with the mode the umask gives, and only by the process that ran the session (the xdist
controller); a save reads, merges and writes each file holding the fingerprint directory's lock
(``.modelopt.lock``), so two runs saving at once keep both runs' entries. A file that cannot
be read or has the wrong shape is an error naming it, never skipped and never overwritten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_modelopt.atomic import atomic_write_text, directory_lock
from pytest_modelopt.errors import InvalidFileError
from pytest_modelopt.validate import load_json

if TYPE_CHECKING:
    from pytest_modelopt.hardware import Hardware


SCHEMA = 1
OBTAINED_SUFFIX = ".obtained.json"


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
    for test, entry in data["entries"].items():
        if module_of(test) != data["module"]:
            raise InvalidFileError(
                f"baseline {path}: entry {test!r} is not a test of module {data['module']!r}"
            )
        _rename_settings(entry["settings"])
    return data


# Settings renamed since schema 1 was written: entries read with the old name are written back
# with the new one when their file is next saved.
RENAMED_SETTINGS = {"precision": "target_width"}


def _rename_settings(settings: dict[str, Any]) -> None:
    for old, new in RENAMED_SETTINGS.items():
        if old in settings and new not in settings:
            settings[new] = settings.pop(old)


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
