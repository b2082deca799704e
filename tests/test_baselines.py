"""Baselines per fingerprint: save, compare, regressions that fail the test that regressed,
broken files that are errors, unused entries, another fingerprint's baselines, xdist."""

import itertools
import json
import multiprocessing
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from pytest_modelopt.baselines import (
    BaselineEntry,
    BaselineStore,
    Tolerances,
    baseline_filename,
    compare,
    format_baseline_checks,
    load_baseline_file,
)
from pytest_modelopt.budget import Verdict
from pytest_modelopt.errors import InvalidFileError
from pytest_modelopt.hardware import CPU, Hardware

# The fake techniques time in 0.3 s; on a loaded 2-core machine their speedup moves by tens of
# percent between runs, so these projects gate with a 50% tolerance and an injected slowdown of
# 4x (speedup 10x -> 2.5x): what is tested is the plumbing, not the engine's resolution. A FAIL
# needs the whole interval below the limit; on a loaded machine 0.3 s may give only 20 rounds,
# whose 99.9% interval reaches up to the second-largest ratio, so these projects use 95%
# intervals and the runs that must fail time for 1 s.
BASELINE_INI = """
[pytest]
modelopt_max_time = 0.3
modelopt_warmup = 0.05
modelopt_noise = 5
modelopt_confidence = 0.95
modelopt_speedup_tolerance = 0.5
"""
FAST_TEST = """
import pytest

@pytest.mark.modelopt(techniques=["fake_fast"])
def test_toy(modelopt_variant):
    modelopt_variant.expect(size_ratio="<=1")
"""
LONGER = ("-o", "modelopt_max_time=1")
TWO_TECHNIQUES = FAST_TEST.replace('["fake_fast"]', '["fake_fast", "eager"]')


@pytest.fixture
def baseline_project(project: pytest.Pytester) -> pytest.Pytester:
    project.makeini(BASELINE_INI)
    return project


def baseline_files(project: pytest.Pytester) -> list[Path]:
    return sorted(
        p for p in (project.path / "baselines").rglob("*.json") if "obtained" not in p.name
    )


def test_readme_walkthrough(baseline_project: pytest.Pytester) -> None:
    """README: save a baseline, change nothing and compare, slow a variant down, break the file."""
    project = baseline_project
    project.makepyfile(test_toy=FAST_TEST)

    result = project.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["no baseline for * in *baselines: contracts were checked*"])
    assert not (project.path / "baselines").exists(), "a baseline must never appear implicitly"

    result = project.runpytest("--modelopt-save-baseline")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["baseline saved: *test_toy-*.json (1 recorded, 1 in all)"])
    (saved,) = baseline_files(project)
    document = json.loads(saved.read_text())
    assert saved.read_text() == json.dumps(document, indent=2, sort_keys=True) + "\n"
    entry = document["entries"]["test_toy.py::test_toy[fake_fast]"]
    assert document["schema"] == 1
    assert entry["speedup"]["n"] > 0
    assert len(entry["speedup"]["interval"]) == 2
    assert "python" in entry["environment"]
    assert entry["settings"]["max_time"] == 0.3

    result = project.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["compared with the baseline for *: 1 passed"])

    result = project.runpytest("--modelopt-inject-slowdown=fake_fast=3", *LONGER)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*toy?fake_fast?: regression against the baseline for * (speedup)*",
            "*metric*baseline*measured*limit*verdict*",
            # The baseline's interval may be unbounded ("[-inf, inf]": 0.3 s on a busy machine
            # gives too few rounds); a regression needs a bounded measured one.
            "*speedup*x [[]*[]]*x [[]*x, *x[]]*>= *x*FAIL*",
            "*size_bytes*PASS*",
            "*what to do: if the change is intended, record the new figures with*",
            "FAILED test_toy.py::test_toy?fake_fast? - Failed: toy?fake_fast?: regression*",
        ]
    )
    obtained = saved.with_name(saved.name.replace(".json", ".obtained.json"))
    regressed = json.loads(obtained.read_text())["entries"]["test_toy.py::test_toy[fake_fast]"]
    assert regressed["speedup"]["value"] < entry["speedup"]["value"] / 2
    assert saved.read_text() == json.dumps(document, indent=2, sort_keys=True) + "\n"

    saved.write_text(saved.read_text().replace('"speedup": {', '"speedup": "fast", "x": {', 1))
    broken = saved.read_text()
    for args in ([], ["--modelopt-save-baseline"]):
        result = project.runpytest(*args)
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(
            [f"*baseline {saved}: entries*fake_fast*speedup: expected an object, got str*"]
        )
        assert saved.read_text() == broken, "an invalid baseline must never be overwritten"


