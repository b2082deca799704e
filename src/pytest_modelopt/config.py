"""Settings: every ``--modelopt-*`` option and its ini twin, read once into a frozen dataclass."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_modelopt import defaults
from pytest_modelopt.budget import INCONCLUSIVE_POLICIES

if TYPE_CHECKING:
    from pytest_modelopt.baselines import Tolerances
    from pytest_modelopt.hardware import Hardware
    from pytest_modelopt.measure import MeasureSettings

STRICT_ENV = "MODELOPT_STRICT"
MACHINE_ENV = "MODELOPT_MACHINE"


@dataclass(frozen=True)
class Option:
    """One setting: its command-line flag, ini key, type, default and help."""

    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    ini_type: str = "string"

    @property
    def flag(self) -> str:
        """Return the option's command-line flag: ``--modelopt-`` and its name, dashed."""
        return "--modelopt-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        """Return the option's ini key: ``modelopt_`` and its name."""
        return "modelopt_" + self.name


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _policy(text: str) -> str:
    if text not in INCONCLUSIVE_POLICIES:
        raise ValueError(f"expected one of {', '.join(INCONCLUSIVE_POLICIES)}, got {text!r}")
    return text


def _threads(text: str) -> int | None:
    if text in {"", "auto"}:
        return None
    value = int(text)
    if value < 1:
        raise ValueError("threads must be >= 1 or 'auto'")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected a whole number >= 1, got {text!r}")
    return value


