"""The session's side of the baselines.

The stores of this machine's fingerprints, the verdict of each test against its stored entry,
and what is written at session end (new baselines, ``.obtained.json`` files of regressions,
unused entries reported or pruned).

The store and the regression rules themselves are in ``pytest_modelopt.baselines``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from pytest_modelopt.errors import ContractViolation, InvalidFileError
from pytest_modelopt.readable import first_few
from pytest_modelopt.session.context import SessionContext, utc_now
from pytest_modelopt.session.scope import RunScope

if TYPE_CHECKING:
    from pytest_modelopt.baselines import BaselineEntry, BaselineStore, SaveReport, Tolerances
    from pytest_modelopt.search import SearchResult
    from pytest_modelopt.variant_contract import VariantContract


class SessionBaselines:
    """Each test's verdict against its stored baseline entry, and the files written at the end.

    Under xdist workers compare, and the controller writes.
    """

    def __init__(
        self,
        context: SessionContext,
        scope: RunScope,
        timed_section: Callable[[str], AbstractContextManager[None]],
    ) -> None:
        self.context = context
        self.settings = context.settings
        self.scope = scope
        self.timed_section = timed_section  # the scheduler's: a failure's profile holds the lock
        self._stores: dict[str, BaselineStore] = {}
        self.comparisons: dict[str, dict[str, Any]] = {}  # test id -> what its comparison found
        self.obtained: dict[str, dict[str, Any]] = {}  # test id -> entry that regressed
        self.choices: dict[str, dict[str, Any]] = {}  # test id -> a search's choice, to save
        self.failed_writes = False

    @property
    def store(self) -> BaselineStore:
        """The baselines of the session's meter (``--modelopt-measure``)."""
        return self.store_for(self.settings.measure)

    def store_for(self, meter: str) -> BaselineStore:
        """Return the baselines of one meter: counted ones live under a fingerprint of their own."""
        from pytest_modelopt.baselines import BaselineStore

        if meter not in self._stores:
            root = self.settings.baseline_root
            self._stores[meter] = BaselineStore(root, self.context.hardware, meter=meter)
        return self._stores[meter]

    # -- during the run ---------------------------------------------------------------------

    def check_baseline_file(self, nodeid: str, meter: str | None = None) -> None:
        """Raise InvalidFileError before measuring if this test's baseline file is broken."""
        from pytest_modelopt.baselines import module_of

        self.store_for(meter or self.settings.measure).load(module_of(nodeid))

    def compare_with_baseline(
        self, nodeid: str, result: VariantContract, tolerances: Tolerances
    ) -> None:
        """Judge the result against its stored entry; raise ContractViolation on a regression."""
        from pytest_modelopt.baselines import (
            BaselineEntry,
            compare,
            format_baseline_checks,
            module_of,
            what_grew,
        )
        from pytest_modelopt.budget import AFTER_REGRESSION, LOOSEN_TOLERANCE, what_to_do
        from pytest_modelopt.verdicts import decide

        if self.settings.save_baseline:
            self.comparisons[nodeid] = {"status": "recorded"}
            return
        store = self.store_for(result.meter)
        stored_json = store.entry(nodeid)
        if stored_json is None:  # a new test in a module that has a baseline: "no entry"
            file = store.load(module_of(nodeid))
            self.comparisons[nodeid] = {"status": "no entry" if file else "no baseline"}
            return
        stored = BaselineEntry.from_json(
            stored_json, f"{store.path_for(module_of(nodeid))}: the entry of {nodeid}"
        )
        same, differences = store.same_hardware(module_of(nodeid))
        decision = decide(
            lambda: compare(stored, self.entry(result), tolerances, same_hardware=same),
            measure_again=result.measure_again if result.can_measure_again else None,
            retries=result.retries,
            policy=self.settings.inconclusive,
            log=self.context.log,
            label=f"{result.label}: inconclusive against the baseline",
        )
        checks, failed, undecided = list(decision.checks), decision.failed, decision.undecided
        status = "regressed" if failed else "inconclusive" if undecided else "passed"
        self.comparisons[nodeid] = {
            "status": status,
            "checks": [c.to_dict() for c in checks],
            "hardware_differences": differences,
        }
        where = f"the baseline for {store.fingerprint}"
        if not same and tolerances.latency is not None:
            where += " (absolute latency not compared: the detected hardware differs)"
        if failed:
            if result.meter == "wall":  # what grew, by operator: profiled now, the machine held
                with self.timed_section(nodeid):
                    result.profile_operators()
            new = self.entry(result).to_json()
            self.obtained[nodeid] = new
            names = ", ".join(c.metric for c in failed)
            table = format_baseline_checks(
                checks, f"{result.label}: regression against {where} ({names})"
            )
            grown, rows = what_grew(stored_json, new, result.operators.get("unavailable"))
            self.comparisons[nodeid].update(rows)
            raise ContractViolation("\n".join(filter(None, (table, AFTER_REGRESSION, grown))))
        if decision.fails_inconclusive:
            names = ", ".join(c.metric for c in undecided)
            table = format_baseline_checks(
                checks,
                f"{result.label}: inconclusive against {where} ({names}): the measurements "
                "cannot decide on this machine",
            )
            advice = what_to_do(
                [c.check for c in undecided], result.comparison.elapsed_s, LOOSEN_TOLERANCE
            )
            raise ContractViolation(f"{table}\n{advice}")

    def compare_choice(self, nodeid: str, found: SearchResult, tolerances: Tolerances) -> None:
        """Judge a search (modelopt_best) against the choice its baseline entry recorded.

        Raise ContractViolation when that choice no longer meets its budgets or is now surely
        beaten beyond the tolerance (``search.check_contract``).
        """
        from pytest_modelopt.baselines import choice_tolerance, module_of
        from pytest_modelopt.search import check_contract

        if self.settings.save_baseline:
            self.comparisons[nodeid] = {"status": "recorded"}
            return
        store = self.store
        stored = store.entry(nodeid)
        if stored is None or "choice" not in stored:
            file = store.load(module_of(nodeid))
            status = "no baseline" if not file else "no entry" if stored is None else "no choice"
            self.comparisons[nodeid] = {"status": status}
            return
        metric = found.choice.objective.metric.name
        tolerance, absolute = choice_tolerance(metric, tolerances)
        verdict = check_contract(stored["choice"], found, tolerance, absolute=absolute)
        self.comparisons[nodeid] = {
            "status": "passed" if verdict.kept else "regressed",
            "choice": verdict.to_dict(),
        }
        if verdict.kept:
            return
        new = self.choice_entry(found)
        if new is not None:
            self.obtained[nodeid] = new
        where = f"the baseline for {store.fingerprint}, recorded {stored['recorded']}"
        raise ContractViolation(
            f"{nodeid}: {verdict.message} (against {where})\n"
            f"{found.table()}\n"
            "what to do: if the change is intended (a technique or backend improved, the budgets "
            "moved), record the new choice with --modelopt-save-baseline; if not, "
            f"{verdict.recorded} regressed: its own test or `modelopt best` on this run's "
            "--modelopt-json says how"
        )

    def choice_entry(self, found: SearchResult) -> dict[str, Any] | None:
        """Return the baseline entry of a search, stamped with now and the settings."""
        from pytest_modelopt.report import environment
        from pytest_modelopt.search import baseline_entry

        return baseline_entry(
            found,
            recorded=utc_now(),
            settings=self.settings.recorded_settings(),
            environment=environment(),
        )

    def record_choice(self, nodeid: str, found: SearchResult) -> None:
        """Keep a search's entry to save at session end (--modelopt-save-baseline only)."""
        if self.settings.save_baseline:
            entry = self.choice_entry(found)
            if entry is not None:
                self.choices[nodeid] = entry

    def comparison_of_choice(self, nodeid: str) -> dict[str, Any]:
        """Return what comparing a search with its recorded choice found, as ``comparison_of``."""
        if nodeid in self.comparisons:
            return self.comparisons[nodeid]
        return {"status": "recorded" if self.settings.save_baseline else "not compared"}

    def entry(self, result: VariantContract) -> BaselineEntry:
        """Return the baseline entry of a measured variant, stamped with now and the settings."""
        from pytest_modelopt.baselines import entry_from_record
        from pytest_modelopt.report import environment

        return entry_from_record(
            result.to_dict(raw=False),
            recorded=utc_now(),
            settings=self.settings.recorded_settings(),
            environment=environment(),
        )

    def comparison_of(self, nodeid: str, meter: str) -> dict[str, Any]:
        """Return what comparing this test with its baseline found, as its result record holds it.

        A test whose body failed was never compared: its status says whether there was anything
        to compare with, in the words a passing test's row uses (``no baseline``, ``no entry``,
        ``recorded``), and ``not compared`` only where an entry exists and the failure kept it
        from being judged.
        """
        from pytest_modelopt.baselines import module_of

        if nodeid in self.comparisons:
            return self.comparisons[nodeid]
        if self.settings.save_baseline:  # every measured record is saved, failed or not
            return {"status": "recorded"}
        store = self.store_for(meter)
        try:
            if store.entry(nodeid) is not None:
                return {"status": "not compared"}
            return {"status": "no entry" if store.load(module_of(nodeid)) else "no baseline"}
        except InvalidFileError:  # reported as the module's error already
            return {"status": "not compared"}

    # -- at session end (the controller only) -----------------------------------------------

    def write_files(self, records: list[dict[str, Any]]) -> list[tuple[str, dict[str, bool]]]:
        """Write the session's baseline files; return the summary lines that say what was done.

        Save the measured entries (--modelopt-save-baseline), write the entries that regressed
        beside their baselines, and report or prune unused ones.
        """
        from pytest_modelopt.baselines import SaveReport

        report = SaveReport()
        if self.settings.save_baseline and (records or self.choices):
            self._save(records, report)
        lines = self._write_obtained()
        lines += self._unused(report)
        lines += self._report_writes(report)
        return lines

    def _save(self, records: list[dict[str, Any]], report: SaveReport) -> None:
        from pytest_modelopt.baselines import disturbed_records, entry_from_record
        from pytest_modelopt.report import environment

        created, env = utc_now(), environment()
        by_meter: dict[str, dict[str, Any]] = {}
        disturbed = disturbed_records(records)
        report.left_out += [f"{test}: {why}" for test, why in sorted(disturbed.items())]
        for record in records:
            if record["test"] in disturbed:
                continue
            by_meter.setdefault(record.get("meter", "wall"), {})[record["test"]] = (
                entry_from_record(
                    record,
                    recorded=created,
                    settings=self.settings.recorded_settings(),
                    environment=env,
                ).to_json()
            )
        for nodeid, entry in self.choices.items():
            by_meter.setdefault(entry.get("meter", "wall"), {})[nodeid] = entry
        for meter, entries in sorted(by_meter.items()):
            self.store_for(meter).save(entries, report)

    def _write_obtained(self) -> list[tuple[str, dict[str, bool]]]:
        """Each baseline file with a regression, as this run would record it: ``.obtained.json``."""
        from pytest_modelopt.baselines import module_of

        by_module: dict[tuple[str, str], dict[str, Any]] = {}
        for nodeid, entry in self.obtained.items():
            key = (entry.get("meter", "wall"), module_of(nodeid))
            by_module.setdefault(key, {})[nodeid] = entry
        lines: list[tuple[str, dict[str, bool]]] = []
        for (meter, module), updates in sorted(by_module.items()):
            path = self.store_for(meter).write_obtained(module, updates)
            lines.append(
                (f"regressed measurements written beside the baseline for diffing: {path}", {})
            )
        return lines

    def _unused(self, report: SaveReport) -> list[tuple[str, dict[str, bool]]]:
        """Entries of tests this run did not collect: pruned on request, else reported."""
        partial = self.scope.partial_reasons()
        if self.settings.prune_baselines:
            if partial:
                report.errors.append(
                    "--modelopt-prune-baselines refused: not a full run ("
                    + "; ".join(partial)
                    + "): nothing was deleted"
                )
                return []
            self.store.prune(self.scope.collected, self.scope.in_scope, report)
            return []
        # no baseline directory, no unused entries: and no hardware detection in a run that
        # never used the plugin
        if partial or not self.settings.baseline_root.is_dir() or not self.store.exists():
            return []
        try:
            entries, files = self.store.unused(self.scope.collected, self.scope.in_scope)
        except InvalidFileError as error:
            report.errors.append(str(error))
            return []
        if not entries:
            return []
        return [
            (
                f"unused baselines for {self.store.fingerprint}: {len(entries)} entries of "
                f"tests that were not collected ({first_few(entries)}; files with none left: "
                f"{', '.join(p.name for p in files) or 'none'}); delete them with "
                "--modelopt-prune-baselines on a full run",
                {"yellow": True},
            )
        ]

    def _report_writes(self, report: SaveReport) -> list[tuple[str, dict[str, bool]]]:
        """Say what was saved and pruned; an error also fails the session (``failed_writes``)."""
        lines: list[tuple[str, dict[str, bool]]] = [
            (f"baseline saved: {line}", {"green": True}) for line in report.written
        ]
        if report.removed_entries:
            lines.append(
                (
                    f"pruned {len(report.removed_entries)} unused baseline entries "
                    f"({', '.join(report.removed_entries)}); files deleted: "
                    f"{', '.join(report.removed_files) or 'none'}",
                    {"yellow": True},
                )
            )
        for line in report.left_out:
            lines.append((f"baseline not recorded for {line}", {"yellow": True}))
        for error in report.errors:
            lines.append((f"ERROR: {error}", {"red": True, "bold": True}))
            self.failed_writes = True
        return lines

    # -- xdist: workers compare, the controller writes ---------------------------------------

    def worker_output(self) -> dict[str, Any]:
        """Return this xdist worker's regressed entries and search choices, for the controller."""
        return {"obtained": self.obtained, "choices": self.choices}

    def merge_worker_output(self, data: dict[str, Any]) -> None:
        """Merge a worker's :meth:`worker_output` into the controller's."""
        self.obtained.update(data["obtained"])
        self.choices.update(data.get("choices", {}))