def test_save_updates_measured_entries_and_keeps_others(baseline_project: pytest.Pytester) -> None:
    project = baseline_project
    project.makepyfile(test_toy=TWO_TECHNIQUES)
    project.runpytest("--modelopt-save-baseline").assert_outcomes(passed=2)
    (path,) = baseline_files(project)
    before = json.loads(path.read_text())["entries"]
    project.runpytest("--modelopt-save-baseline", "-k", "fake_fast").assert_outcomes(passed=1)
    after = json.loads(path.read_text())["entries"]
    assert set(after) == set(before)
    eager = "test_toy.py::test_toy[eager]"
    assert after[eager] == before[eager]
    fast = "test_toy.py::test_toy[fake_fast]"
    assert after[fast]["speedup"] != before[fast]["speedup"]


def test_unused_entries_reported_and_pruned_only_on_a_full_run(
    baseline_project: pytest.Pytester,
) -> None:
    project = baseline_project
    project.makepyfile(test_toy=TWO_TECHNIQUES, test_gone=FAST_TEST)
    project.runpytest("--modelopt-save-baseline").assert_outcomes(passed=3)
    assert len(baseline_files(project)) == 2
    (project.path / "test_gone.py").unlink()
    project.makepyfile(test_toy=FAST_TEST)

    result = project.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "unused baselines for *: 2 entries of tests that were not collected "
            "(test_gone.py::test_toy?fake_fast?, test_toy.py::test_toy?eager?; files with none "
            "left: test_gone-*.json); delete them with --modelopt-prune-baselines on a full run"
        ]
    )
    assert len(baseline_files(project)) == 2

    result = project.runpytest("--modelopt-prune-baselines", "-k", "fake")
    result.stdout.fnmatch_lines(
        ["ERROR: --modelopt-prune-baselines refused: not a full run (-k fake): nothing was deleted"]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert len(baseline_files(project)) == 2

    result = project.runpytest("--modelopt-prune-baselines")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["pruned 2 unused baseline entries*files deleted: *test_gone-*"])
    (kept,) = baseline_files(project)
    assert list(json.loads(kept.read_text())["entries"]) == ["test_toy.py::test_toy[fake_fast]"]


def test_baseline_of_another_fingerprint_is_never_compared(
    baseline_project: pytest.Pytester,
) -> None:
    project = baseline_project
    project.makepyfile(test_toy=FAST_TEST)
    project.runpytest("--modelopt-save-baseline", "--modelopt-machine=box-a").assert_outcomes(
        passed=1
    )
    result = project.runpytest("--modelopt-machine=box-b", "--modelopt-inject-slowdown=fake_fast=3")
    result.assert_outcomes(passed=1)  # 4x slower, but box-a's baseline is not box-b's
    result.stdout.fnmatch_lines(
        [
            "no baseline for box-b in *",
            "baselines of another fingerprint, never compared here: box-a (differs: "
            "fingerprint: box-a (baseline) != box-b (this run); "
            "machine: box-a (baseline) != box-b (this run))",
        ]
    )


def test_file_moved_to_another_fingerprint_is_an_error(baseline_project: pytest.Pytester) -> None:
    project = baseline_project
    project.makepyfile(test_toy=FAST_TEST)
    project.runpytest("--modelopt-save-baseline", "--modelopt-machine=box-a").assert_outcomes(
        passed=1
    )
    (path,) = baseline_files(project)
    moved = project.path / "baselines" / "box-b" / path.name
    moved.parent.mkdir()
    path.rename(moved)
    result = project.runpytest("--modelopt-machine=box-b")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*recorded on fingerprint 'box-a' but stored under 'box-b' (moved by hand?)*"]
    )


