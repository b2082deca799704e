"""Searching: build and measure the candidates on this machine, then choose (``Evaluator.best``).

The techniques that apply to the spec here are measured in priority order within a time budget,
then the useful chains of those that kept the quality budgets; ``SearchResult`` holds the choice
over what was measured and what was not, with why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pytest_modelopt.budget import Budget, Measured
from pytest_modelopt.defaults import SEARCH_MAX_TIME_S
from pytest_modelopt.reference import REFERENCE
from pytest_modelopt.search.candidates import _show
from pytest_modelopt.search.choice import Choice, choose
from pytest_modelopt.search.objective import _budgets, parse_objective
from pytest_modelopt.search.ranking import _trusted
from pytest_modelopt.search.result import SearchResult

if TYPE_CHECKING:
    from pytest_modelopt.evaluation import Evaluator
    from pytest_modelopt.variant_contract import VariantContract


# The order singles are tried in when the time budget may not cover them all: fast to build and
# often fastest first (the suites' measurements), the slow builds (PT2E, inductor, training)
# later; techniques not named here follow, by name.
PRIORITY = (
    "torchscript",
    "onnxruntime",
    "openvino",
    "onnxruntime_static_int8",
    "openvino_int8",
    "dynamic_int8",
    "openvino_fp32",
    "export",
    "pruned_structured",
    "lowrank",
    "static_int8",
    "compile",
    "clustered",
    "pruned_unstructured",
    "distilled",
    "qat_int8",
)
# How many fresh measurements a contender too noisy to decide gets at the end of a search.
REMEASURES = 2


def search(
    evaluator: Evaluator,
    budgets: Iterable[str] | Mapping[str, float | str] | None = None,
    techniques: Sequence[str] | None = None,
    chains: bool = True,
    objective: str = "latency",
    max_time: float = SEARCH_MAX_TIME_S,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    first: Sequence[str] = (),
) -> SearchResult:
    """Search for the variant to ship on this machine: ``Evaluator.best``.

    Evaluate ``techniques`` (default: every registered one; those this machine or model
    cannot run are skipped with the reason), then the chains of those that kept the quality
    budgets (``chains``), starting no new candidate once ``max_time`` seconds are spent, and
    rank them under ``budgets`` (``{"accuracy_drop": "<=1%"}`` or ``["accuracy_drop<=1%"]``)
    by ``objective`` (``latency``, ``throughput``, ``size``), as ``choose`` does. ``params``
    holds each technique's parameters (``{technique: {...}}``). Progress goes to the
    evaluator's log. The result holds the ranked candidates, ties, Pareto front and
    recommendation, and the skipped, failed, pruned and untried techniques. ``first`` names
    candidates (a recorded choice, chains included) measured before the rest, whatever the time
    budget: a later run must never fail to check a choice because its search ran out of time
    before reaching it.
    """
    from pytest_modelopt.errors import ModeloptError, RequirementMissing, TrainingDataMissing
    from pytest_modelopt.registry import get_technique, list_techniques

    parsed = _budgets(budgets)
    parse_objective(objective)
    if isinstance(max_time, bool) or not max_time > 0:
        raise ValueError(f"max_time must be a number of seconds > 0, got {max_time!r}")
    names = list(techniques) if techniques is not None else list_techniques(exclude=[REFERENCE])
    for name in [*names, *(part for chain in first for part in chain.split("+"))]:
        get_technique(name)  # an unknown name is an error before anything is built
    spec, log = evaluator.spec.name, evaluator.log
    fingerprint = evaluator.hardware.fingerprint
    empty = Choice(spec, fingerprint, parse_objective(objective), parsed, [], None)
    found = SearchResult(choice=empty, records=[], max_time=float(max_time))
    start = time.monotonic()
    queue = []
    for name in sorted(dict.fromkeys(names), key=_priority):
        technique = get_technique(name)
        missing = technique.unmet(evaluator.hardware)
        if missing is not None:
            found.skipped.append((name, missing.reason))
        elif spec_framework(evaluator) not in technique.frameworks:
            found.skipped.append(
                (name, f"applies to {'/'.join(technique.frameworks)} models, not {spec}'s")
            )
        else:
            queue.append(name)
    for name, why in found.skipped:
        log(f"search {spec}: skipping {name}: {why}")

    def measure_one(name: str) -> VariantContract | None:
        try:
            return evaluator.evaluate(name, _params_of(params, name))
        except (RequirementMissing, TrainingDataMissing) as missing:
            # a search tries every technique: one the spec gives no data for does not apply
            reason = str(missing).splitlines()[0]
            found.skipped.append((name, reason))
            log(f"search {spec}: {name} skipped: {reason}")
        except ModeloptError as error:
            found.failed.append((name, str(error).splitlines()[0]))
            log(f"search {spec}: {name} failed: {str(error).splitlines()[0]}")
        return None

    def keep(name: str, contract: VariantContract) -> None:
        record = {"test": f"{spec}::search[{name}]", **contract.to_dict(raw=False)}
        if name in found.results:
            found.records[list(found.results).index(name)] = record
        else:
            found.records.append(record)
        found.results[name] = contract.result

    def measure(batch: list[str], stage: str, timed: bool = True) -> None:
        for index, name in enumerate(batch):
            elapsed = time.monotonic() - start
            if timed and elapsed >= max_time:
                found.untried += batch[index:]
                log(
                    f"search {spec}: time budget spent ({elapsed:.0f} s of {max_time:g} s): "
                    f"not trying {', '.join(batch[index:])}"
                )
                return
            log(
                f"search {spec}: {stage} {index + 1}/{len(batch)}: {name}: building and "
                f"measuring ({elapsed:.0f} s elapsed, {max_time - elapsed:.0f} s left, "
                f"{len(batch) - index - 1} more after it)"
            )
            contract = measure_one(name)
            if contract is not None:
                keep(name, contract)

    if first:
        measure(list(first), "recorded choice", timed=False)
        queue = [name for name in queue if name not in first]
    measure(queue, "candidate")
    if chains and not found.untried:
        batch = [
            name
            for name in _chains(found, parsed, objective, names, found.pruned)
            if name not in first
        ]
        for name, why in found.pruned:
            log(f"search {spec}: not chaining {name}: {why}")
        if batch:
            log(f"search {spec}: {len(batch)} chains to try: {', '.join(batch)}")
        measure(batch, "chain")
    for name in _noisy_contenders(found, parsed, objective):
        _remeasure(name, found, measure_one, keep, parsed, objective, log)
    found.elapsed_s = time.monotonic() - start
    found.hardware = evaluator.hardware
    if found.records:
        found.choice = choose(found.records, parsed, objective, fingerprint=fingerprint)
    log(f"search {spec}: {found.summary()}")
    log(f"search {spec}: {found.choice.verdict()}")
    return found


def _noisy_contenders(found: SearchResult, budgets: list[Budget], objective: str) -> list[str]:
    """Return the candidates tied for best whose objective was too noisy to decide.

    A disturbed measurement decides nothing (ranking rule 4), so it cannot win a tie however
    fast it truly is: left so, the recommendation would depend on which candidate the machine
    happened to disturb (a digits CNN's fastest variant read 10.3x [4.76x, 20.6x], too noisy,
    and lost to a 4.9x that a quiet run then found surely slower).
    """
    if not found.records:
        return []
    choice = choose(found.records, budgets, objective)
    return [
        c.technique
        for c in choice.tied
        if c.technique in found.results and not _trusted(choice.objective_of(c))
    ]


def _remeasure(
    name: str,
    found: SearchResult,
    measure_one: Callable[[str], VariantContract | None],
    keep: Callable[[str, VariantContract], None],
    budgets: list[Budget],
    objective: str,
    log: Callable[[str], None],
) -> None:
    """Measure a noisy contender afresh, up to ``REMEASURES`` times, until its figure can decide.

    Afresh: a new comparison (new workers, new rounds), not more rounds on the disturbed ones.
    Beyond the time budget, as the recorded choice is: bounded by the count, and needed for
    the answer to be right. The last measurement is kept, decided or not, and reported.
    """
    spec, metric = found.choice.spec, parse_objective(objective).metric
    measured = _figure(found, name, budgets, objective)
    for attempt in range(1, REMEASURES + 1):
        log(
            f"search {spec}: {name}: {metric.name} too noisy to decide "
            f"({measured.undecidable or 'its interval is unbounded'}); measuring again afresh "
            f"({attempt} of {REMEASURES})"
        )
        contract = measure_one(name)
        if contract is None:
            return
        keep(name, contract)
        measured = _figure(found, name, budgets, objective)
        if _trusted(measured):
            break
    shown = _show(metric, measured)
    outcome = f"decided: {shown}" if _trusted(measured) else f"still undecided: {shown}"
    found.remeasured.append((name, f"{attempt} more measurement(s), {outcome}"))
    log(f"search {spec}: {name}: {outcome}")


def _figure(found: SearchResult, name: str, budgets: list[Budget], objective: str) -> Measured:
    """Return a measured candidate's figure on the objective, as ``choose`` reads it."""
    choice = choose(found.records, budgets, objective)
    return choice.objective_of(choice.by_label(name))


