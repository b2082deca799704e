"""@pytest.mark.modelopt_best and the modelopt_best fixture: the search as a test, its choice
recorded in the baseline and checked by later runs (issue 14). The pytester projects use the
pure-Python fake techniques (tests/fakes.py); the contract rule itself is checked on
hand-written records (tests/searchdata.py), where the figures are chosen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_modelopt.baselines import Tolerances, choice_tolerance, load_baseline_file
from pytest_modelopt.errors import InvalidFileError
from pytest_modelopt.search import SearchResult, check_contract, choose, contract_of
from searchdata import digits_records, record

# As in test_baselines.py: 95% intervals and a noise limit that a loaded 2-core machine meets,
# so that the fakes' speedups (10x, 1x) have bounded intervals in half a second.
BEST_INI = """
[pytest]
modelopt_max_time = 2
modelopt_warmup = 0.05
modelopt_noise = 0.5
modelopt_confidence = 0.95
"""
FAST_AND_SAME = """
import pytest

@pytest.mark.modelopt_best(
    budgets=BUDGETS, techniques=["fake_fast", "fake_same"], chains=False, max_time=60
)
def test_best(modelopt_best):
    assert modelopt_best.recommended is not None
"""
SLOWED = "--modelopt-inject-slowdown=fake_fast=20"  # 10x becomes about 0.5x
BUDGETS = ["accuracy_drop<=1%", "size_ratio<=0.5"]


@pytest.fixture
def best_project(project: pytest.Pytester) -> pytest.Pytester:
    project.makeini(BEST_INI)
    return project


def saved_entry(project: pytest.Pytester) -> dict:
    (path,) = (p for p in (project.path / "baselines").rglob("*.json") if "obtained" not in p.name)
    entries = json.loads(path.read_text())["entries"]
    return entries["test_best.py::test_best"]


def test_marker_searches_records_the_choice_and_fails_when_it_is_beaten(
    best_project: pytest.Pytester,
) -> None:
    project = best_project
    project.makepyfile(
        test_best=FAST_AND_SAME.replace("BUDGETS", '{"top1_agreement": ">=99%"}').replace(
            "is not None", '.technique == "fake_fast"'
        )
    )
    result = project.runpytest("--modelopt-json=first.json")
    result.assert_outcomes(passed=1)
    # progress through the terminal, as other long work
    result.stdout.fnmatch_lines(
        [
            "modelopt: search toy: candidate 1/2: fake_fast: building and measuring (*s elapsed,"
            " *s left, 1 more after it)",
            "search test_best.py::test_best: recommended: fake_fast, speedup *",
            "  search of toy: * 2 measured, *; recorded choice: no baseline",
        ]
    )
    (search,) = json.loads((project.path / "first.json").read_text())["searches"]
    assert search["test"] == "test_best.py::test_best"
    assert search["recommended"] == "fake_fast"
    assert search["baseline"] == {"status": "no baseline"}
    assert sorted(r["technique"] for r in search["records"]) == ["fake_fast", "fake_same"]
    assert search["timed_sections"], "the search must run inside the timing lock"
    assert not (project.path / "baselines").exists(), "a baseline must never appear implicitly"

    result = project.runpytest("--modelopt-save-baseline")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["baseline saved: *test_best-*.json (1 recorded, 1 in all)"])
    entry = saved_entry(project)
    choice = entry["choice"]
    assert entry["technique"] == choice["recommended"] == "fake_fast"
    assert choice["objective"] == "latency"
    assert choice["metric"] == "speedup"
    assert choice["budgets"] == ["top1_agreement >= 99.00%"]
    assert choice["tied"] == ["fake_fast"]
    low, high = choice["interval"]
    assert 2 < low <= choice["value"] <= high
    assert entry["accuracy"] == {"top1_agreement": 1.0}

    result = project.runpytest("--modelopt-json=again.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["  search of toy: *; recorded choice: passed (the recorded choice fake_fast (*"]
    )
    (search,) = json.loads((project.path / "again.json").read_text())["searches"]
    assert search["baseline"]["status"] == "passed"
    assert search["baseline"]["choice"]["status"] == "kept"

    result = project.runpytest(SLOWED, "--modelopt-json=slowed.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "test_best.py::test_best: the recorded choice fake_fast (speedup *x [[]*[]]) is no "
            "longer the best: * and * are now surely faster, beyond the 10% tolerance "
            "(against the baseline for *, recorded *)",
            "rank*variant*speedup [[]interval[]]*",
            "*what to do: if the change is intended *, record the new choice with "
            "--modelopt-save-baseline; if not, fake_fast regressed*",
        ]
    )
    # Both beat it; they rank in the order this run measured (fake_same and eager tie).
    (verdict,) = [
        line for line in result.outlines if line.startswith("test_best.py::test_best: the recorded")
    ]
    assert "eager (reference) (1x [1x, 1x])" in verdict
    assert "fake_same (" in verdict
    (search,) = json.loads((project.path / "slowed.json").read_text())["searches"]
    assert search["baseline"]["status"] == "regressed"
    assert sorted(search["baseline"]["choice"]["beaten_by"]) == ["eager", "fake_same"]
    assert search["recommended"] != "fake_fast"
    assert saved_entry(project)["choice"] == choice, "a failing run must not re-record"
    assert list((project.path / "baselines").rglob("*.obtained.json"))


def test_no_feasible_candidate_and_a_choice_that_breaks_its_budgets(
    best_project: pytest.Pytester,
) -> None:
    project = best_project
    project.makepyfile(test_best=FAST_AND_SAME.replace("BUDGETS", '{"speedup": ">=2"}'))
    # nothing recorded yet: no candidate meets speedup >= 2 once fake_fast is slowed down
    result = project.runpytest(SLOWED)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "test_best.py::test_best: no candidate meets the budgets of @pytest.mark.modelopt_best",
            "toy on *: objective latency: speedup (higher is better); constraints: speedup >= 2x",
            "no candidate of toy meets every constraint (3 measured): see the exclusions",
            "excluded:",
            "  fake_fast: speedup * breaks >= 2x*",
            "what to do: loosen the budgets, *",
        ]
    )
    project.runpytest("--modelopt-save-baseline").assert_outcomes(passed=1)
    assert saved_entry(project)["choice"]["recommended"] == "fake_fast"

    result = project.runpytest(SLOWED)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "test_best.py::test_best: the recorded choice fake_fast no longer meets its budgets: "
            "speedup * breaks >= 2x (against the baseline for *",
            "*what to do: if the change is intended*--modelopt-save-baseline*",
        ]
    )


# Two searches of one model with the same budgets, and a variant test of that model: the
# command must judge each search among its own candidates, as the session did. Merged with the
# other search's or the variant test's records, the first search's answer would be fake_fast.
TWO_SEARCHES = """
import pytest