def test_marker_tolerance_overrides_ini_and_is_validated(
    baseline_project: pytest.Pytester,
) -> None:
    project = baseline_project
    project.makepyfile(test_toy=FAST_TEST)
    project.runpytest("--modelopt-save-baseline").assert_outcomes(passed=1)
    project.makepyfile(
        test_toy=FAST_TEST.replace(
            "def test_toy", "@pytest.mark.modelopt_baseline(speedup_tolerance=0.9)\ndef test_toy"
        )
    )
    project.runpytest("--modelopt-inject-slowdown=fake_fast=3").assert_outcomes(passed=1)

    project.makepyfile(
        test_toy=FAST_TEST.replace(
            "def test_toy", "@pytest.mark.modelopt_baseline(speed_tolerance=0.1)\ndef test_toy"
        )
    )
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*@pytest.mark.modelopt_baseline takes speedup_tolerance, *; got unknown speed_tolerance"]
    )
    project.makepyfile(
        test_toy=FAST_TEST.replace(
            "def test_toy", "@pytest.mark.modelopt_baseline(size_tolerance='1%')\ndef test_toy"
        )
    )
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*modelopt_baseline(size_tolerance='1%'): give a number >= 0*"])


def test_bad_slowdown_option_is_a_usage_error(project: pytest.Pytester) -> None:
    project.makepyfile(test_toy=FAST_TEST)
    result = project.runpytest("--modelopt-inject-slowdown=fake_fast")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*expected technique=fraction (for example fake_fast=0.3)*"])


XDIST_TEST = """
import pytest

@pytest.mark.modelopt(techniques=["fake_fast", "eager"])
def test_toy(modelopt_variant):
    modelopt_variant.expect(size_ratio="<=1")
"""


def test_xdist_loses_no_result_and_never_overlaps_timing(
    baseline_project: pytest.Pytester,
) -> None:
    pytest.importorskip("xdist")
    project = baseline_project
    project.makepyfile(test_a=XDIST_TEST, test_b=XDIST_TEST, test_c=XDIST_TEST)
    result = project.runpytest("-n", "2", "--modelopt-save-baseline", "--modelopt-json=r.json")
    result.assert_outcomes(passed=6)
    document = json.loads((project.path / "r.json").read_text())
    tests = sorted(record["test"] for record in document["results"])
    assert tests == sorted(
        f"test_{m}.py::test_toy[{t}]" for m in "abc" for t in ("fake_fast", "eager")
    )
    assert {record["worker"] for record in document["results"]} == {"gw0", "gw1"}
    sections = sorted(s for record in document["results"] for s in record["timed_sections"])
    assert len(sections) >= 6
    for (_, end), (start, _) in itertools.pairwise(sections):
        assert start >= end, f"timed sections overlap: {sections}"
    files = baseline_files(project)
    assert len(files) == 3
    for path in files:
        assert len(json.loads(path.read_text())["entries"]) == 2
    # Compared on the workers (a wide tolerance: two workers and their neighbours load 2 cores).
    result = project.runpytest("-n", "2", "-o", "modelopt_speedup_tolerance=0.9")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["compared with the baseline for *: 6 passed"])


# -- the rules, without pytest runs -----------------------------------------------------------


def entry(speedup=(10.0, 9.0, 11.0), p50=(1.0, 0.9, 1.1), size=100, accuracy=0.9) -> dict:
    return {
        "spec": "toy",
        "technique": "t",
        "recorded": "2026-01-01T00:00:00+00:00",
        "speedup": {
            "value": speedup[0],
            "interval": list(speedup[1:]),
            "n": 50,
            "confidence": 0.999,
        },
        "latency_p50_ms": {"value": p50[0], "interval": list(p50[1:]), "n": 50},
        "reference_p50_ms": {"value": 10.0, "n": 50},
        "size_bytes": size,
        "reference_bytes": 400,
        "accuracy": {"accuracy": accuracy, "top1_agreement": 1.0},
        "settings": {},
        "environment": {},
    }