def spec_framework(evaluator: Evaluator) -> str:
    """Return the kind of the evaluator's model: ``torch``, ``keras`` or ``python``."""
    return str(evaluator.spec.framework)


def _priority(name: str) -> tuple[int, str]:
    return (PRIORITY.index(name) if name in PRIORITY else len(PRIORITY), name)


def _params_of(params: Mapping[str, Mapping[str, Any]] | None, name: str) -> dict[str, Any]:
    """Return a technique's parameters from ``{technique: {...}}``.

    A chain takes its parts' entries.
    """
    if not params:
        return {}
    if "+" in name:
        return {part: dict(params[part]) for part in name.split("+") if part in params}
    return dict(params.get(name, {}))


def _chains(
    found: SearchResult,
    budgets: list[Budget],
    objective: str,
    asked: Sequence[str],
    pruned: list[tuple[str, str]],
) -> list[str]:
    """Return the useful chains, the most promising first.

    A technique that yields a changed fp32 torch module (pruning, low rank, clustering,
    distillation) then one that deploys or quantizes it, both having kept the quality budgets on
    their own; the most promising is the one with the best product of the two parts' objective
    figures.
    """
    choice = choose(found.records, budgets, objective) if found.records else None
    candidates = {c.technique: c for c in choice.candidates} if choice else {}
    firsts: list[str] = []
    seconds: list[str] = []
    for name, result in found.results.items():
        if "+" in name:
            continue
        candidate = candidates.get(name)
        breaks = candidate is not None and candidate.breaks_quality()
        yields_module = (
            result.variant.model is not None
            and result.variant.precision == result.reference.precision
        )
        if breaks and candidate is not None:
            target = f"{name}+..." if yields_module else f"...+{name}"
            pruned.append((target, f"{name} alone: {candidate.why_excluded()}"))
            continue
        (firsts if yields_module else seconds).append(name)
    metric = "size_ratio" if objective == "size" else "speedup"

    def promise(chain: tuple[str, str]) -> float:
        a, b = (found.results[part].metrics.get(metric) for part in chain)
        value = (a.value if a else 1.0) * (b.value if b else 1.0)
        return value if metric == "size_ratio" else -value

    pairs = sorted(((a, b) for a in firsts for b in seconds), key=promise)
    return [f"{a}+{b}" for a, b in pairs if f"{a}+{b}" not in asked]
