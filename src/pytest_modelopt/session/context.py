"""What every part of the session shares.

The pytest config, the settings, the detected hardware, pytest's cache directory and a live
progress line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from pytest_modelopt.config import Settings
from pytest_modelopt.hardware import Hardware, detect_hardware


class SessionContext:
    """The config, settings, hardware, cache directory and progress line the session shares."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self._hardware: Hardware | None = None

    @property
    def hardware(self) -> Hardware:
        """Detected on first use: a run that measures nothing may never need it."""
        if self._hardware is None:
            self._hardware = session_hardware(self.config, self.settings, self.cache_dir())
        return self._hardware

    def cache_dir(self) -> Path | None:
        """Return the plugin's directory in pytest's cache, kept between sessions, if any.

        None when the cache provider is disabled (``-p no:cacheprovider``).
        """
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


def session_hardware(
    config: pytest.Config, settings: Settings, cache_dir: Path | None = None
) -> Hardware:
    """Detect this machine, named by ``--modelopt-machine``, else by the fingerprint hook.

    The ``pytest_modelopt_fingerprint`` hook (``hookspecs.py``) may rename the detected machine;
    a name that is not a non-empty string is a UsageError naming the implementation.
    """
    hardware = detect_hardware(cache_dir=cache_dir, machine=settings.machine)
    if settings.machine:
        return hardware
    name = config.hook.pytest_modelopt_fingerprint(hardware=hardware)
    if name is None:
        return hardware
    if not isinstance(name, str) or not name.strip():
        implementations = config.hook.pytest_modelopt_fingerprint.get_hookimpls()
        where = ", ".join(impl.plugin_name for impl in implementations)
        raise pytest.UsageError(
            f"pytest_modelopt_fingerprint ({where}) returned {name!r}: return a machine name "
            "(a non-empty string) or None to keep the detected fingerprint"
        )
    return dataclasses.replace(hardware, machine=name.strip())


def utc_now() -> str:
    """Return the time stamp written into baseline entries and results files (UTC, ISO)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
