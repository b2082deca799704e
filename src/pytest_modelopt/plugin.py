"""The pytest plugin: options, markers, fixtures, header and hooks. Imports no ML library.

pytest loads this module in every run of a repository that has the package installed, so
everything heavy (torch, timm, numpy, the runtimes) is imported inside the fixtures that need it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from pytest_modelopt.config import Settings, add_options
from pytest_modelopt.contracts import baseline_problem, budgets_problem, search_problem
from pytest_modelopt.defaults import SEARCH_MAX_TIME_S
from pytest_modelopt.errors import (
    ModeloptError,
    PackageMissing,
    RequirementMissing,
    SpecError,
)
from pytest_modelopt.markers import (
    MARKERS,
    best_marker_problem,
    marker_techniques,
    modelopt_marker_problem,
    technique_params,
    uses_modelopt,
)
from pytest_modelopt.readable import pop_frame_policy, push_frame_policy
from pytest_modelopt.registry import Requirements, list_techniques, register_technique
from pytest_modelopt.session import ModeloptSession

if TYPE_CHECKING:
    from pytest_modelopt.baselines import Tolerances
    from pytest_modelopt.hardware import Hardware
    from pytest_modelopt.search import SearchResult
    from pytest_modelopt.spec import ModelSpec
    from pytest_modelopt.variant_contract import VariantContract

SESSION_KEY = pytest.StashKey[ModeloptSession]()
RESULT_KEY = pytest.StashKey["VariantContract"]()
TOLERANCES_KEY = pytest.StashKey["Tolerances"]()
BUDGETS_KEY = pytest.StashKey[tuple[str, dict[str, Any]]]()  # technique, its marker budgets
SEARCH_KEY = pytest.StashKey["SearchResult"]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """Declare the hooks projects and plugins implement (``hookspecs.py``)."""
    from pytest_modelopt import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the ``--modelopt-*`` options and their ini keys."""
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    """Declare the markers, read the settings, and register the session's plugins."""
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    push_frame_policy(show=config.get_verbosity() >= 2)  # -vv: the plugin's frames too
    session = ModeloptSession(config, Settings.from_pytest_config(config))
    config.stash[SESSION_KEY] = session
    config.pluginmanager.register(session, "modelopt-session")
    config.pluginmanager.register(session.scope, "modelopt-scope")
    add_techniques = config.hook.pytest_modelopt_add_techniques
    if add_techniques.get_hookimpls():
        list_techniques()  # the built-ins first: a technique added here may replace one
        add_techniques(register=register_technique)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Restore the enclosing session's traceback policy."""
    pop_frame_policy()


