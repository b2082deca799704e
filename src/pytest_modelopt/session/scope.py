"""What this run covers: the tests it collected, and why it is not a full run when it is not.

Unused baselines are reported, and pruned, from this: an entry is unused when its test was not
collected, which only a full run can tell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


class RunScope:
    """A plugin of its own (registered beside the session) that watches collection."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.collected: set[str] = set()
        self.partial: list[str] = []  # why this run is not a full run, seen during collection

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Remember the node ids this run collected."""
        self.collected = {item.nodeid for item in session.items}

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        """Record deselected tests as a reason this is not a full run."""
        if items:
            self.partial.append(f"{len(items)} tests deselected")

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """Record a collection error as a reason this is not a full run."""
        if report.failed:
            self.partial.append(f"collection error in {report.nodeid or 'a module'}")

    def partial_reasons(self) -> list[str]:
        """Why this run is not a full run: what collection saw, and the options that select."""
        reasons = list(self.partial)
        option = self.config.option
        if getattr(option, "keyword", ""):
            reasons.append(f"-k {option.keyword}")
        if getattr(option, "markexpr", ""):
            reasons.append(f"-m {option.markexpr}")
        reasons += [f"node id {arg}" for arg in self.config.args if "::" in arg]
        if getattr(option, "lf", False):
            reasons.append("--last-failed")
        return reasons

    def in_scope(self, module: str) -> bool:
        """Whether a module lies under the paths this run was given."""
        root = Path(self.config.rootpath)
        target = (root / module).resolve()
        for arg in self.config.args:
            path = Path(self.config.invocation_params.dir, arg.split("::")[0]).resolve()
            if target == path or path in target.parents:
                return True
        return False

    # -- xdist: each worker collects; the controller, which writes baselines, merges ---------

    def worker_output(self) -> dict[str, Any]:
        """Return what this xdist worker collected, and why it is partial, for the controller."""
        return {"collected": sorted(self.collected), "partial": self.partial}

    def merge_worker_output(self, data: dict[str, Any]) -> None:
        """Merge a worker's :meth:`worker_output` into the controller's scope."""
        self.collected.update(data["collected"])
        self.partial += [reason for reason in data["partial"] if reason not in self.partial]
