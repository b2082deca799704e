"""Per-test technique parameters: @pytest.mark.modelopt(params={technique: {...}})."""

import pytest

TECHNIQUE = """
from pytest_modelopt import register_technique


@register_technique("fake_scaled", frameworks=("python",), defaults={"factor": 10})
def build_scaled(ctx):
    variant = _variant(ctx, "fake_scaled", ctx.model.work // ctx.params["factor"])
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
            assert modelopt_variant.settings.max_time_s == 0.7

        @pytest.mark.modelopt(techniques=["fake_fast"])
        def test_default(modelopt_variant):
            assert modelopt_variant.settings.max_time_s == 0.3
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