def verdicts(stored: dict, new: dict, tolerances: Tolerances, same: bool = True) -> dict:
    old, measured = BaselineEntry.from_json(stored), BaselineEntry.from_json(new)
    return {c.metric: c.verdict for c in compare(old, measured, tolerances, same_hardware=same)}


def test_every_committed_baseline_entry_reads_and_writes_back_unchanged() -> None:
    """The typed entry holds everything a baseline file holds: nothing is lost on a re-save."""
    committed = Path(__file__).parents[1] / "baselines"
    files = [p for p in committed.rglob("*.json") if not p.name.endswith(".obtained.json")]
    entries = [
        entry
        for path in files
        for entry in json.loads(path.read_text())["entries"].values()
        if "choice" not in entry  # a search's recorded choice, not a variant's entry
    ]
    assert len(entries) > 100
    kinds = {BaselineEntry.from_json(e).meter for e in entries}
    assert kinds == {"wall", "instructions"}
    for stored in entries:
        assert BaselineEntry.from_json(stored).to_json() == stored


def test_an_entry_that_is_not_a_variants_says_where_it_is() -> None:
    broken = {k: v for k, v in entry().items() if k != "size_bytes"}
    with pytest.raises(InvalidFileError, match=r"^b.json: t::x is not a variant's baseline entry"):
        BaselineEntry.from_json(broken, "b.json: t::x")


def test_speedup_fails_only_when_the_whole_interval_is_below_the_limit() -> None:
    tol = Tolerances(speedup=0.05)
    stored = entry()  # limit 9.5
    assert verdicts(stored, entry(speedup=(9.0, 8.5, 9.4)), tol)["speedup"] is Verdict.FAIL
    assert verdicts(stored, entry(speedup=(9.4, 9.0, 9.8)), tol)["speedup"] is Verdict.INCONCLUSIVE
    assert verdicts(stored, entry(speedup=(9.8, 9.6, 10.0)), tol)["speedup"] is Verdict.PASS
    unbounded = entry(speedup=(9.8, 9.6, 10.0))
    unbounded["speedup"]["interval"] = [None, None]
    assert verdicts(stored, unbounded, tol)["speedup"] is Verdict.INCONCLUSIVE


def test_size_and_accuracy_have_tight_tolerances() -> None:
    tol = Tolerances()
    stored = entry()
    assert verdicts(stored, entry(size=101), tol)["size_bytes"] is Verdict.PASS
    assert verdicts(stored, entry(size=102), tol)["size_bytes"] is Verdict.FAIL
    assert verdicts(stored, entry(accuracy=0.896), tol)["accuracy"] is Verdict.PASS
    assert verdicts(stored, entry(accuracy=0.894), tol)["accuracy"] is Verdict.FAIL


def test_absolute_latency_only_when_asked_and_on_the_same_hardware() -> None:
    slower = entry(p50=(2.0, 1.9, 2.1))
    assert "latency_p50_ms" not in verdicts(entry(), slower, Tolerances())
    tol = Tolerances(latency=0.1)
    assert verdicts(entry(), slower, tol)["latency_p50_ms"] is Verdict.FAIL
    assert "latency_p50_ms" not in verdicts(entry(), slower, tol, same=False)


def test_marker_keywords_are_checked() -> None:
    tol = Tolerances()
    assert tol.override("t", speedup_tolerance=0.2, latency_tolerance=0.1) == Tolerances(
        speedup=0.2, latency=0.1
    )
    with pytest.raises(ValueError, match="got unknown speed"):
        tol.override("t", speed=0.1)
    with pytest.raises(ValueError, match=r"size_tolerance=-1\): give a number >= 0"):
        tol.override("t", size_tolerance=-1)


def test_file_names_are_safe_readable_and_distinct() -> None:
    odd = "tests/dir with space/test_ünïcode[x]::y.py"
    name = baseline_filename(odd)
    assert name.startswith("tests_dir_with_space_test_")
    assert name.endswith(".json")
    assert all(c.isascii() and (c.isalnum() or c in "_.-") for c in name)
    assert baseline_filename("a/b.py") != baseline_filename("a_b.py")
    assert len(baseline_filename("x" * 500 + ".py")) < 100