def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """Print this machine's hardware detection as JSON and exit, with --modelopt-hardware."""
    if not config.getoption("--modelopt-hardware"):
        return None
    from pytest_modelopt.backends import backend_devices
    from pytest_modelopt.session.context import session_hardware

    detection = session_hardware(config, Settings.from_pytest_config(config)).to_dict()
    detection["backends"] = backend_devices()
    print(json.dumps(detection, indent=2, sort_keys=True))
    return 0


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    """Name the machine's fingerprint once collection shows a test that uses modelopt.

    A run that uses none never detects the hardware.
    """
    return [_machine_line(config)] if any(map(uses_modelopt, items)) else []


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Name the machine in the header under xdist, whose controller collects nothing."""
    distributed = getattr(config.option, "dist", "no") != "no"
    return [_machine_line(config)] if distributed else []


def _machine_line(config: pytest.Config) -> str:
    """Return the fingerprint line, with strict mode and the meter if set."""
    session = config.stash[SESSION_KEY]
    strict = ", strict" if session.settings.strict else ""
    meter = ", instructions counted under valgrind" if session.settings.measure != "wall" else ""
    return f"modelopt: {session.hardware.fingerprint}{strict}{meter}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``modelopt_technique`` by the modelopt marker's techniques.

    A malformed modelopt or modelopt_best marker fails the test at collection, with what is
    wrong.
    """
    best = metafunc.definition.get_closest_marker("modelopt_best")
    if best is not None or "modelopt_best" in metafunc.fixturenames:
        problem = best_marker_problem(best, "modelopt_best" in metafunc.fixturenames)
        if problem:
            pytest.fail(f"{metafunc.definition.nodeid}: {problem}", pytrace=False)
    if "modelopt_technique" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("modelopt")
    if marker is None:
        return  # the modelopt_technique fixture explains what is missing
    problem = modelopt_marker_problem(marker)
    if problem:
        pytest.fail(f"{metafunc.definition.nodeid}: {problem}", pytrace=False)
    techniques = marker_techniques(marker)
    metafunc.parametrize("modelopt_technique", techniques, ids=techniques)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Resolve a measuring test's tolerances, and skip a test whose requirements are unmet.

    The requirements are those of its modelopt_requires markers; a missing package fails the
    test instead in strict mode.
    """
    session = item.config.stash[SESSION_KEY]
    fixtures = getattr(item, "fixturenames", ())
    if "modelopt_variant" in fixtures or "modelopt_best" in fixtures:
        item.stash[TOLERANCES_KEY] = _tolerances(item, session)
    markers = list(item.iter_markers("modelopt_requires"))
    if not markers:
        return
    for marker in markers:
        try:
            requirements = Requirements.from_marker(**marker.kwargs)
        except (TypeError, ValueError) as error:
            pytest.fail(f"{item.nodeid}: modelopt_requires: {error}", pytrace=False)
        try:
            requirements.check(session.hardware)
        except RequirementMissing as missing:
            _skip_or_fail(session, missing)


def _tolerances(item: pytest.Item, session: ModeloptSession) -> Tolerances:
    """Return the ini tolerances, with the closest modelopt_baseline marker's keywords applied."""
    tolerances = session.settings.tolerances()
    marker = item.get_closest_marker("modelopt_baseline")
    if marker is None:
        return tolerances
    if marker.args:
        pytest.fail(
            f"{item.nodeid}: @pytest.mark.modelopt_baseline takes keywords only, got "
            f"{list(marker.args)}",
            pytrace=False,
        )
    try:
        return tolerances.override(item.nodeid, **marker.kwargs)
    except ValueError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Judge a test's variant after its body passes; judge a search before the body runs.

    After a test body passes, the marker's budgets are judged and its variant is compared with
    the stored baseline: a regression fails this test, with the table of what moved. A search
    (modelopt_best) is judged before the body runs, so that the body may rely on its
    recommendation.
    """
    baselines = item.config.stash[SESSION_KEY].baselines
    found = item.stash.get(SEARCH_KEY, None)
    if found is not None:
        _fail_on(search_problem(item.nodeid, found, baselines, item.stash[TOLERANCES_KEY]))
    outcome = yield
    result = item.stash.get(RESULT_KEY, None)
    if result is not None:
        technique, budgets = item.stash.get(BUDGETS_KEY, ("", {}))
        _fail_on(budgets_problem(item.nodeid, technique, budgets, result))
        _fail_on(baseline_problem(item.nodeid, result, baselines, item.stash[TOLERANCES_KEY]))
    return outcome


def _fail_on(problem: str | None) -> None:
    if problem:
        pytest.fail(problem, pytrace=False)


def _spec_class() -> type:
    from pytest_modelopt.spec import ModelSpec

    return ModelSpec


def _skip_or_fail(session: ModeloptSession, missing: RequirementMissing) -> NoReturn:
    """Missing hardware skips; a missing package skips, or fails under strict mode."""
    if isinstance(missing, PackageMissing) and session.settings.strict:
        pytest.fail(
            f"{missing.reason} [--modelopt-strict: a missing package is a failure, not a skip]",
            pytrace=False,
        )
    pytest.skip(missing.reason)


@pytest.fixture(scope="session")
def modelopt_hardware(request: pytest.FixtureRequest) -> Hardware:
    """Return this machine's detected hardware, with its fingerprint."""
    return request.config.stash[SESSION_KEY].hardware


@pytest.fixture(scope="session")
def modelopt_settings(request: pytest.FixtureRequest) -> Settings:
    """Return the session's modelopt settings (options and ini keys, read once)."""
    return request.config.stash[SESSION_KEY].settings


@pytest.fixture
def modelopt_spec() -> ModelSpec:
    """Override this fixture to say which model a contract is about."""
    raise SpecError(
        "define a fixture named modelopt_spec (in the test module or a conftest.py) that returns "
        "a pytest_modelopt.ModelSpec, e.g. ModelSpec.from_timm('resnet18')"
    )


