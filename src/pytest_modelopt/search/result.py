"""What a search did and chose (``SearchResult``): its choice, and what it did not measure."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_modelopt.search.candidates import Candidate, _finite
from pytest_modelopt.search.choice import Choice

if TYPE_CHECKING:
    from pathlib import Path

    from pytest_modelopt.hardware import Hardware
    from pytest_modelopt.variant_result import VariantResult


@dataclass
class SearchResult:
    """What ``Evaluator.best`` did and chose.

    The Choice over what it measured, each measured variant, and what it did not measure, with
    why (``skipped``: this machine or model cannot run it; ``failed``: the build failed;
    ``pruned``: a chain not built because a part broke a quality budget; ``untried``: not
    started, the time budget being spent). ``remeasured``: the contenders measured again
    because their objective was too noisy to decide, with what each read in the end.
    """

    choice: Choice
    records: list[dict[str, Any]]
    results: dict[str, VariantResult] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    pruned: list[tuple[str, str]] = field(default_factory=list)
    untried: list[str] = field(default_factory=list)
    remeasured: list[tuple[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    max_time: float = math.inf
    hardware: Hardware | None = None

    @property
    def recommended(self) -> Candidate | None:
        """Return the recommended candidate, or None when no candidate is feasible."""
        return self.choice.recommended

    def write_results(self, path: Path) -> None:
        """Write the measured candidates as a results file (the ``--modelopt-json`` format).

        ``modelopt best``, ``report`` and ``merge`` read it: the same records give the same
        choice.
        """
        import dataclasses
        import datetime as dt

        from pytest_modelopt.report import environment
        from pytest_modelopt.results import SCHEMA, write_results_file

        hardware: dict[str, Any] = {"cpu": {}}
        if self.hardware is not None:
            detected = dataclasses.replace(self.hardware, machine=None).fingerprint
            hardware = {**self.hardware.to_dict(), "detected_fingerprint": detected}
        document = {
            "schema": SCHEMA,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "fingerprint": self.choice.fingerprint or "unknown",
            "hardware": hardware,
            "environment": environment(),
            "settings": {"search": self.to_dict() | {"candidates": None}},
            "results": self.records,
        }
        write_results_file(path, document)

    @property
    def ranked(self) -> list[Candidate]:
        """Return the feasible candidates, in rank order."""
        return self.choice.ranked

    @property
    def front(self) -> list[Candidate]:
        """Return the feasible candidates on the Pareto front."""
        return self.choice.front

    def summary(self) -> str:
        """One line: time spent, what was built, and what was not."""
        return (
            f"search of {self.choice.spec}: {self.elapsed_s:.1f} s of {self.max_time:g} s; "
            f"{len(self.records)} measured, {len(self.failed)} failed to build, "
            f"{len(self.skipped)} skipped, {len(self.pruned)} chains pruned, "
            f"{len(self.untried)} untried, {len(self.remeasured)} noisy contenders remeasured"
        )

    def table(self) -> str:
        """Format the choice's table, the summary line, and what was skipped, failed or pruned."""
        lines = [self.choice.table(), self.summary()]
        for title, entries in (
            ("skipped", self.skipped),
            ("failed", self.failed),
            ("pruned", self.pruned),
            ("remeasured", self.remeasured),
        ):
            if entries:
                lines.append(f"{title}:")
                lines += [f"  {name}: {why}" for name, why in entries]
        if self.untried:
            lines.append(f"untried (time budget spent): {', '.join(self.untried)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return the search's choice and what it did not measure, as JSON-ready values."""
        # a search's own choice: "search" and "note" describe a later reading of its records
        choice = {k: v for k, v in self.choice.to_dict().items() if k not in ("search", "note")}
        return {
            **choice,
            "elapsed_s": self.elapsed_s,
            "max_time": _finite(self.max_time),
            "skipped": [list(entry) for entry in self.skipped],
            "failed": [list(entry) for entry in self.failed],
            "pruned": [list(entry) for entry in self.pruned],
            "untried": self.untried,
            "remeasured": [list(entry) for entry in self.remeasured],
        }
