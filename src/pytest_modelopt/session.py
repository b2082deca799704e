"""The state of one pytest session: hardware, one Evaluator per spec, and the results so far."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_modelopt.atomic import atomic_write_text
from pytest_modelopt.config import Settings
from pytest_modelopt.hardware import Hardware, detect_hardware

if TYPE_CHECKING:
    from pytest_modelopt.evaluation import Evaluator, VariantResult
    from pytest_modelopt.spec import ModelSpec

RESULTS_SCHEMA = 1


class ModeloptSession:
    """Registered as a plugin in pytest_configure; fixtures and hooks reach it through the stash."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self._hardware: Hardware | None = None
        self._evaluators: dict[int, tuple[ModelSpec, Evaluator]] = {}
        self.results: list[tuple[str, VariantResult]] = []
        self.notes: dict[str, set[str]] = {}

    @property
    def hardware(self) -> Hardware:
        if self._hardware is None:
            self._hardware = detect_hardware(
                cache_dir=self._cache_dir(), machine=self.settings.machine
            )
        return self._hardware

    def _cache_dir(self) -> Path | None:
        cache = getattr(self.config, "cache", None)  # absent under -p no:cacheprovider
        return cache.mkdir("modelopt") if cache is not None else None

    def log(self, message: str) -> None:
        """Progress of long work, printed live through pytest's terminal reporter."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or self.config.get_verbosity() < 0:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(f"modelopt: {message}", cyan=True)

    def evaluator(self, spec: ModelSpec, workdir: Path) -> Evaluator:
        from pytest_modelopt.evaluation import Evaluator

        key = id(spec)
        if key not in self._evaluators:
            evaluator = Evaluator(
                spec,
                settings=self.settings.measure_settings(self.hardware),
                hardware=self.hardware,
                workdir=workdir,
                inconclusive=self.settings.inconclusive,
                cache_dir=self._cache_dir(),
                log=self.log,
            )
            self._evaluators[key] = (spec, evaluator)  # the spec is kept so its id stays unique
        return self._evaluators[key][1]

    def record(self, nodeid: str, result: VariantResult) -> None:
        self.results.append((nodeid, result))
        for note in result.variant.notes:
            self.notes.setdefault(note, set()).add(result.technique)

    # -- hooks ------------------------------------------------------------------------------

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        from pytest_modelopt.report import results_table

        if not self.results:
            return
        terminalreporter.section("modelopt results")
        terminalreporter.write_line(f"hardware: {self.hardware.describe()}")
        for line, markup in results_table(self.results):
            terminalreporter.write_line(line, **markup)
        for note, techniques in sorted(self.notes.items()):
            terminalreporter.write_line(f"note ({', '.join(sorted(techniques))}): {note}")
        if self.settings.json_path is not None:
            self.write_json(self.settings.json_path)
            terminalreporter.write_line(f"results written to {self.settings.json_path}")

    def write_json(self, path: Path) -> None:
        from pytest_modelopt.report import (
            benchmark_entry,
            benchmark_header,
            environment,
        )

        created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        document: dict[str, Any] = {
            **benchmark_header(created),
            "benchmarks": [benchmark_entry(nodeid, result) for nodeid, result in self.results],
            "schema": RESULTS_SCHEMA,
            "created": created,
            "fingerprint": self.hardware.fingerprint,
            "hardware": self.hardware.to_dict(),
            "environment": environment(),
            "settings": self.settings.to_dict(),
            "results": [{"test": nodeid, **result.to_dict()} for nodeid, result in self.results],
        }
        atomic_write_text(path, json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
