"""Settings: every ``--modelopt-*`` option and its ini twin, read once into a frozen dataclass."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_modelopt.options import (
    MACHINE_ENV,
    OPTIONS,
    STRICT_ENV,
    add_options,
    parse_bool,
    read_option,
)

if TYPE_CHECKING:
    from pytest_modelopt.baselines import Tolerances
    from pytest_modelopt.hardware import Hardware
    from pytest_modelopt.measure import MeasureSettings

__all__ = ["MACHINE_ENV", "OPTIONS", "STRICT_ENV", "Settings", "add_options"]


def _default(name: str) -> Any:
    """Return an option's default: each is written once, in ``OPTIONS`` (or ``defaults``)."""
    return next(option.default for option in OPTIONS if option.name == name)


@dataclass(frozen=True)
class Settings:
    """The session's settings, read once from the options, ini keys and environment."""

    strict: bool = _default("strict")
    threads: int | None = _default("threads")
    measure: str = _default("measure")
    max_time: float = _default("max_time")
    warmup: float = _default("warmup")
    target_width: float = _default("target_width")
    confidence: float = _default("confidence")
    noise: float = _default("noise")
    process_pairs: int = _default("process_pairs")
    inconclusive: str = _default("inconclusive")
    machine: str | None = _default("machine")
    baseline_dir: str | None = _default("baseline_dir")
    speedup_tolerance: float = _default("speedup_tolerance")
    size_tolerance: float = _default("size_tolerance")
    accuracy_tolerance: float = _default("accuracy_tolerance")
    instructions_tolerance: float = _default("instructions_tolerance")
    latency_tolerance: float | None = _default("latency_tolerance")
    build_cache: bool = _default("build_cache")
    inject_slowdown: tuple[tuple[str, float], ...] = _default("inject_slowdown")
    json_path: Path | None = None
    save_baseline: bool = False
    prune_baselines: bool = False
    rootdir: Path = Path()

    @classmethod
    def from_pytest_config(cls, config: pytest.Config) -> Settings:
        """Read the settings: a command-line flag wins over its ini key, unset keeps the default.

        ``MODELOPT_STRICT`` can turn strict mode on, and ``MODELOPT_MACHINE`` names the machine when
        no option does. A value that cannot be read is a UsageError naming its flag or ini key.
        """
        values: dict[str, Any] = {}
        for option in OPTIONS:
            raw, source = read_option(config, option)
            if raw in (None, "", []):
                continue
            try:
                values[option.name] = raw if isinstance(raw, bool) else option.type(str(raw))
            except ValueError as error:
                raise pytest.UsageError(f"{source}: {error}") from None
        if os.environ.get(STRICT_ENV):
            values["strict"] = values.get("strict", False) or parse_bool(os.environ[STRICT_ENV])
        if os.environ.get(MACHINE_ENV) and not values.get("machine"):
            values["machine"] = os.environ[MACHINE_ENV]
        json_path = config.getoption("--modelopt-json")
        if json_path:
            values["json_path"] = Path(json_path)
        values["save_baseline"] = bool(config.getoption("--modelopt-save-baseline"))
        values["prune_baselines"] = bool(config.getoption("--modelopt-prune-baselines"))
        values["rootdir"] = Path(config.rootpath)
        return cls(**values)

    @property
    def baseline_root(self) -> Path:
        """Return the directory of baseline files: ``baseline_dir`` under the rootdir."""
        return self.rootdir / (self.baseline_dir or "baselines")

    def tolerances(self) -> Tolerances:
        """Return the tolerances a baseline comparison allows, as configured."""
        from pytest_modelopt.baselines import Tolerances

        return Tolerances(
            speedup=self.speedup_tolerance,
            size=self.size_tolerance,
            accuracy=self.accuracy_tolerance,
            instructions=self.instructions_tolerance,
            latency=self.latency_tolerance,
        )

    def recorded_settings(self) -> dict[str, Any]:
        """Return the settings that change a measurement, stored with each baseline entry."""
        names = ("max_time", "warmup", "target_width", "confidence", "noise", "process_pairs")
        return {name: getattr(self, name) for name in names}

    def measure_settings(self, hardware: Hardware) -> MeasureSettings:
        """Return how to time a comparison on ``hardware`` under these settings.

        Threads default to the physical cores (one under the instructions meter); operators are
        profiled only when baselines are saved.
        """
        from pytest_modelopt.measure import MeasureSettings

        return MeasureSettings(
            # Counted runs use one thread (variants are built for it): pools' spinning would
            # make counts differ between processes.
            threads=1
            if self.measure == "instructions"
            else self.threads or hardware.cpu.physical_cores,
            warmup_s=self.warmup,
            max_time=self.max_time,
            target_width=self.target_width,
            confidence=self.confidence,
            noise_threshold=self.noise,
            process_pairs=self.process_pairs,
            meter=self.measure,
            profile_operators=self.save_baseline,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as JSON-ready values, as the results file records them."""
        data = asdict(self)
        data["json_path"] = str(self.json_path) if self.json_path else None
        data["rootdir"] = str(self.rootdir)
        data["inject_slowdown"] = dict(self.inject_slowdown)
        return data
