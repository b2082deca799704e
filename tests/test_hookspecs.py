"""The hooks projects and plugins implement: the machine's name, and techniques of their own."""

import json

import pytest

from fakes import CONFTEST

FAST = """
import pytest


@pytest.mark.modelopt(techniques=["fake_fast"])
def test_toy(modelopt_variant):
    modelopt_variant.expect(speedup=">=2")
"""

POOL = """
def pytest_modelopt_fingerprint(hardware):
    assert hardware.fingerprint  # the detected one, to keep or to refine
    return "CI Pool A"
"""


def test_the_fingerprint_hook_names_the_machine_whose_baselines_are_used(
    project: pytest.Pytester,
) -> None:
    project.makeconftest(CONFTEST + POOL)
    project.makepyfile(FAST)
    result = project.runpytest("--modelopt-save-baseline")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["modelopt: ci-pool-a*"])
    assert [p.name for p in (project.path / "baselines").iterdir()] == ["ci-pool-a"]
    shown = project.runpytest_subprocess("--modelopt-hardware")
    assert json.loads(shown.stdout.str())["fingerprint"] == "ci-pool-a"


def test_the_machine_option_overrides_the_fingerprint_hook(project: pytest.Pytester) -> None:
    project.makeconftest(CONFTEST + POOL)
    project.makepyfile(FAST)
    result = project.runpytest("--modelopt-machine=box-b", "--modelopt-save-baseline")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["modelopt: box-b*"])
    assert [p.name for p in (project.path / "baselines").iterdir()] == ["box-b"]


def test_a_fingerprint_hook_that_returns_no_name_is_a_usage_error(
    project: pytest.Pytester,
) -> None:
    project.makeconftest(CONFTEST + "\ndef pytest_modelopt_fingerprint(hardware):\n    return 42\n")
    project.makepyfile(FAST)
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pytest_modelopt_fingerprint (*conftest*) returned 42*"])


ADDED = """
def pytest_modelopt_add_techniques(register):
    @register("hooked_fast", frameworks=("python",), description="a technique from a hook")
    def build(ctx):
        return _variant(ctx, ctx.model.work // 10)
"""


def test_techniques_added_by_the_hook_run_like_built_in_ones(project: pytest.Pytester) -> None:
    project.makeconftest(CONFTEST + ADDED)
    project.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["hooked_fast"])
        def test_toy(modelopt_variant):
            assert modelopt_variant.variant.technique == "hooked_fast"
            modelopt_variant.expect(speedup=">=2")
        """
    )
    project.runpytest().assert_outcomes(passed=1)
    listed = project.runpytest("--collect-only", "-q")
    listed.stdout.fnmatch_lines(["*test_toy?hooked_fast?*"])