def fake_hardware(machine=None) -> Hardware:
    cpu = CPU("Test CPU", "x86_64", "GenuineIntel", 6, 85, 4, 8, ("avx2",))
    return Hardware(cpu=cpu, machine=machine)


def test_store_roundtrip_and_validation(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path, fake_hardware())
    from pytest_modelopt.baselines import SaveReport

    report = SaveReport()
    store.save({"t.py::test[a]": entry(), "u.py::test[b]": entry(size=7)}, report)
    assert len(report.written) == 2
    assert not report.errors
    fresh = BaselineStore(tmp_path, fake_hardware())
    assert fresh.entry("u.py::test[b]")["size_bytes"] == 7
    assert fresh.entry("u.py::test[zz]") is None
    path = fresh.path_for("t.py")
    text = path.read_text()
    path.write_text(text.replace('"size_bytes": 100', '"size_bytes": -3'))
    with pytest.raises(InvalidFileError, match=r"size_bytes: expected a non-negative integer"):
        load_baseline_file(path, store.fingerprint)
    path.write_text(text.replace('"schema": 1', '"schema": 7'))
    with pytest.raises(InvalidFileError, match="schema 7, this pytest-modelopt reads schema 1"):
        load_baseline_file(path, store.fingerprint)
    path.write_text(text.replace('"value": 10.0', '"value": NaN', 1))
    with pytest.raises(InvalidFileError, match="not valid JSON: NaN is not allowed"):
        load_baseline_file(path, store.fingerprint)
    report = SaveReport()
    store = BaselineStore(tmp_path, fake_hardware())
    store.save({"t.py::test[a]": entry()}, report)
    assert len(report.errors) == 1
    assert "[not overwritten]" in report.errors[0]


def test_a_setting_stored_under_its_old_name_reads_and_saves_under_the_new_one(
    tmp_path: Path,
) -> None:
    """``precision`` (the interval width) became ``target_width``: files written before the
    rename read as if written after it, and the next save writes the new name."""
    from pytest_modelopt.baselines import SaveReport

    store = BaselineStore(tmp_path, fake_hardware())
    store.save({"t.py::test[a]": {**entry(), "settings": {"precision": 0.03}}}, SaveReport())
    path = store.path_for("t.py")
    assert '"precision": 0.03' in path.read_text()  # as an old version wrote it
    fresh = BaselineStore(tmp_path, fake_hardware())
    assert fresh.entry("t.py::test[a]")["settings"] == {"target_width": 0.03}
    report = SaveReport()
    fresh.save({"t.py::test[b]": entry()}, report)
    assert not report.errors
    text = path.read_text()
    assert '"target_width": 0.03' in text
    assert "precision" not in text


def test_an_entry_with_a_nan_is_reported_and_the_others_are_saved(tmp_path: Path) -> None:
    from pytest_modelopt.baselines import SaveReport

    store = BaselineStore(tmp_path, fake_hardware())
    broken = entry()
    broken["top_operators"] = {"aten::conv2d": float("nan")}
    report = SaveReport()
    store.save({"t.py::test[a]": broken, "t.py::test[b]": entry(size=7)}, report)
    assert report.errors == [
        "t.py::test[a]: not recorded: top_operators.aten::conv2d is not a finite number"
    ]
    fresh = BaselineStore(tmp_path, fake_hardware())
    assert fresh.entry("t.py::test[b]")["size_bytes"] == 7
    assert fresh.entry("t.py::test[a]") is None


