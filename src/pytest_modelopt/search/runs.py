"""Choosing from results files: one choice per machine and model, and one per recorded search.

What ``modelopt best`` and ``merge --budget`` print: the records of the latest run of each
fingerprint, chosen among as ``choose`` does, with a note where a search's own answer in the
session differs from this reading of its records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pytest_modelopt.budget import Budget
from pytest_modelopt.errors import InvalidFileError
from pytest_modelopt.search.choice import Choice, choose
from pytest_modelopt.search.objective import _budgets, parse_objective

if TYPE_CHECKING:
    from pytest_modelopt.results import RecordedSearch, Run


def choose_runs(
    runs: Sequence[Run],
    budgets: Iterable[str] | Mapping[str, float | str] | Sequence[Budget] | None = None,
    objective: str = "latency",
    *,
    specs: Sequence[str] | None = None,
    searches: bool = False,
) -> list[Choice]:
    """Choose a variant per machine and model from results files.

    One Choice per fingerprint and model (a merged nightly matrix holds several machines), each
    from the latest run of that fingerprint that measured the model. With ``searches``, also one
    per search in the files (``@pytest.mark.modelopt_best``), from that search's candidates
    alone, as the session's search chose (the latest run of that fingerprint holding that
    search); its ``note`` says when the session's answer differs.
    """
    parsed = _budgets(budgets)
    chosen = parse_objective(objective)  # a bad objective is an error before anything is read
    groups = _latest_groups(runs, searches=searches)
    known = sorted({spec for _, spec, _ in groups})
    unknown = sorted(set(specs or ()) - set(known))
    if unknown:
        raise InvalidFileError(
            f"no results for model {', '.join(unknown)}; the files hold {', '.join(known)}"
        )
    choices = []
    for (fingerprint, spec, _), (records, recorded) in sorted(groups.items()):
        if specs and spec not in specs:
            continue
        if records:
            choice = choose(records, parsed, objective, fingerprint=fingerprint)
        else:  # a search that measured nothing: in the session, too, nothing was recommended
            choice = Choice(spec, fingerprint, chosen, parsed, [], None)
        if recorded is not None:
            choice.search = recorded.test
            choice.note = _differs_from_session(choice, recorded)
        choices.append(choice)
    return choices


def _latest_groups(
    runs: Sequence[Run], *, searches: bool
) -> dict[tuple[str, str, str], tuple[list[Mapping[str, Any]], RecordedSearch | None]]:
    """Group the records to choose among by fingerprint, model and search.

    (fingerprint, model, search test or "") -> the records to choose among, from the latest run
    of that fingerprint holding them, with the search they came from (None: ``results``).
    """
    latest: dict[tuple[str, str, str], tuple[list[Mapping[str, Any]], RecordedSearch | None]] = {}
    for run in sorted(runs, key=lambda r: r.created):
        for spec in sorted({str(record["spec"]) for record in run.records}):
            records: list[Mapping[str, Any]] = [r for r in run.records if r["spec"] == spec]
            latest[(run.fingerprint, spec, "")] = (records, None)
        for recorded in run.searches if searches else []:
            latest[(run.fingerprint, recorded.spec, recorded.test)] = (
                list(recorded.records),
                recorded,
            )
    return latest


def _differs_from_session(choice: Choice, recorded: RecordedSearch) -> str | None:
    """Say what the session's search answered, when this reading of its records answers otherwise.

    It may where other budgets or another objective are asked, or under other rules (another
    pytest-modelopt); None when the recommendation and the tied set are the same.
    """
    best = choice.recommended
    answer = (best.label if best else None, [c.label for c in choice.tied])
    if answer == (recorded.recommended, recorded.tied):
        return None
    asked = (choice.objective.name, [f"{b.metric.name} {b}" for b in choice.budgets])
    why = (
        "this reading asks for other budgets or another objective"
        if asked != (recorded.objective, recorded.budgets)
        else "the same objective and budgets: the rules that choose differ (another "
        "pytest-modelopt version?)"
    )
    return (
        f"in the session this search recommended {recorded.recommended or 'nothing'} (tied: "
        f"{', '.join(recorded.tied) or 'none'}) for objective {recorded.objective} under "
        f"{', '.join(recorded.budgets) or 'no constraints'}; {why}"
    )
