"""The plugin as a user meets it: options, markers, header, contracts, skips, strict mode."""

import json
import sys

import pytest

from pytest_modelopt.config import OPTIONS


def test_options_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    for option in OPTIONS:
        result.stdout.fnmatch_lines([f"*{option.flag}*"])
        result.stdout.fnmatch_lines([f"*{option.ini}*"])
    result.stdout.fnmatch_lines(["*--modelopt-json*", "*--modelopt-hardware*"])


def test_the_plugin_and_the_engine_share_one_set_of_defaults() -> None:
    """A session with no option set measures as ``MeasureSettings()`` does (issue 15: each
    default written once), and every Settings field that is an option defaults as it does."""
    from dataclasses import fields, replace

    from pytest_modelopt.config import Settings
    from pytest_modelopt.hardware import detect_hardware
    from pytest_modelopt.measure import MeasureSettings

    hardware = detect_hardware()
    measured = Settings().measure_settings(hardware)
    assert measured == replace(MeasureSettings(), threads=measured.threads)
    defaults = {f.name: f.default for f in fields(Settings)}
    for option in OPTIONS:
        assert defaults[option.name] == option.default, option.name


def test_markers_registered_and_clean_under_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt_requires(backend="torch")
        def test_a():
            pass
        """
    )
    result = pytester.runpytest("--strict-markers", "--markers")
    result.stdout.fnmatch_lines(
        ["@pytest.mark.modelopt(techniques*", "@pytest.mark.modelopt_requires(*"]
    )
    pytester.runpytest("--strict-markers").assert_outcomes(passed=1)


def test_the_fingerprint_is_shown_once_a_test_uses_modelopt(
    project: pytest.Pytester, modelopt_hardware
) -> None:
    project.makepyfile(
        test_uses="""
        import pytest

        @pytest.mark.modelopt_requires(backend="torch")
        def test_a():
            pass
        """,
        test_plain="def test_b(): pass",
    )
    result = project.runpytest("test_uses.py")
    result.stdout.fnmatch_lines(["collected 1 item", f"modelopt: {modelopt_hardware.fingerprint}"])
    result = project.runpytest("test_plain.py")
    result.stdout.no_fnmatch_line("modelopt: *")
    # xdist's controller collects nothing: there the line is in the header
    result = project.runpytest("-n", "1", "test_plain.py")
    result.stdout.fnmatch_lines([f"modelopt: {modelopt_hardware.fingerprint}"])


def test_a_run_that_uses_no_modelopt_detects_no_hardware(pytester: pytest.Pytester) -> None:
    """Issue 15: the plugin costs nothing where it is not used (detection caches its answer in
    pytest's cache, so a run that detected would leave it there)."""
    pytester.makepyfile("def test_b(): pass")
    pytester.runpytest().assert_outcomes(passed=1)
    assert not list(pytester.path.glob(".pytest_cache/d/modelopt/cpu-*.json"))
    pytester.makepyfile(
        test_uses="""
        def test_a(modelopt_hardware):
            assert modelopt_hardware.fingerprint
        """
    )
    pytester.runpytest().assert_outcomes(passed=2)
    assert list(pytester.path.glob(".pytest_cache/d/modelopt/cpu-*.json"))


def test_contract_that_holds_passes(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["fake_fast"])
        def test_toy(modelopt_variant):
            checks = modelopt_variant.expect(speedup=">=2", size_ratio="<=1", top1_agreement=1)
            assert [c.verdict.value for c in checks] == ["PASS"] * 3
        """
    )
    result = project.runpytest("-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_toy?fake_fast? PASSED*", "*modelopt results*"])


def test_violated_contract_fails_with_readable_table(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["fake_slow"])
        def test_toy(modelopt_variant):
            modelopt_variant.expect(speedup=">=1.5", size_ratio="<=1")
        """
    )
    # Time and noise allowance enough for a clear verdict on a loaded machine: this test is about
    # the failure table, the noise rule has tests of its own.
    result = project.runpytest("-o", "modelopt_max_time=2", "-o", "modelopt_noise=10")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*toy?fake_slow?: contract broken (speedup)*",
            "*metric*measured*interval*budget*verdict*",
            "*speedup*0.*x*>= 1.5x*FAIL*",
            "*size_ratio*<= 1x*PASS*",
            "*what to do: the measurements decide it, so more timing will not change the verdict*",
        ]
    )


def test_progress_is_reported_live(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["fake_fast"])
        def test_toy(modelopt_variant):
            pass
        """
    )
    result = project.runpytest()
    result.stdout.fnmatch_lines(
        ["modelopt: toy?fake_fast?: building", "modelopt: toy?fake_fast?: timing against eager*"]
    )


PACKAGE_TEST = """
import pytest