def test_new_test_in_a_baselined_module_has_no_entry(baseline_project: pytest.Pytester) -> None:
    project = baseline_project
    project.makepyfile(test_toy=FAST_TEST)
    project.runpytest("--modelopt-save-baseline").assert_outcomes(passed=1)
    project.makepyfile(test_toy=TWO_TECHNIQUES)
    result = project.runpytest()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["test_toy  eager  *  no entry", "compared with the baseline for *: 1 passed, 1 no entry"]
    )


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_written_files_take_the_mode_the_umask_asks_for(
    baseline_project: pytest.Pytester, umask: int, mode: int
) -> None:
    """mkstemp alone would leave every file 0600: unreadable to a team sharing the directory."""
    from pytest_modelopt.atomic import atomic_write_text, process_umask

    baseline_project.makepyfile(test_toy=FAST_TEST)
    previous = os.umask(umask)
    try:
        assert process_umask() == umask
        atomic_write_text(baseline_project.path / "plain.txt", "x")
        result = baseline_project.runpytest("--modelopt-save-baseline", "--modelopt-json=r.json")
    finally:
        os.umask(previous)
    result.assert_outcomes(passed=1)
    written = [baseline_project.path / "plain.txt", baseline_project.path / "r.json"]
    written += baseline_files(baseline_project)
    assert len(written) == 3
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def _save_one_at_a_time(root: Path, name: str, count: int, start: float) -> None:
    from pytest_modelopt.baselines import SaveReport

    time.sleep(max(0.0, start - time.time()))
    for i in range(count):
        report = SaveReport()
        BaselineStore(root, fake_hardware()).save({f"t.py::test[{name}{i}]": entry()}, report)
        assert not report.errors, report.errors


def test_two_processes_saving_into_one_module_keep_every_entry(tmp_path: Path) -> None:
    """Each save reads, merges and writes the module's file: without the directory's lock, two
    runs saving at once (two CI jobs on one runner) drop each other's new entries."""
    fork = multiprocessing.get_context("fork")
    count, start = 60, time.time() + 0.5
    savers = [
        fork.Process(target=_save_one_at_a_time, args=(tmp_path, name, count, start))
        for name in ("a", "b")
    ]
    for saver in savers:
        saver.start()
    for saver in savers:
        saver.join(timeout=120)
        assert saver.exitcode == 0
    document = BaselineStore(tmp_path, fake_hardware()).load("t.py")
    assert document is not None
    expected = {f"t.py::test[{name}{i}]" for name in "ab" for i in range(count)}
    assert set(document["entries"]) == expected


def test_a_run_that_waits_for_the_timing_lock_says_for_whom_and_how_long(
    baseline_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Another process holds the machine-wide lock until the run has said it waits: the run names
    the holder, then reports the wait in the summary and the JSON (a private TMPDIR keeps real
    runs' locks out of it)."""
    from filelock import FileLock

    lock_dir = tmp_path / "tmp"
    lock_dir.mkdir()
    stem = f"pytest-modelopt-timing-{os.getuid()}"
    holder = {"pid": os.getpid(), "test": "other/test_x.py::test_y[openvino]"}
    (lock_dir / f"{stem}.holder.json").write_text(json.dumps({**holder, "since": time.time()}))
    lock = FileLock(lock_dir / f"{stem}.lock", thread_local=False)  # released by the thread
    lock.acquire()

    def release_once_the_run_waits() -> None:
        # pytester's run() streams the child's stdout into <project>/stdout.
        deadline = time.monotonic() + 120
        stdout = baseline_project.path / "stdout"
        while time.monotonic() < deadline:
            if stdout.exists() and "waiting (" in stdout.read_text(errors="replace"):
                time.sleep(1.0)
                break
            time.sleep(0.2)
        lock.release()

    release = threading.Thread(target=release_once_the_run_waits)
    release.start()
    monkeypatch.setenv("TMPDIR", str(lock_dir))
    baseline_project.makepyfile(test_toy=FAST_TEST)
    try:
        result = baseline_project.runpytest_subprocess("--modelopt-json=r.json", timeout=120)
    finally:
        release.join()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            f"modelopt: test_toy.py::test_toy[[]fake_fast[]]: waiting (1 s so far) for pid "
            f"{os.getpid()}, measuring other/test_x.py::test_y[[]openvino[]] since *",
            "waited * s in all for other processes' measurements (the machine-wide timing "
            "lock *); longest: test_toy.py::test_toy[[]fake_fast[]], * s",
        ]
    )
    document = json.loads((baseline_project.path / "r.json").read_text())
    assert 1.9 < document["lock_wait_s"] < 60
    assert document["results"][0]["lock_wait_s"] == document["lock_wait_s"]
    assert not (lock_dir / f"{stem}.holder.json").exists()  # the run removed its own record


