"""The plugin's markers: their declarations, and what is wrong with a malformed one.

Checked at collection, so that a typo in a marker fails the test before anything is built, with
the test's node id and the keyword at fault.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_modelopt.defaults import SEARCH_MAX_TIME_S
from pytest_modelopt.errors import ParameterError, UnknownTechniqueError
from pytest_modelopt.registry import get_technique

MODELOPT_MARKER_KEYWORDS = frozenset(
    {"techniques", "spec", "params", "budgets", "max_time", "measure"}
)
MODELOPT_BEST_KEYWORDS = frozenset(
    {"budgets", "objective", "techniques", "chains", "max_time", "params", "spec"}
)
MARKERS = (
    "modelopt(techniques, spec='modelopt_spec', params=None, budgets=None, max_time=None, "
    "measure=None): run the test once per listed technique; the modelopt_variant fixture gives "
    "each variant of the ModelSpec returned by the fixture named spec, built with "
    "params[technique] and measured for up to max_time seconds (default: --modelopt-max-time) "
    "by the meter named by measure, wall or instructions (default: --modelopt-measure); after "
    "the test body passes, budgets[technique] (a dict such as {'size_ratio': '<=0.5'}) is "
    "checked as by modelopt_variant.expect(...)",
    "modelopt_best(budgets=None, objective='latency', techniques=None, chains=True, "
    "max_time=600, params=None, spec='modelopt_spec'): the modelopt_best fixture searches the "
    "techniques that apply to the ModelSpec of the fixture named spec on this machine (default: "
    "every registered one) and their chains, for up to max_time seconds, and gives the "
    "SearchResult; the test fails when no candidate meets the budgets (a dict such as "
    "{'accuracy_drop': '<=1%'}), and, against a choice recorded with --modelopt-save-baseline, "
    "when that choice no longer meets them or another technique is now surely better",
    "modelopt_requires(gpu=False, backend=None, isa=None, packages=None): skip unless this "
    "machine has it (a missing package fails under --modelopt-strict)",
    "modelopt_baseline(speedup_tolerance=None, size_tolerance=None, accuracy_tolerance=None, "
    "latency_tolerance=None): this test's regression tolerances against its stored baseline, "
    "replacing the modelopt_*_tolerance ini keys",
)
MARKER_NAMES = tuple(marker.partition("(")[0] for marker in MARKERS)


def uses_modelopt(item: pytest.Item) -> bool:
    """Whether a collected test uses the plugin: one of its markers, or a ``modelopt_`` fixture."""
    if any(item.get_closest_marker(name) for name in MARKER_NAMES):
        return True
    return any(name.startswith("modelopt") for name in getattr(item, "fixturenames", ()))


def marker_techniques(marker: pytest.Mark) -> list[str]:
    """Return the techniques a modelopt marker names (one name may be given as a string)."""
    techniques = marker.kwargs.get("techniques")
    if isinstance(techniques, str):
        return [techniques]
    return list(techniques or [])


def modelopt_marker_problem(marker: pytest.Mark) -> str | None:
    """Say what is wrong with a test's @pytest.mark.modelopt, or return None."""
    unknown = set(marker.kwargs) - MODELOPT_MARKER_KEYWORDS
    if unknown or marker.args:
        return (
            f"@pytest.mark.modelopt takes keywords {sorted(MODELOPT_MARKER_KEYWORDS)}; got "
            f"unknown {sorted(unknown) or list(marker.args)}"
        )
    given = marker.kwargs.get("techniques")
    if given is not None and not isinstance(given, str | list | tuple):
        return f"@pytest.mark.modelopt(techniques={given!r}): give a list of technique names"
    techniques = marker_techniques(marker)
    if not techniques:
        return "@pytest.mark.modelopt needs techniques=[...]"
    for name in techniques:
        try:
            get_technique(name)
        except UnknownTechniqueError as error:
            return str(error)
    return (
        _params_problem(marker.kwargs.get("params"), techniques)
        or _budgets_problem(marker.kwargs.get("budgets"), techniques)
        or _max_time_problem(marker.kwargs.get("max_time"))
        or _measure_problem(marker.kwargs.get("measure"))
    )