@pytest.mark.modelopt(techniques=["fake_fast", "fake_needs_package"])
def test_toy(modelopt_variant):
    modelopt_variant.expect(speedup=">=1")
"""


def test_missing_package_skips_with_reason(project: pytest.Pytester) -> None:
    project.makepyfile(PACKAGE_TEST)
    result = project.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*SKIPPED*fake_needs_package: package no_such_pkg_zz not installed "
            "(pip install no_such_pkg_zz)"
        ]
    )


@pytest.mark.parametrize("how", ["flag", "ini", "env"])
def test_missing_package_fails_under_strict(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    project.makepyfile(PACKAGE_TEST)
    args = []
    if how == "flag":
        args.append("--modelopt-strict")
    elif how == "ini":
        project.makeini(
            "[pytest]\nmodelopt_strict = true\nmodelopt_max_time = 0.3\nmodelopt_warmup = 0.05\n"
        )
    else:
        monkeypatch.setenv("MODELOPT_STRICT", "1")
    result = project.runpytest(*args)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*package no_such_pkg_zz not installed*--modelopt-strict: a missing package is a failure*"]
    )


def test_missing_hardware_skips_even_under_strict(
    project: pytest.Pytester, modelopt_hardware
) -> None:
    if modelopt_hardware.gpus:
        pytest.skip("this machine has an NVIDIA GPU")
    project.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["fake_needs_gpu"])
        def test_toy(modelopt_variant):
            pass

        @pytest.mark.modelopt_requires(gpu=True)
        def test_gpu_only():
            pass

        @pytest.mark.modelopt_requires(isa="sve2|amx_fp8")
        def test_isa():
            pass
        """
    )
    result = project.runpytest("--modelopt-strict", "-rs")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(
        [
            "*fake_needs_gpu: needs an NVIDIA GPU, none found*",
            "*needs an NVIDIA GPU, none found*",
            "*needs the CPU extension sve2 or amx_fp8*",
        ]
    )


def test_requires_missing_package_marker(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt_requires(packages="no_such_pkg_zz")
        def test_a():
            pass
        """
    )
    project.runpytest().assert_outcomes(skipped=1)
    project.runpytest("--modelopt-strict").assert_outcomes(errors=1)


def test_requires_unknown_backend_is_a_usage_error(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt_requires(backend="tensorrtx")
        def test_a():
            pass
        """
    )
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unknown backend 'tensorrtx'; known backends: *openvino*"])


def test_technique_that_changed_nothing_fails(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["fake_noop"])
        def test_toy(modelopt_variant):
            pass
        """
    )
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fake_noop changed nothing in toy: nothing to optimize*"])


def test_variant_that_cannot_run_fails_naming_the_technique(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["fake_crashes"])
        def test_toy(modelopt_variant):
            modelopt_variant.expect(speedup=">=1")
        """
    )
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*fake_crashes built a variant of toy that fails on the example input: "
            "ValueError: shape mismatch in layer 3*"
        ]
    )


def test_unknown_technique_names_the_known_ones(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["fake_fastt"])
        def test_toy(modelopt_variant):
            pass
        """
    )
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*unknown technique 'fake_fastt'; registered techniques: *fake_fast*"]
    )


def test_unknown_marker_keyword_is_named(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["fake_fast"], techniqes=["x"])
        def test_toy(modelopt_variant):
            pass
        """
    )
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*modelopt takes keywords ?'budgets', 'max_time', 'measure', 'params', 'spec', "
            "'techniques'?; got unknown ?'techniqes'?"
        ]
    )


def test_missing_spec_fixture_is_explained(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["eager"])
        def test_toy(modelopt_variant):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*define a fixture named modelopt_spec*"])


def test_bad_option_value_is_a_usage_error(project: pytest.Pytester) -> None:
    result = project.runpytest("--modelopt-max-time=-1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--modelopt-max-time: expected a positive number*"])
    result = project.runpytest("--modelopt-process-pairs=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--modelopt-process-pairs: expected a whole number >= 1*"])


TARGET_WIDTH_TEST = """
def test_width(request):
    from pytest_modelopt.plugin import SESSION_KEY

    settings = request.config.stash[SESSION_KEY].settings
    assert settings.target_width == 0.05
    assert settings.recorded_settings()["target_width"] == 0.05
"""