def test_a_holder_record_that_is_stale_or_missing_is_not_believed() -> None:
    from pytest_modelopt.session.scheduling import describe_holder

    dead = {"pid": 2**22 + 12345, "test": "t.py::test", "since": time.time()}
    for record in (None, dead, {"pid": os.getpid(), "since": "soon"}):
        assert "names no holder" in describe_holder(record)
    alive = {"pid": os.getpid(), "test": "t.py::test", "since": time.time() - 125}
    assert describe_holder(alive).endswith("(2 min 5 s)")


def test_another_fingerprints_differences_are_cut_to_a_short_line() -> None:
    from pytest_modelopt.session.reporting import _first_differences

    long = [f"isa_cap.field{i}: {'x' * 300} (baseline) != - (this run)" for i in range(6)]
    line = _first_differences(long)
    assert line.count("...") == 3
    assert line.endswith("; and 3 more")
    assert len(line) < 320
    assert _first_differences(["machine: a (baseline) != b (this run)"]) == (
        "machine: a (baseline) != b (this run)"
    )


def test_a_failed_contract_says_what_its_baseline_column_would_have(
    baseline_project: pytest.Pytester,
) -> None:
    """A contract that fails is never compared with its baseline: its row says whether there
    was one (`no entry` for a new test in a module with a baseline), in a passing row's words,
    and `not compared` only where an entry exists."""
    project = baseline_project
    project.makepyfile(test_toy=FAST_TEST)
    project.runpytest("--modelopt-save-baseline").assert_outcomes(passed=1)
    project.makepyfile(
        test_toy=FAST_TEST.replace('size_ratio="<=1"', 'size_bytes="<=1"')
        + FAST_TEST.replace("def test_toy", "def test_new").replace(
            'size_ratio="<=1"', 'size_bytes="<=1"'
        )
    )
    result = project.runpytest("--modelopt-json=run.json")
    result.assert_outcomes(failed=2)
    statuses = {
        r["test"].split("::")[1]: r["baseline"]["status"]
        for r in json.loads((project.path / "run.json").read_text())["results"]
    }
    assert statuses == {"test_toy[fake_fast]": "not compared", "test_new[fake_fast]": "no entry"}
    result.stdout.fnmatch_lines(["test_toy*FAIL*not compared", "test_new*FAIL*no entry"])


def _row(test: str, spec: str, reference_p50_s: float, meter: str = "wall") -> dict:
    return {
        "test": test,
        "spec": spec,
        "meter": meter,
        "reference": {"device": "cpu"},
        "latency": {"reference": {"stats": {"p50": reference_p50_s}}},
    }


def test_a_row_whose_reference_ran_far_slower_than_the_others_is_not_stored() -> None:
    """Measured in a shared session: the digits CNN's reference read 0.23 ms in most rows and
    56 ms in one (a neighbour held a core mid-OpenMP region); that row's 1,955x speedup became a
    baseline that every quiet run then 'regressed' from."""
    from pytest_modelopt.baselines import DISTURBED_FACTOR, disturbed_records

    rows = [
        _row("t.py::test[a]", "cnn", 0.23e-3),
        _row("t.py::test[b]", "cnn", 0.46e-3),  # in a worker vs in process: 2x is normal
        _row("t.py::test[c]", "cnn", 56e-3),
        _row("t.py::test[d]", "big", 30e-3),  # another spec: its own fastest row
        _row("t.py::test[e]", "cnn", 56e-3, meter="instructions"),  # counts: not compared
    ]
    disturbed = disturbed_records(rows)
    assert list(disturbed) == ["t.py::test[c]"]
    assert "56 ms a call, 243x the 0.23 ms of cnn's fastest row" in disturbed["t.py::test[c]"]
    assert DISTURBED_FACTOR * 0.23e-3 < 56e-3
    assert disturbed_records([_row("t.py::test[a]", "cnn", 0.2e-3)]) == {}


