"""What the session reports.

One record per measured variant, the ``modelopt results`` section of the terminal summary, and
the results JSON (``--modelopt-json``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_modelopt.hardware import Hardware
from pytest_modelopt.readable import first_few, one_line
from pytest_modelopt.session.baselines import SessionBaselines
from pytest_modelopt.session.context import SessionContext, utc_now

if TYPE_CHECKING:
    from pytest_modelopt.baselines import BaselineStore
    from pytest_modelopt.search import SearchResult
    from pytest_modelopt.variant_contract import VariantContract

RESULTS_SCHEMA = 1


class SessionReport:
    """The session's records, terminal summary and results JSON.

    Under xdist each worker records, and the controller merges and writes.
    """

    def __init__(self, context: SessionContext, baselines: SessionBaselines) -> None:
        self.context = context
        self.settings = context.settings
        self.baselines = baselines
        self.worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self.records: list[dict[str, Any]] = []  # the results JSON's "results"
        self.benchmarks: list[dict[str, Any]] = []  # pytest-benchmark's "benchmarks"
        self.searches: list[dict[str, Any]] = []  # the results JSON's "searches" (modelopt_best)
        self.messages: list[tuple[str, dict[str, bool]]] = []  # last lines of the summary

    def record(self, header: dict[str, Any], result: VariantContract) -> None:
        """Record a measured variant for the summary and the results JSON, after its ``header``.

        A wall-clock result also becomes an entry in pytest-benchmark's format.
        """
        from pytest_modelopt.report import benchmark_entry

        self.records.append({**header, **result.to_dict()})
        if result.meter == "wall":  # pytest-benchmark's schema holds seconds, not counts
            self.benchmarks.append(benchmark_entry(header["test"], result))

    def record_search(self, header: dict[str, Any], found: SearchResult) -> None:
        """Record a search's choice and what it measured, after its ``header``.

        Each candidate's record is in the format of ``results``, so ``search.choose`` reads them
        back to the same choice.
        """
        self.searches.append(
            {**header, "summary": found.summary(), **found.to_dict(), "records": found.records}
        )

    def header(
        self,
        nodeid: str,
        timed_sections: list[list[float]],
        lock_wait_s: float,
        baseline: dict[str, Any],
    ) -> dict[str, Any]:
        """Return what every record of a test holds, a variant's or a search's.

        Who measured it, when it held the timing lock, how long it waited for it, and its
        baseline comparison.
        """
        return {
            "test": nodeid,
            "worker": self.worker,
            "timed_sections": timed_sections,
            "lock_wait_s": round(lock_wait_s, 3),
            "baseline": baseline,
        }

    def write_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """Write the ``modelopt results`` section, when there is anything to say."""
        from pytest_modelopt.report import results_table

        if not self.records and not self.messages and not self.searches:
            return
        terminalreporter.section("modelopt results")
        terminalreporter.write_line(f"hardware: {self.context.hardware.describe()}")
        if self.records:
            for line, markup in results_table(self.records):
                terminalreporter.write_line(line, **markup)
        for line, markup in self._search_lines():
            terminalreporter.write_line(line, **markup)
        for line in self._note_lines():
            terminalreporter.write_line(line)
        for line, markup in baseline_lines(self.baselines, self.records):
            terminalreporter.write_line(line, **markup)
        if wait := self._lock_wait_line():
            terminalreporter.write_line(wait, yellow=True)
        if cache := self._build_cache_line():
            terminalreporter.write_line(cache)
        for line, markup in self.messages:
            terminalreporter.write_line(line, **markup)

    def _search_lines(self) -> list[tuple[str, dict[str, bool]]]:
        """Return the summary's lines of each search (modelopt_best).

        What it chose, what it measured, and how the choice compared with the recorded one.
        """
        lines: list[tuple[str, dict[str, bool]]] = []
        for search in self.searches:
            status = search["baseline"]["status"]
            markup = {"red": True} if status == "regressed" else {}
            lines.append((f"search {search['test']}: {one_line(search['verdict'])}", {}))
            contract = search["baseline"].get("choice", {}).get("message")
            lines.append(
                (
                    f"  {one_line(search['summary'])}; recorded choice: {status}"
                    + (f" ({one_line(contract)})" if contract else ""),
                    markup,
                )
            )
        return lines

    def _note_lines(self) -> list[str]:
        """Return each variant note once, naming the variants that carry it.

        They are named ``model[technique]``: a session may measure several models with one
        technique.
        """
        notes: dict[str, set[str]] = {}
        for record in self.records:
            label = one_line(f"{record['spec']}[{record['technique']}]")
            for note in record["variant"]["notes"]:
                notes.setdefault(one_line(note), set()).add(label)
        return [
            f"note ({', '.join(sorted(labels))}): {note}" for note, labels in sorted(notes.items())
        ]

    def _build_cache_line(self) -> str | None:
        """Say what the build cache did with this session's variants, if it was in use.

        The reference is left out: it is the spec's own model, never cached.
        """
        from pytest_modelopt.reference import REFERENCE

        variants: dict[str, dict[str, Any]] = {}
        for record in self.records + [r for s in self.searches for r in s.get("records", [])]:
            variant = record["variant"]
            if variant["technique"] != REFERENCE:
                variants.setdefault(f"{record['spec']}[{variant['technique']}]", variant)
        states = {label: variant.get("build_cache", "") for label, variant in variants.items()}
        if not any(states.values()):
            return None
        reused = [label for label, state in states.items() if state.startswith("reused")]
        kept = [label for label, state in states.items() if state.startswith("kept")]
        rebuilt = sorted(
            {label.partition("[")[2].rstrip("]") for label, state in states.items()}
            - {label.partition("[")[2].rstrip("]") for label in reused + kept}
        )
        restore_s = sum(variants[label]["build_seconds"] for label in reused)
        line = (
            f"build cache: {len(reused)} reused (restored in {restore_s:.1f} s), "
            f"{len(kept)} built and kept"
        )
        if rebuilt:
            line += f"; built every session: {', '.join(rebuilt)}"
        return line

    def lock_wait_s(self) -> float:
        """Return the seconds this session waited in all for the timing lock."""
        return float(sum(record.get("lock_wait_s", 0.0) for record in self.records + self.searches))

    def _lock_wait_line(self) -> str | None:
        """How long the session waited for other processes' measurements, if at all."""
        from pytest_modelopt.session.scheduling import TIMING_LOCK, format_seconds

        total = self.lock_wait_s()
        if total < 1.0:
            return None
        longest = max(
            self.records + self.searches, key=lambda record: record.get("lock_wait_s", 0.0)
        )
        return (
            f"waited {format_seconds(total)} in all for other processes' measurements (the "
            f"machine-wide timing lock {TIMING_LOCK}); longest: {longest['test']}, "
            f"{format_seconds(longest['lock_wait_s'])}"
        )

    def write_results(self) -> None:
        """Write the results JSON, when --modelopt-json asks for it and something was measured."""
        if self.settings.json_path is not None and (self.records or self.searches):
            self.write_json(self.settings.json_path)
            self.messages.append((f"results written to {self.settings.json_path}", {}))

    def write_json(self, path: Path) -> None:
        """Write the results JSON to ``path``: pytest-benchmark's fields and ours, atomically."""
        from pytest_modelopt.report import benchmark_header, environment
        from pytest_modelopt.results import write_results_file

        hardware = self.context.hardware
        created = utc_now()
        document: dict[str, Any] = {
            **benchmark_header(created),
            "benchmarks": self.benchmarks,
            "schema": RESULTS_SCHEMA,
            "created": created,
            # counted sessions are their own column in a matrix: <fingerprint>-counted
            "fingerprint": self.baselines.store.fingerprint,
            "hardware": {**hardware.to_dict(), **_detected(hardware)},
            "environment": environment(),
            "settings": self.settings.to_dict(),
            "lock_wait_s": round(self.lock_wait_s(), 3),
            "results": self.records,
            "searches": self.searches,
        }
        write_results_file(path, document)

    # -- xdist: workers record, the controller reports ---------------------------------------

    def worker_output(self) -> dict[str, Any]:
        """Return this xdist worker's records, benchmarks and searches, for the controller."""
        return {"records": self.records, "benchmarks": self.benchmarks, "searches": self.searches}

    def merge_worker_output(self, data: dict[str, Any]) -> None:
        """Merge a worker's :meth:`worker_output` into the controller's report."""
        self.records += data["records"]
        self.benchmarks += data["benchmarks"]
        self.searches += data.get("searches", [])


