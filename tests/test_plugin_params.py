"""Per-test technique parameters: @pytest.mark.modelopt(params={technique: {...}})."""

import json

import pytest

TECHNIQUE = """
from dataclasses import dataclass, field

from pytest_modelopt import register_technique


@dataclass(frozen=True)
class ScaledParams:
    factor: int = field(default=10, metadata={"help": "how much less work the variant does"})


@register_technique("fake_scaled", frameworks=("python",), params=ScaledParams)
def build_scaled(ctx):
    variant = _variant(ctx, ctx.model.work // ctx.params["factor"])
    variant.details["factor"] = ctx.params["factor"]
    return variant
"""


def test_marker_params_reach_the_technique(project: pytest.Pytester) -> None:
    project.makeconftest(project.path.joinpath("conftest.py").read_text() + TECHNIQUE)
    project.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["fake_scaled"], params={"fake_scaled": {"factor": 4}})
        def test_given(modelopt_variant):
            assert modelopt_variant.variant.details["factor"] == 4

        @pytest.mark.modelopt(techniques=["fake_scaled"])
        def test_default(modelopt_variant):
            assert modelopt_variant.variant.details["factor"] == 10
        """
    )
    project.runpytest().assert_outcomes(passed=2)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"fake_scaled": {"size": 4}},
            "fake_scaled takes no parameter 'size'; its parameters: factor",
        ),
        (
            {"fake_scaled": {"factor": "4"}},
            "fake_scaled: parameter 'factor' expects int, got '4' (str)",
        ),
        ({"fake_fast": {"factor": 4}}, "params for fake_fast, which this test does not run"),
        ({"factor": 4}, "params must map technique names to dicts of parameters"),
    ],
)
def test_bad_marker_params_fail_collection_with_the_reason(
    project: pytest.Pytester, params: dict, message: str
) -> None:
    project.makeconftest(project.path.joinpath("conftest.py").read_text() + TECHNIQUE)
    project.makepyfile(
        f"""
        import pytest

        @pytest.mark.modelopt(techniques=["fake_scaled"], params={params!r})
        def test_it(modelopt_variant):
            pass
        """
    )
    result = project.runpytest()
    result.stdout.fnmatch_lines([f"*test_it: {message}*"])
    assert result.ret != 0


def test_marker_max_time_replaces_the_time_cap_for_that_test(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["fake_fast"], max_time=0.7)
        def test_given(modelopt_variant):
            assert modelopt_variant.settings.max_time == 0.7

        @pytest.mark.modelopt(techniques=["fake_fast"])
        def test_default(modelopt_variant):
            assert modelopt_variant.settings.max_time == 0.3
        """
    )
    project.runpytest("--modelopt-max-time=0.3").assert_outcomes(passed=2)


def test_a_bad_max_time_fails_collection_with_the_reason(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["fake_fast"], max_time="long")
        def test_bad(modelopt_variant):
            pass
        """
    )
    result = project.runpytest()
    result.stdout.fnmatch_lines(
        ["*test_bad: max_time must be a number of seconds > 0, got 'long'*"]
    )


# Budgets per technique: @pytest.mark.modelopt(budgets={technique: {metric: budget}}).
BUDGETS_TEST = """
import json

import pytest

@pytest.mark.modelopt(
    techniques=["fake_fast", "fake_slow"],
    budgets={"fake_fast": {"speedup": ">=2"}, "fake_slow": {"speedup": ">=1.5"}},
)
def test_toy(modelopt_variant):
    modelopt_variant.expect(size_ratio="<=1")
"""


def test_marker_budgets_fail_only_their_technique(project: pytest.Pytester) -> None:
    """fake_fast (10x) keeps its 2x budget, fake_slow (0.33x) breaks its 1.5x one: the same
    budget for both, or none, would fail both or neither."""
    project.makepyfile(BUDGETS_TEST)
    # Time and noise allowance enough for a clear verdict on a loaded machine (as the failure
    # table's test in test_plugin.py); no baseline exists in this project.
    result = project.runpytest(
        "-o", "modelopt_max_time=2", "-o", "modelopt_noise=10", "--modelopt-json=run.json"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*toy?fake_slow?: contract broken (speedup)*",
            "*speedup*0.*x*>= 1.5x*FAIL*",
            "*what to do:*",
            "*(budgets from @pytest.mark.modelopt(budgets={'fake_slow': ...}))*",
        ]
    )
    records = {
        r["technique"]: r for r in json.loads((project.path / "run.json").read_text())["results"]
    }
    judged = {
        name: [(c["metric"], c["budget"], c["verdict"]) for c in record["checks"]]
        for name, record in records.items()
    }
    assert judged == {
        "fake_fast": [("size_ratio", "<= 1x", "PASS"), ("speedup", ">= 2x", "PASS")],
        "fake_slow": [("size_ratio", "<= 1x", "PASS"), ("speedup", ">= 1.5x", "FAIL")],
    }
    # With no baseline, the failing row and the passing row say so in the same words.
    assert {r["baseline"]["status"] for r in records.values()} == {"no baseline"}
    result.stdout.fnmatch_lines(
        ["test_toy*fake_fast*PASS*no baseline", "test_toy*fake_slow*FAIL*no baseline"]
    )
    assert "not compared" not in result.stdout.str()


@pytest.mark.parametrize(
    ("budgets", "message"),
    [
        (
            {"fake_same": {"speedup": 2}},
            "budgets for fake_same, which this test does not run (techniques: fake_fast, "
            "fake_slow; a chain is keyed by its full name)",
        ),
        (
            {"fake_fast": {"sped_up": 2}},
            "budgets['fake_fast']: unknown budget metric 'sped_up'; known metrics: speedup, *",
        ),
        (
            {"fake_slow": {"size_ratio": "small"}},
            "budgets['fake_slow']: budget size_ratio='small' is not a number with an optional "
            ">= or <=",
        ),
        ({"speedup": 2}, "budgets must map technique names to dicts of budgets, e.g. *"),
    ],
)
def test_bad_marker_budgets_fail_collection_with_the_reason(
    project: pytest.Pytester, budgets: dict, message: str
) -> None:
    project.makepyfile(
        f"""
        import pytest

        @pytest.mark.modelopt(techniques=["fake_fast", "fake_slow"], budgets={budgets!r})
        def test_it(modelopt_variant):
            pass
        """
    )
    result = project.runpytest()
    pattern = message.replace("[", "?").replace("]", "?")  # fnmatch reads [...] as a class
    result.stdout.fnmatch_lines([f"*test_it: {pattern}*"])
    result.assert_outcomes(errors=1)
    assert "building" not in result.stdout.str()  # refused before anything was measured


def test_a_marker_budget_on_a_metric_the_variant_lacks_names_it(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["fake_fast"], budgets={"fake_fast": {"accuracy": 0.9}})
        def test_toy(modelopt_variant):
            pass
        """
    )
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_toy?fake_fast?: @pytest.mark.modelopt(budgets={'fake_fast': ...}): budget "
            "accuracy needs labelled eval data*"
        ]
    )


def test_the_body_can_budget_per_technique_too(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["fake_fast", "fake_slow"])
        def test_toy(modelopt_variant):
            if modelopt_variant.technique == "fake_fast":
                modelopt_variant.expect(speedup=">=2")
            else:
                modelopt_variant.expect(size_ratio="<=1")
        """
    )
    project.runpytest("-o", "modelopt_noise=10").assert_outcomes(passed=2)