def test_a_stored_speedup_too_noisy_to_judge_sets_no_limit() -> None:
    tol = Tolerances()
    noisy = entry(speedup=(18.5, 1.0, 2.0))
    noisy["speedup"]["interval"] = [None, None]
    assert "speedup" not in verdicts(noisy, entry(speedup=(4.0, 3.9, 4.1)), tol)
    flagged = entry(speedup=(18.5, 5.0, 30.0))
    flagged["speedup"]["undecidable"] = "too noisy to judge: IQR/median 75% > 25%"
    assert "speedup" not in verdicts(flagged, entry(speedup=(4.0, 3.9, 4.1)), tol)
    assert verdicts(entry(), entry(speedup=(4.0, 3.9, 4.1)), tol)["speedup"] is Verdict.FAIL


def test_a_stored_figure_that_reaches_beyond_its_tolerance_still_gates_and_says_so() -> None:
    """A committed entry read 5.04x [3.99x, 7.6x]; four later sessions read 3.94-4.04x, with
    intervals under 2%, and two of them failed its 4.03x limit."""
    tol = Tolerances(speedup=0.2, latency=0.1)
    wide = BaselineEntry.from_json(entry(speedup=(5.04, 3.99, 7.6), p50=(1.0, 0.85, 1.05)))
    new = BaselineEntry.from_json(entry(speedup=(3.95, 3.93, 3.98)))
    checks = {c.metric: c for c in compare(wide, new, tol, same_hardware=True)}
    assert checks["speedup"].verdict is Verdict.FAIL, "the limit stays the stored value's"
    assert checks["speedup"].caveat.startswith(
        "the stored 5.04x [3.99x, 7.6x] reaches 51% from its value, beyond the 20% tolerance: "
    )
    assert "record it again on a quiet machine" in checks["speedup"].caveat
    assert "reaches 15% from its value, beyond the 10% tolerance" in checks["latency_p50_ms"].caveat
    assert checks["size_bytes"].caveat == ""
    assert checks["speedup"].to_dict()["caveat"] == checks["speedup"].caveat
    table = format_baseline_checks(checks.values(), "toy[t]: regression")
    assert "\n  speedup: imprecise baseline: the stored 5.04x [3.99x, 7.6x] reaches" in table

    tight = BaselineEntry.from_json(entry(p50=(1.0, 0.95, 1.05)))  # reach 10% and 5%
    within = compare(tight, new, tol, same_hardware=True)
    assert all(c.caveat == "" for c in within)
    assert "imprecise" not in format_baseline_checks(within, "toy[t]")


def test_the_summary_names_the_tests_whose_stored_figure_is_imprecise(
    baseline_project: pytest.Pytester,
) -> None:
    project = baseline_project  # speedup tolerance 50%
    project.makepyfile(test_toy=FAST_TEST)
    project.runpytest("--modelopt-save-baseline").assert_outcomes(passed=1)
    (saved,) = baseline_files(project)

    def store_interval(low: float, high: float) -> None:
        document = json.loads(saved.read_text())
        speedup = document["entries"]["test_toy.py::test_toy[fake_fast]"]["speedup"]
        speedup["interval"] = [speedup["value"] * low, speedup["value"] * high]
        saved.write_text(json.dumps(document))

    def caveats() -> list[str]:
        (record,) = json.loads((project.path / "run.json").read_text())["results"]
        return [c["caveat"] for c in record["baseline"]["checks"] if c["caveat"]]

    store_interval(0.7, 1.2)  # reaches 30%: within the tolerance
    result = project.runpytest("--modelopt-json=run.json")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("imprecise baselines for*")
    assert caveats() == []

    store_interval(0.4, 1.2)  # reaches 60%
    result = project.runpytest("--modelopt-json=run.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "compared with the baseline for *: 1 passed",
            "imprecise baselines for *: 1 entries were recorded with an interval that reaches "
            "beyond their tolerance (test_toy.py::test_toy[[]fake_fast[]]), so their gate can cry "
            "wolf or miss a regression; record them again on a quiet machine with "
            "--modelopt-save-baseline*",
        ]
    )
    (caveat,) = caveats()
    assert "reaches 60% from its value, beyond the 50% tolerance" in caveat