def _tolerance(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise ValueError(f"expected a fraction >= 0 and < 1 (0.05 is 5%), got {text!r}")
    return value


def _optional_tolerance(text: str) -> float | None:
    return None if text.strip().lower() in {"", "off", "none"} else _tolerance(text)


def _slowdowns(text: str) -> tuple[tuple[str, float], ...]:
    """``"technique=0.3,other=1"``: extra compute, as a fraction of each call's own time."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, fraction = item.partition("=")
        try:
            value = float(fraction) if sep else -1.0
        except ValueError:
            value = -1.0
        if not name.strip() or value <= 0:
            raise ValueError(
                f"expected technique=fraction (for example fake_fast=0.3), got {item!r}"
            )
        pairs.append((name.strip(), value))
    return tuple(pairs)


def _meter(text: str) -> str:
    from pytest_modelopt.budget import METERS

    if text not in METERS:
        raise ValueError(f"expected one of {', '.join(METERS)}, got {text!r}")
    return text


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError(f"expected a positive number, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise ValueError(f"expected a number between 0 and 1, got {text!r}")
    return value


OPTIONS = (
    Option(
        "strict",
        _bool,
        False,
        f"a technique whose package is missing fails instead of skipping (also ${STRICT_ENV}=1)",
        ini_type="bool",
    ),
    Option("threads", _threads, None, "threads for every runtime, or 'auto' (physical cores)"),
    Option(
        "measure",
        _meter,
        "wall",
        "how variants are measured against the reference: wall (interleaved wall-clock timing) "
        "or instructions (counted under valgrind, one thread: deterministic between sessions)",
    ),
    Option(
        "max_time", _positive, defaults.MAX_TIME_S, "seconds of timing per variant before a verdict"
    ),
    Option("warmup", _positive, defaults.WARMUP_S, "minimum seconds of warm-up per variant"),
    Option(
        "precision",
        _fraction,
        defaults.TARGET_WIDTH,
        "stop timing once the speedup interval is this narrow",
    ),
    Option(
        "confidence", _fraction, defaults.CONFIDENCE, "confidence level of intervals and verdicts"
    ),
    Option(
        "noise",
        _positive,
        defaults.NOISE_THRESHOLD,
        "IQR/median of the per-round speedups above which latency is too noisy to judge",
    ),
    Option(
        "process_pairs",
        _count,
        defaults.PROCESS_PAIRS,
        "time worker-process sides in this many fresh process pairs, the interval reaching each "
        "pair's estimate (a pair's own effect then shows in the interval)",
    ),
    Option(
        "inconclusive",
        _policy,
        "fail",
        "after one more measurement, an inconclusive verdict fails the test (fail) or is "
        "reported and passes (report)",
    ),
    Option(
        "machine",
        str,
        None,
        f"name this machine class instead of the detected fingerprint (also ${MACHINE_ENV})",
    ),
    Option(
        "baseline_dir",
        str,
        None,
        "directory of the baselines, one subdirectory per fingerprint; relative paths are "
        "relative to the rootdir",
    ),
    Option(
        "speedup_tolerance",
        _tolerance,
        0.10,
        "a speedup regresses when its whole interval lies below the baseline's speedup times "
        "(1 - this)",
    ),
    Option(
        "size_tolerance", _tolerance, 0.01, "a size regresses above the baseline's times (1 + this)"
    ),
    Option(
        "accuracy_tolerance",
        _tolerance,
        0.005,
        "accuracy and top1_agreement regress below the baseline's minus this (0.005: 0.5 points)",
    ),
    Option(
        "instructions_tolerance",
        _tolerance,
        0.01,
        "under the instructions meter, a variant's instructions per call regress above the "
        "baseline's times (1 + this)",
    ),
    Option(
        "latency_tolerance",
        _optional_tolerance,
        None,
        "also gate absolute p50 latency against the baseline's times (1 + this), on the same "
        "detected hardware only",
    ),
    Option(
        "inject_slowdown",
        _slowdowns,
        (),
        "testing aid: technique=fraction[,...] adds that fraction of each call's time as extra "
        "compute to the named technique's calls",
    ),
)


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
    precision: float = _default("precision")
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
            raw = config.getoption(option.flag)
            source = option.flag
            if raw is None:
                raw, source = config.getini(option.ini), option.ini
            if raw in (None, "", []):
                continue
            try:
                values[option.name] = raw if isinstance(raw, bool) else option.type(str(raw))
            except ValueError as error:
                raise pytest.UsageError(f"{source}: {error}") from None
        if os.environ.get(STRICT_ENV):
            values["strict"] = values.get("strict", False) or _bool(os.environ[STRICT_ENV])
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
        names = ("max_time", "warmup", "precision", "confidence", "noise", "process_pairs")
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
            target_width=self.precision,
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


def add_options(parser: pytest.Parser) -> None:
    """Add every ``--modelopt-*`` option and its ini twin, and the command-line-only options."""
    group = parser.getgroup("modelopt", "model performance contracts (pytest-modelopt)")
    for option in OPTIONS:
        default = {
            "threads": "auto",
            "latency_tolerance": "off",
            "inject_slowdown": "none",
            "baseline_dir": "<rootdir>/baselines",
        }.get(option.name, option.default)
        if option.ini_type == "bool":
            group.addoption(
                option.flag,
                action="store_true",
                default=None,
                help=f"{option.help}. Default: {default}",
            )
        else:
            group.addoption(option.flag, default=None, help=f"{option.help}. Default: {default}")
        parser.addini(
            option.ini,
            type=option.ini_type,  # type: ignore[arg-type]
            default=option.default if option.ini_type == "bool" else "",
            help=f"{option.help}. Default: {default}",
        )
    group.addoption(
        "--modelopt-json",
        metavar="PATH",
        default=None,
        help="write every variant's measurements and verdicts to this JSON file. Default: none",
    )
    group.addoption(
        "--modelopt-save-baseline",
        action="store_true",
        default=False,
        help="record this run's measurements as the baselines of this fingerprint: entries of "
        "the tests that ran are added or replaced, all other entries are kept. Command line "
        "only, so that CI never records baselines by accident. Default: off (compare)",
    )
    group.addoption(
        "--modelopt-prune-baselines",
        action="store_true",
        default=False,
        help="delete this fingerprint's baseline entries (and files left empty) of tests that "
        "were not collected; refused unless the run is full (no -k, -m, node ids or "
        "deselection). Default: off (unused baselines are only reported)",
    )
    group.addoption(
        "--modelopt-hardware",
        action="store_true",
        default=False,
        help="print this machine's full hardware detection as JSON and exit. Default: off",
    )