@pytest.mark.parametrize(
    ("args", "ini", "warning"),
    [
        (["--modelopt-target-width=0.05"], "", None),
        ([], "modelopt_target_width = 0.05", None),
        (
            ["--modelopt-precision=0.05"],
            "",
            "--modelopt-precision is deprecated: use --modelopt-target-width*",
        ),
        (
            [],
            "modelopt_precision = 0.05",
            "modelopt_precision is deprecated: use modelopt_target_width*",
        ),
        (["--modelopt-target-width=0.05"], "modelopt_precision = 0.5", None),
    ],
    ids=["flag", "ini", "old-flag", "old-ini", "new-name-wins"],
)
def test_the_interval_width_option_and_its_old_name(
    pytester: pytest.Pytester, args: list[str], ini: str, warning: str | None
) -> None:
    """``--modelopt-precision`` was renamed ``--modelopt-target-width`` (``precision`` read as
    fp32 beside the variants' precisions): the old flag and ini key still work, with a warning."""
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(TARGET_WIDTH_TEST)
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1)
    if warning:
        result.stdout.fnmatch_lines([f"*PytestDeprecationWarning: {warning}"])
    else:
        result.stdout.no_fnmatch_line("*deprecated*")


def test_process_pairs_reach_the_engine_and_the_record() -> None:
    from pytest_modelopt.config import Settings
    from pytest_modelopt.hardware import detect_hardware

    settings = Settings(process_pairs=3)
    assert settings.measure_settings(detect_hardware()).process_pairs == 3
    assert settings.recorded_settings()["process_pairs"] == 3


def test_results_json(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["fake_fast", "fake_slow"])
        def test_toy(modelopt_variant):
            modelopt_variant.expect(size_ratio="<=1")
        """
    )
    project.runpytest("--modelopt-json=out/results.json").assert_outcomes(passed=2)
    document = json.loads((project.path / "out" / "results.json").read_text())
    assert document["schema"] == 1
    assert document["fingerprint"] == document["hardware"]["fingerprint"]
    by_technique = {r["technique"]: r for r in document["results"]}
    assert set(by_technique) == {"fake_fast", "fake_slow"}
    fast = by_technique["fake_fast"]
    assert fast["test"].endswith("test_toy[fake_fast]")
    assert fast["latency"]["speedup"] > 2
    assert len(fast["latency"]["variant"]["samples_s"]) == fast["latency"]["rounds"]
    assert fast["checks"][0]["verdict"] == "PASS"
    assert by_technique["fake_slow"]["latency"]["speedup"] < 1


def test_results_json_is_read_by_pytest_benchmark_compare(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["fake_fast"])
        def test_toy(modelopt_variant):
            pass
        """
    )
    project.runpytest("--modelopt-json=results.json").assert_outcomes(passed=1)
    document = json.loads((project.path / "results.json").read_text())
    (entry,) = document["benchmarks"]
    assert entry["param"] == "fake_fast"
    assert entry["stats"]["rounds"] == document["results"][0]["latency"]["rounds"]
    assert entry["extra_info"]["speedup"] == document["results"][0]["latency"]["speedup"]
    compared = project.run(sys.executable, "-m", "pytest_benchmark", "compare", "results.json")
    assert compared.ret == 0
    compared.stdout.fnmatch_lines(["*test_toy?fake_fast?*"])


def test_hardware_option_prints_json(pytester: pytest.Pytester, modelopt_hardware) -> None:
    result = pytester.runpytest_subprocess("--modelopt-hardware")
    assert result.ret == 0
    detection = json.loads(result.stdout.str())
    assert detection["fingerprint"] == modelopt_hardware.fingerprint
    assert detection["cpu"]["physical_cores"] >= 1
    assert "torch" in detection["backends"]


def test_machine_override_replaces_fingerprint(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        def test_machine(modelopt_hardware):
            assert modelopt_hardware.fingerprint == "ci-runner-large"
        """
    )
    result = project.runpytest("--modelopt-machine=CI runner (large)")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["modelopt: ci-runner-large"])


def test_plugin_load_imports_no_ml_library(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import sys

        HEAVY = ("torch", "timm", "onnxruntime", "openvino", "tensorflow", "onnx", "numpy")

        def test_light():
            loaded = [name for name in HEAVY if name in sys.modules]
            assert not loaded, loaded
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)


def test_an_inconclusive_contract_says_what_to_do(project: pytest.Pytester) -> None:
    """A budget on the true value (a variant doing the reference's own work, speedup >= 1.0) can
    only be inconclusive: the failure names the interval and the three ways out."""
    project.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["fake_same"])
        def test_toy(modelopt_variant):
            modelopt_variant.expect(speedup=">=1.0")
        """
    )
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*toy[[]fake_same[]]: inconclusive (speedup): the measurements cannot decide*",
            "*speedup*INCONCLUSIVE*",
            "*speedup: inconclusive: the budget lies inside the interval [[]*x, *x[]]",
            "*what to do:",
            "*- speedup: *",
            "*- or report instead of failing: --modelopt-inconclusive=report*",
        ]
    )
    advice = next(line for line in result.outlines if "- speedup: " in line)
    assert ("max_time=" in advice and "--modelopt-max-time" in advice) or (
        "set the budget further from the measured value" in advice
    ), advice
    project.runpytest("--modelopt-inconclusive=report").assert_outcomes(passed=1)