def best_marker_problem(marker: pytest.Mark | None, uses_fixture: bool) -> str | None:
    """Say what is wrong with a test's @pytest.mark.modelopt_best, or return None."""
    from pytest_modelopt.errors import BudgetError
    from pytest_modelopt.search import parse_budgets, parse_objective

    if marker is None:
        return (
            "the modelopt_best fixture needs @pytest.mark.modelopt_best(budgets={...}) on the "
            "test, e.g. @pytest.mark.modelopt_best(budgets={'accuracy_drop': '<=1%'})"
        )
    if not uses_fixture:
        return (
            "@pytest.mark.modelopt_best runs its search through the modelopt_best fixture: "
            "add a modelopt_best argument to the test"
        )
    kwargs = marker.kwargs
    unknown = set(kwargs) - MODELOPT_BEST_KEYWORDS
    if unknown or marker.args:
        return (
            f"@pytest.mark.modelopt_best takes keywords {sorted(MODELOPT_BEST_KEYWORDS)}; got "
            f"unknown {sorted(unknown) or list(marker.args)}"
        )
    budgets = kwargs.get("budgets")
    if budgets is not None and not isinstance(budgets, dict | list | tuple | str):
        return (
            f"modelopt_best(budgets={budgets!r}): give a dict such as "
            "{'accuracy_drop': '<=1%', 'size_ratio': '<=0.5'} or a list such as "
            "['accuracy_drop<=1%']"
        )
    objective = kwargs.get("objective", "latency")
    if not isinstance(objective, str):
        return f"modelopt_best(objective={objective!r}): give latency, throughput or size"
    try:
        parse_budgets(budgets)
        parse_objective(objective)
    except BudgetError as error:
        return f"modelopt_best: {error}"
    techniques = kwargs.get("techniques")
    if isinstance(techniques, str):
        techniques = [techniques]
    if techniques is not None:
        if not isinstance(techniques, list | tuple) or not techniques:
            return (
                f"modelopt_best(techniques={kwargs['techniques']!r}): give a list of technique "
                "names, or None (the default) for every registered one"
            )
        for name in techniques:
            try:
                get_technique(name)
            except (UnknownTechniqueError, TypeError) as error:
                return f"modelopt_best: {error}"
    chains = kwargs.get("chains", True)
    if not isinstance(chains, bool):
        return f"modelopt_best(chains={chains!r}): give True or False"
    params = kwargs.get("params")
    if params is not None:
        if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
            return (
                "modelopt_best: params must map technique names to dicts of parameters, e.g. "
                "params={'pruned_structured': {'ratio': 0.5}}"
            )
        for name, values in params.items():
            if techniques is not None and name not in {
                part for chosen in techniques for part in (chosen, *chosen.split("+"))
            }:
                return (
                    f"modelopt_best: params for {name}, which this search does not run "
                    f"(techniques: {', '.join(techniques)})"
                )
            try:
                get_technique(name).resolve_params(values)
            except (ParameterError, UnknownTechniqueError) as error:
                return f"modelopt_best: {error}"
    spec = kwargs.get("spec", "modelopt_spec")
    if not isinstance(spec, str):
        return f"modelopt_best(spec={spec!r}): give the name of a fixture that returns a ModelSpec"
    problem = _max_time_problem(kwargs.get("max_time", SEARCH_MAX_TIME_S))
    return f"modelopt_best: {problem}" if problem else None


def _max_time_problem(max_time: Any) -> str | None:
    if max_time is None:
        return None
    if isinstance(max_time, bool) or not isinstance(max_time, int | float) or max_time <= 0:
        return f"max_time must be a number of seconds > 0, got {max_time!r}"
    return None


def _measure_problem(measure: Any) -> str | None:
    from pytest_modelopt.budget import METERS

    if measure is None or measure in METERS:
        return None
    return f"measure must be one of {', '.join(repr(m) for m in METERS)}, got {measure!r}"


def _params_problem(params: Any, techniques: list[str]) -> str | None:
    """Say what is wrong with a marker's ``params`` for these techniques, or return None."""
    try:
        for name in techniques:
            technique_params(params, name, validate=True)
    except (ParameterError, UnknownTechniqueError) as error:
        return str(error)
    stray = set(params or {}) - {part for name in techniques for part in (name, *name.split("+"))}
    if stray:
        return (
            f"params for {', '.join(sorted(stray))}, which this test does not run "
            f"(techniques: {', '.join(techniques)})"
        )
    return None


def _budgets_problem(budgets: Any, techniques: list[str]) -> str | None:
    """Say what is wrong with a marker's ``budgets`` for these techniques, or return None.

    Each key must be a technique of this test (a chain by its full name), each value a dict of
    readable budgets.
    """
    from pytest_modelopt.budget import Budget
    from pytest_modelopt.errors import BudgetError

    if budgets is None:
        return None
    if not isinstance(budgets, dict) or not all(isinstance(v, dict) for v in budgets.values()):
        return (
            "budgets must map technique names to dicts of budgets, e.g. "
            "budgets={'dynamic_int8': {'size_ratio': '<=0.5'}}; budgets for every technique go "
            "in the test body: modelopt_variant.expect(...)"
        )
    stray = [name for name in budgets if name not in techniques]
    if stray:
        return (
            f"budgets for {', '.join(sorted(map(str, stray)))}, which this test does not run "
            f"(techniques: {', '.join(techniques)}; a chain is keyed by its full name)"
        )
    for technique, entries in budgets.items():
        for metric, value in entries.items():
            try:
                Budget.parse(metric, value)
            except BudgetError as error:
                return f"budgets[{technique!r}]: {error}"
    return None


def technique_params(params: Any, technique: str, *, validate: bool = False) -> dict[str, Any]:
    """Return the marker's parameters for ``technique``.

    ``params[technique]``, or for a chain the entries of its components. With ``validate``, also
    check them against the technique.
    """
    if params is None:
        return {}
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise ParameterError(
            "params must map technique names to dicts of parameters, e.g. "
            "params={'pruned_structured': {'ratio': 0.5}}"
        )
    found = get_technique(technique)
    chosen = (
        {name: params[name] for name in found.components if name in params}
        if found.components
        else params.get(technique, {})
    )
    if validate:
        found.resolve_params(chosen)
    return dict(chosen)