def _detected(hardware: Hardware) -> dict[str, str]:
    """Return the detected fingerprint, which a --modelopt-machine name hides, for reports."""
    return {"detected_fingerprint": dataclasses.replace(hardware, machine=None).fingerprint}


def baseline_lines(
    baselines: SessionBaselines, records: list[dict[str, Any]]
) -> list[tuple[str, dict[str, bool]]]:
    """Per meter of the records: the baseline's verdicts, or why there were none."""
    if not records or baselines.settings.save_baseline:
        return []
    lines: list[tuple[str, dict[str, bool]]] = []
    meters = dict.fromkeys(record.get("meter", "wall") for record in records)
    for meter in meters:
        mine = [record for record in records if record.get("meter", "wall") == meter]
        store = baselines.store_for(meter)
        lines += _store_lines(store, [record["baseline"]["status"] for record in mine])
        lines += _imprecise_lines(store, mine)
    return lines


def _imprecise_lines(
    store: BaselineStore, records: list[dict[str, Any]]
) -> list[tuple[str, dict[str, bool]]]:
    """Name the tests compared with a stored figure too uncertain for its tolerance."""
    tests = [
        record["test"]
        for record in records
        if any(check.get("caveat") for check in record["baseline"].get("checks", []))
    ]
    if not tests:
        return []
    return [
        (
            f"imprecise baselines for {store.fingerprint}: {len(tests)} entries were recorded "
            f"with an interval that reaches beyond their tolerance ({first_few(tests)}), so "
            "their gate can cry wolf or miss a regression; record them again on a quiet machine "
            "with --modelopt-save-baseline (the results JSON's baseline checks say which metric)",
            {"yellow": True},
        )
    ]