@pytest.mark.modelopt(techniques=["fake_fast"])
def test_variant(modelopt_variant):
    pass

@pytest.mark.modelopt_best(
    budgets={"top1_agreement": ">=99%"}, techniques=["fake_same", "fake_slow"], chains=False
)
def test_without_fast(modelopt_best):
    pass

@pytest.mark.modelopt_best(
    budgets={"top1_agreement": ">=99%"}, techniques=["fake_fast", "fake_same"], chains=False
)
def test_with_fast(modelopt_best):
    pass
"""


def test_modelopt_best_on_the_session_json_gives_the_session_answer(
    best_project: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_modelopt.cli import main

    project = best_project
    project.makepyfile(test_best=TWO_SEARCHES)
    result = project.runpytest("--modelopt-json=session.json")
    result.assert_outcomes(passed=3)
    printed = {  # the summary's line per search: "search <test>: <verdict>"
        line.split(": ", 1)[0].removeprefix("search "): line.split(": ", 1)[1]
        for line in result.stdout.lines
        if line.startswith("search test_best.py::")
    }
    stored = {
        s["test"]: s for s in json.loads((project.path / "session.json").read_text())["searches"]
    }
    assert (
        set(printed)
        == set(stored)
        == {
            "test_best.py::test_without_fast",
            "test_best.py::test_with_fast",
        }
    )
    assert stored["test_best.py::test_with_fast"]["recommended"] == "fake_fast"
    assert stored["test_best.py::test_without_fast"]["recommended"] != "fake_fast"

    answer = project.path / "answer.json"
    code = main(
        [
            "best",
            str(project.path / "session.json"),
            "--budget",
            "top1_agreement>=99%",
            "--objective",
            "latency",
            "--json",
            str(answer),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    choices = {c["search"]: c for c in json.loads(answer.read_text())}
    assert set(choices) == {None, *stored}  # the variant test's records, and each search
    assert choices[None]["recommended"] == "fake_fast"
    for test, search in stored.items():
        assert choices[test]["recommended"] == search["recommended"], out
        assert choices[test]["tied"] == search["tied"], out
        assert choices[test]["verdict"] == search["verdict"] == printed[test]
        assert choices[test]["note"] is None
    assert "note:" not in out


def test_marker_keywords_are_validated_at_collection(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "import pytest\nfrom pytest_modelopt import ModelSpec\n"
        "@pytest.fixture\ndef modelopt_spec():\n"
        "    return ModelSpec(name='toy', factory=lambda: (lambda x: x), example_input=1.0)\n"
    )
    cases = {
        "unknown_keyword": ("budget={'accuracy_drop': '<=1%'}", "got unknown ['budget']"),
        "bad_metric": ("budgets={'accuracy_dorp': '<=1%'}", "unknown budget metric 'accuracy_dorp"),
        "bad_threshold": ("budgets=['size_ratio<=half']", "'half' is not a number"),
        "bad_budgets_type": ("budgets=0.01", "modelopt_best(budgets=0.01): give a dict"),
        "bad_objective": ("objective='speed'", "unknown objective 'speed': choose latency"),
        "bad_technique": ("techniques=['nope_zz']", "unknown technique 'nope_zz'"),
        "empty_techniques": ("techniques=[]", "give a list of technique names, or None"),
        "bad_chains": ("chains='yes'", "modelopt_best(chains='yes'): give True or False"),
        "bad_max_time": ("max_time=0", "max_time must be a number of seconds > 0, got 0"),
        "stray_params": (
            "techniques=['eager'], params={'dynamic_int8': {}}",
            "params for dynamic_int8, which this search does not run (techniques: eager)",
        ),
        "bad_param": (
            "params={'dynamic_int8': {'bits': 4}}",
            "modelopt_best: dynamic_int8 takes no parameter 'bits'",
        ),
        "positional": ("'accuracy_drop<=1%'", "got unknown ['accuracy_drop<=1%']"),
    }
    files = {
        f"test_{name}": f"import pytest\n@pytest.mark.modelopt_best({keywords})\n"
        f"def test_{name}(modelopt_best):\n    pass\n"
        for name, (keywords, _) in cases.items()
    }
    files["test_fixture_without_marker"] = (
        "def test_fixture_without_marker(modelopt_best):\n    pass\n"
    )
    files["test_marker_without_fixture"] = (
        "import pytest\n@pytest.mark.modelopt_best(budgets={'accuracy_drop': '<=1%'})\n"
        "def test_marker_without_fixture():\n    pass\n"
    )
    pytester.makepyfile(**files)  # a marker's error fails its module's collection: one each
    result = pytester.runpytest("--collect-only", "-q")
    expected = {name: message for name, (_, message) in cases.items()}
    expected["fixture_without_marker"] = (
        "the modelopt_best fixture needs @pytest.mark.modelopt_best(budgets={...}) on the test"
    )
    expected["marker_without_fixture"] = "add a modelopt_best argument to the test"
    result.assert_outcomes(errors=len(expected))
    lines = result.stdout.lines
    for name, message in expected.items():  # plain text: the messages hold brackets
        where = f"test_{name}.py::test_{name}: "
        assert any(line.startswith(where) and message in line for line in lines), (name, lines)


# -- the contract rule, on chosen figures ------------------------------------------------------


def found_of(records: list[dict], budgets: list[str] = BUDGETS, **kwargs) -> SearchResult:
    return SearchResult(choice=choose(records, budgets), records=records, **kwargs)


def recorded(records: list[dict], budgets: list[str] = BUDGETS) -> dict:
    contract = contract_of(found_of(records, budgets))
    assert contract is not None
    return json.loads(json.dumps(contract))  # as it reads back from the baseline file


def test_a_choice_still_tied_for_best_is_kept_even_when_another_is_recommended() -> None:
    stored = recorded(digits_records())
    assert stored["recommended"] == "onnxruntime_static_int8"
    assert stored["tied"] == ["onnxruntime_static_int8", "openvino_int8", "dynamic_int8"]
    # now openvino_int8 is recommended (smaller), onnxruntime_static_int8 still overlaps it
    records = [
        r
        if r["technique"] != "openvino_int8"
        else record("openvino_int8", 4.2, (4.0, 4.4), size_ratio=0.2, accuracy=0.946)
        for r in digits_records()
    ]
    found = found_of(records)
    assert found.recommended is not None
    assert found.recommended.technique == "openvino_int8"
    verdict = check_contract(stored, found, 0.10)
    assert verdict.kept, verdict.message
    assert verdict.message == (
        "the recorded choice onnxruntime_static_int8 (speedup 4x [3.8x, 4.3x]) is still tied for "
        "best with the recommendation openvino_int8"
    )


def test_a_choice_beaten_within_the_tolerance_is_kept_beyond_it_is_not() -> None:
    stored = recorded(digits_records())
    faster = record("openvino_int8", 5.0, (4.7, 5.3), size_ratio=0.27, accuracy=0.946)
    records = [r if r["technique"] != "openvino_int8" else faster for r in digits_records()]
    found = found_of(records)
    # 4.7 is above 4.3, the recorded choice's upper end, but by 9%: within 10%
    kept = check_contract(stored, found, 0.10)
    assert kept.kept
    assert kept.message.endswith(
        "is still within the 10% tolerance of the best (the recommendation is openvino_int8)"
    )
    beaten = check_contract(stored, found, 0.05)
    assert beaten.status == "beaten"
    assert beaten.beaten_by == ["openvino_int8"]
    assert beaten.message == (
        "the recorded choice onnxruntime_static_int8 (speedup 4x [3.8x, 4.3x]) is no longer the "
        "best: openvino_int8 (5x [4.7x, 5.3x]) is now surely faster, beyond the 5% tolerance"
    )


def test_a_measurement_too_noisy_to_judge_never_beats_a_recorded_choice() -> None:
    """Seen in a make suites run beside other jobs: a chain's eager reference was descheduled
    inside its rounds and the chain read 703x [457x, 1085x], flagged too noisy to judge; it must
    not dethrone the recorded choice, nor push the trusted candidates out of the tie."""
    stored = recorded(digits_records())
    wild = record(
        "lowrank+onnxruntime_dynamic_int8",
        703.0,
        (457.0, 1085.0),
        size_ratio=0.22,
        accuracy=0.946,
        noisy="too noisy to judge: IQR/median of the per-round speedups 77% > 25%",
    )
    found = found_of([*digits_records(), wild])
    verdict = check_contract(stored, found, 0.10)
    assert verdict.kept, verdict.message
    assert found.recommended is not None
    assert found.recommended.technique == "onnxruntime_static_int8"
    tied = [c.technique for c in found.choice.ranked if c.tied]
    assert {"onnxruntime_static_int8", "lowrank+onnxruntime_dynamic_int8"} <= set(tied)
    # the same chain measured with a trusted interval does beat it
    trusted = record(
        "lowrank+onnxruntime_dynamic_int8", 703.0, (457.0, 1085.0), size_ratio=0.22, accuracy=0.946
    )
    assert check_contract(stored, found_of([*digits_records(), trusted]), 0.10).status == "beaten"


def test_a_choice_that_breaks_a_budget_or_was_not_measured_or_other_budgets() -> None:
    stored = recorded(digits_records())
    lossy = record("onnxruntime_static_int8", 4.0, (3.8, 4.3), size_ratio=0.26, accuracy=0.92)
    records = [
        r if r["technique"] != "onnxruntime_static_int8" else lossy for r in digits_records()
    ]
    verdict = check_contract(stored, found_of(records), 0.10)
    assert verdict.status == "infeasible"
    assert verdict.message == (
        "the recorded choice onnxruntime_static_int8 no longer meets its budgets: "
        "accuracy_drop 3.00% breaks <= 1.00%"
    )
    without = [r for r in digits_records() if r["technique"] != "onnxruntime_static_int8"]
    found = found_of(without, failed=[("onnxruntime_static_int8", "BuildError: boom")])
    verdict = check_contract(stored, found, 0.10)
    assert verdict.status == "unmeasured"
    assert verdict.message.endswith("was not measured by this search: BuildError: boom")
    verdict = check_contract(stored, found_of(digits_records(), ["accuracy_drop<=2%"]), 0.10)
    assert verdict.status == "other budgets"
    assert "now asks for objective latency under accuracy_drop <= 2.00%" in verdict.message


def test_the_acceptance_rule_nothing_feasible_is_surely_faster_than_the_recommendation() -> None:
    choice = choose(digits_records(), BUDGETS)
    assert choice.recommended is not None
    assert choice.surely_better_than(choice.recommended) == []
    slower = choice.by_label("static_int8")  # [2.9, 3.1] against openvino_int8's [3.9, 4.4]
    assert [c.label for c in choice.surely_better_than(slower)] == [
        "onnxruntime_static_int8",
        "openvino_int8",
    ]


def test_choice_tolerance_follows_the_objective() -> None:
    tolerances = Tolerances(speedup=0.1, size=0.01, accuracy=0.005, instructions=0.02)
    assert choice_tolerance("speedup", tolerances) == (0.1, False)
    assert choice_tolerance("throughput", tolerances) == (0.1, False)
    assert choice_tolerance("size_bytes", tolerances) == (0.01, False)
    assert choice_tolerance("instructions_ratio", tolerances) == (0.02, False)
    assert choice_tolerance("accuracy", tolerances) == (0.005, True)


def test_old_entries_load_and_a_broken_choice_is_named(tmp_path: Path) -> None:
    from pytest_modelopt.baselines import baseline_filename

    entry = {
        "spec": "toy",
        "technique": "fake_fast",
        "recorded": "2026-12-01T10:00:00+00:00",
        "size_bytes": 10,
        "reference_bytes": 48,
        "accuracy": {},
        "settings": {},
        "environment": {},
    }
    document = {
        "schema": 1,
        "fingerprint": "box",
        "module": "test_best.py",
        "hardware": {"fingerprint": "box", "detected_fingerprint": "box", "cpu": {}},
        "entries": {"test_best.py::test_old": entry},
    }
    path = tmp_path / baseline_filename("test_best.py")
    path.write_text(json.dumps(document))
    assert load_baseline_file(path, "box")["entries"]["test_best.py::test_old"] == entry
    choice = recorded(digits_records())
    document["entries"]["test_best.py::test_best"] = {**entry, "choice": choice}
    path.write_text(json.dumps(document))
    load_baseline_file(path, "box")
    choice["tied"] = "onnxruntime_static_int8"
    path.write_text(json.dumps(document))
    with pytest.raises(InvalidFileError, match=r"test_best\.py::test_best'\]\.choice\.tied: "):
        load_baseline_file(path, "box")