@pytest.fixture
def modelopt_technique() -> str:
    """Return the technique under test; parametrized by @pytest.mark.modelopt(techniques=[...])."""
    pytest.fail(
        "modelopt_variant needs @pytest.mark.modelopt(techniques=[...]) on the test",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def _modelopt_workdir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tmp_path_factory.mktemp("modelopt")


@pytest.fixture
def modelopt_best(request: pytest.FixtureRequest, _modelopt_workdir: Any) -> Iterator[SearchResult]:
    """Yield the search of the test's @pytest.mark.modelopt_best marker.

    The marker takes ``budgets``, ``objective``, ``techniques``, ``chains`` and ``max_time``.
    Every technique that applies to the spec on this machine and the useful chains, measured
    inside the machine-wide timing lock (progress in the terminal) and ranked under the budgets.
    The ``SearchResult`` has ``recommended``, ``choice`` (ties, Pareto front) and ``table()``.
    Before the test body runs, the test fails when no candidate meets the budgets, or when the
    choice recorded in the baseline (--modelopt-save-baseline) no longer meets them or is now
    surely beaten.
    """
    marker = request.node.get_closest_marker("modelopt_best")
    if marker is None:  # collection said so already; a fixture requested dynamically gets here
        pytest.fail(
            "the modelopt_best fixture needs @pytest.mark.modelopt_best(budgets={...})",
            pytrace=False,
        )
    kwargs = marker.kwargs
    spec_fixture = kwargs.get("spec", "modelopt_spec")
    spec: ModelSpec = request.getfixturevalue(spec_fixture)
    if not isinstance(spec, _spec_class()):
        raise SpecError(f"fixture {spec_fixture!r} returned {type(spec).__name__}, not a ModelSpec")
    session = request.config.stash[SESSION_KEY]
    nodeid = request.node.nodeid
    techniques = kwargs.get("techniques")
    problem = None
    try:
        session.baselines.check_baseline_file(nodeid)
        stored = None if session.settings.save_baseline else session.baselines.store.entry(nodeid)
        recorded = (stored or {}).get("choice", {}).get("recommended")
        found = session.scheduler.search(
            nodeid,
            spec,
            _modelopt_workdir / spec.name,
            kwargs.get("budgets"),
            techniques=[techniques] if isinstance(techniques, str) else techniques,
            chains=kwargs.get("chains", True),
            objective=kwargs.get("objective", "latency"),
            max_time=kwargs.get("max_time", SEARCH_MAX_TIME_S),
            params=kwargs.get("params"),
            first=[recorded] if recorded else (),  # checked whatever the time budget
        )
    except ModeloptError as error:
        problem = str(error)
    if problem is not None:  # failed outside the except block: no chained traceback
        pytest.fail(problem, pytrace=False)
    request.node.stash[SEARCH_KEY] = found
    yield found
    session.record_search(nodeid, found)


@pytest.fixture
def modelopt_variant(
    request: pytest.FixtureRequest, modelopt_technique: str, _modelopt_workdir: Any
) -> Iterator[VariantContract]:
    """Yield the variant built by this test's technique, measured against the fp32 reference.

    The model comes from the fixture named by the marker's ``spec`` keyword (default
    ``modelopt_spec``). Call ``.expect(speedup=">=1.2", size_ratio="<=0.5", ...)`` on it to check
    a contract.
    """
    marker = request.node.get_closest_marker("modelopt")
    spec_fixture = marker.kwargs.get("spec", "modelopt_spec") if marker else "modelopt_spec"
    spec: ModelSpec = request.getfixturevalue(spec_fixture)
    if not isinstance(spec, _spec_class()):
        raise SpecError(f"fixture {spec_fixture!r} returned {type(spec).__name__}, not a ModelSpec")
    session = request.config.stash[SESSION_KEY]
    nodeid = request.node.nodeid
    meter = (marker.kwargs.get("measure") if marker else None) or session.settings.measure
    problem = None
    try:
        session.baselines.check_baseline_file(nodeid, meter)
        params = technique_params(
            marker.kwargs.get("params") if marker else None, modelopt_technique
        )
        result = session.scheduler.evaluate(
            nodeid,
            spec,
            modelopt_technique,
            _modelopt_workdir / spec.name,
            params,
            max_time=marker.kwargs.get("max_time") if marker else None,
            meter=meter,
        )
    except RequirementMissing as missing:
        _skip_or_fail(session, missing)
    except ModeloptError as error:
        problem = str(error)
    if problem is not None:  # failed outside the except block: no chained traceback
        pytest.fail(problem, pytrace=False)
    request.node.stash[RESULT_KEY] = result
    budgets = (marker.kwargs.get("budgets") if marker else None) or {}
    request.node.stash[BUDGETS_KEY] = (
        modelopt_technique,
        dict(budgets.get(modelopt_technique, {})),
    )
    yield result
    session.record(nodeid, result)