def _store_lines(store: BaselineStore, statuses: list[str]) -> list[tuple[str, dict[str, bool]]]:
    """Say what one meter's records were compared with: the baseline's verdicts, or why none."""
    if not store.exists():
        lines = [
            (
                f"no baseline for {store.fingerprint} in {store.root}: contracts were checked "
                "against their own budgets only; record one with --modelopt-save-baseline",
                {"yellow": True},
            )
        ]
        for other, differences in store.other_fingerprints().items():
            lines.append(
                (
                    f"baselines of another fingerprint, never compared here: {other} "
                    f"(differs: {_first_differences(differences)})",
                    {"yellow": True},
                )
            )
        return lines
    counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
    summary = ", ".join(f"{count} {status}" for status, count in counts.items())
    markup = {"red": True} if "regressed" in counts else {"green": True}
    return [(f"compared with the baseline for {store.fingerprint}: {summary}", markup)]


def _first_differences(differences: list[str], shown: int = 3, width: int = 90) -> str:
    """Return the first few hardware fields that differ, each cut to one short line.

    Under an ISA cap the full list ran to 1,500 characters a fingerprint.
    """
    if not differences:
        return "fields not recorded"
    lines = [line if len(line) <= width else line[: width - 3] + "..." for line in differences]
    more = len(lines) - shown
    return "; ".join(lines[:shown]) + (f"; and {more} more" if more > 0 else "")
