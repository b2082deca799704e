"""Options: every ``--modelopt-*`` flag and its ini twin, with its parser, default and help.

``add_options`` declares them to pytest; ``read_option`` reads one back (its flag wins over its
ini key), old names of renamed options included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_modelopt import defaults
from pytest_modelopt.budget import INCONCLUSIVE_POLICIES

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
    renamed_from: str | None = None  # its old name, still read, with a deprecation warning

    @property
    def flag(self) -> str:
        """Return the option's command-line flag: ``--modelopt-`` and its name, dashed."""
        return "--modelopt-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        """Return the option's ini key: ``modelopt_`` and its name."""
        return "modelopt_" + self.name

    def old(self) -> Option | None:
        """Return the option under its old name, if it was renamed."""
        if self.renamed_from is None:
            return None
        return dataclasses.replace(self, name=self.renamed_from, renamed_from=None)


def parse_bool(text: str) -> bool:
    """Read a yes/no setting: 1/true/yes/on or 0/false/no/off (any case), else a ValueError."""
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
        parse_bool,
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
        "target_width",
        _fraction,
        defaults.TARGET_WIDTH,
        "stop timing once the speedup interval is this narrow (relative)",
        renamed_from="precision",  # until 0.3: it read as a numeric precision, not a width
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
        "build_cache",
        parse_bool,
        True,
        "reuse variants built by an earlier session, kept in pytest's cache directory and keyed "
        "on the model, its data, the technique, its parameters, library versions and this "
        "machine; off builds every variant again (--cache-clear empties it)",
    ),
    Option(
        "inject_slowdown",
        _slowdowns,
        (),
        "testing aid: technique=fraction[,...] adds that fraction of each call's time as extra "
        "compute to the named technique's calls",
    ),
)


def read_option(config: pytest.Config, option: Option) -> tuple[Any, str]:
    """Return an option's raw value and where it came from: its flag, else its ini key.

    A renamed option is still read under its old flag or key when the new one is unset, with a
    deprecation warning that names the new one.
    """
    names = [option] + [old for old in (option.old(),) if old is not None]
    for candidate in names:
        for raw, source in (
            (config.getoption(candidate.flag), candidate.flag),
            (config.getini(candidate.ini), candidate.ini),
        ):
            if raw in (None, "", []) or (raw is False and candidate.ini_type == "bool"):
                continue
            if candidate is not option:
                new_name = option.flag if source.startswith("--") else option.ini
                config.issue_config_time_warning(
                    pytest.PytestDeprecationWarning(
                        f"{source} is deprecated: use {new_name} (same meaning)"
                    ),
                    stacklevel=2,
                )
            return raw, source
    return None, option.flag


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
        _add_option(parser, group, option, f"{option.help}. Default: {default}")
        old = option.old()
        if old is not None:
            _add_option(parser, group, old, f"deprecated: use {option.flag} / {option.ini}")
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


def _add_option(
    parser: pytest.Parser, group: pytest.OptionGroup, option: Option, help: str
) -> None:
    if option.ini_type == "bool":
        group.addoption(option.flag, action="store_true", default=None, help=help)
    else:
        group.addoption(option.flag, default=None, help=help)
    parser.addini(
        option.ini,
        type=option.ini_type,  # type: ignore[arg-type]
        default=option.default if option.ini_type == "bool" else "",
        help=help,
    )
