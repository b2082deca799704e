"""What every part of the session shares.

The pytest config, the settings, the detected hardware, pytest's cache directory and a live
progress line.
"""

from __future__ import annotations

import contextlib
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
            self._hardware = detect_hardware(
                cache_dir=self.cache_dir(), machine=self.settings.machine
            )
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


def utc_now() -> str:
    """Return the time stamp written into baseline entries and results files (UTC, ISO)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
