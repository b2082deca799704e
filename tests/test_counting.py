"""The instructions meter: counts under valgrind, selection, skips, and the cross-session gate.

The pytester projects count a pure-Python toy model (a loop of ``work`` steps) whose variant
and reference a worker process rebuilds from importable loaders: a counted verdict takes seconds.
"""

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from pytest_modelopt.cli import main
from pytest_modelopt.counting import (
    ClientRequests,
    CountingWorker,
    Counts,
    estimated_cycles,
    parse_callgrind,
    single_threaded,
    total_instructions,
)
from pytest_modelopt.worker import Loader, WorkerUnavailable

needs_valgrind = pytest.mark.skipif(
    shutil.which("valgrind") is None, reason="valgrind is not installed (apt-get install valgrind)"
)

TOY_MODEL = '''
from itertools import repeat


class Toy:
    """A 'model': loops for `work` steps, returns two class scores. The loop allocates nothing
    (cached small ints only): an allocating loop's count moves by a few percent with the state of
    Python's allocator, which anything else run in the worker changes."""

    def __init__(self, work=20_000):
        self.work = work

    def __call__(self, x):
        total = 0
        for _ in repeat(None, self.work):
            total = (total + 1) & 127
        return [[float(x), 2.0 * x]]


def toy_runner(work):
    return Toy(work)
'''

COUNTED_CONFTEST = '''
import pytest
from pathlib import Path

from pytest_modelopt import ModelSpec, Variant, register_technique
from pytest_modelopt.worker import Loader, WorkerUnavailable
from toymodel import Toy


@register_technique("toy_fast", frameworks=("python",), defaults={"extra_work": 0.0})
def build_fast(ctx):
    """A tenth of the reference's work, plus `extra_work` of that (a deliberate regression)."""
    work = round(ctx.model.work // 10 * (1 + ctx.params["extra_work"]))
    path = Path(ctx.workdir) / "model.bin"
    path.write_bytes(b"w" * 10)
    return Variant(
        Toy(work), (path,), runtime="python", precision="fp32",
        loader=Loader("toymodel:toy_runner", {"work": work}),
    )


@register_technique("toy_local", frameworks=("python",))
def build_local(ctx):
    """No loader: runs in this process only, so it cannot be counted."""
    path = Path(ctx.workdir) / "model.bin"
    path.write_bytes(b"w" * 10)
    return Variant(Toy(100), (path,), runtime="python", precision="fp32")


@pytest.fixture(scope="module")
def modelopt_spec():
    return ModelSpec(name="toy", factory=Toy, example_input=3.0)
'''

FAST_INI = """
[pytest]
modelopt_max_time = 0.3
modelopt_warmup = 0.05
"""

CONTRACT = """
import pytest

@pytest.mark.modelopt(techniques=["toy_fast"], params={{"toy_fast": {{"extra_work": {extra}}}}})
def test_toy(modelopt_variant):
    modelopt_variant.expect(instructions_ratio=">=5", speedup=">=100")
"""


@pytest.fixture
def counted(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(toymodel=TOY_MODEL)
    pytester.makeconftest(COUNTED_CONFTEST)
    pytester.makeini(FAST_INI)
    return pytester


def contract(pytester: pytest.Pytester, extra: float = 0.0) -> None:
    pytester.makepyfile(test_toy=CONTRACT.format(extra=extra))


def counts_of(path: Path) -> dict:
    return json.loads(path.read_text())["results"][0]["latency"]["counts"]


# -- parts -------------------------------------------------------------------------------------

DUMP = """# callgrind format
version: 1
creator: callgrind-3.19.0
events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
fl=loop.c
fn=work
3 900 300 100 2 10 5 1 2 3
4 100 0 0
cfn=helper
calls=2 10
4 500 100 100 1 1 1 0 0 0
fn=helper
10 500 100 100 1 1 1 0 0 0
ob=/usr/lib/libstripped.so.1
fn=0x00000000001a2b30
0 50 0 0 0 0 0 0 0 0
totals: 1550 400 200 3 11 6 1 2 3
"""


def test_a_dump_reads_as_totals_and_self_costs(tmp_path: Path) -> None:
    path = tmp_path / "callgrind.out.1"
    path.write_text(DUMP)
    counts = parse_callgrind(path)
    assert counts.instructions == 1550
    assert counts.events["DLmw"] == 3
    # the line after calls= is helper's inclusive cost, not work's own; a stripped library's
    # function is named by its address and its library
    assert counts.functions == {
        "work": 1000,
        "helper": 500,
        "0x00000000001a2b30 in libstripped.so.1": 50,
    }


def test_the_calibration_reads_a_dump_total_from_its_ends_only(tmp_path: Path) -> None:
    """The worker's own calibration reads only a dump's header and last lines (a full parse
    allocates enough to move the counts of the calls counted after it), and agrees with it."""
    path = tmp_path / "callgrind.out.1"
    middle = "".join(f"fn=f{i}\n{i} 1 0 0 0 0 0 0 0 0\n" for i in range(5000))  # > 2 edges
    path.write_text(DUMP.replace("fl=loop.c\n", "fl=loop.c\n" + middle))
    assert path.stat().st_size > 20_000
    assert total_instructions(path) == 1550
    path.write_text(DUMP.replace("totals:", "summary:"))  # callgrind's header form
    assert total_instructions(path) == parse_callgrind(path).instructions == 1550
    path.write_text(DUMP.split("totals:")[0])
    with pytest.raises(WorkerUnavailable, match="no totals"):
        total_instructions(path)


def test_estimated_cycles_follow_the_stated_model() -> None:
    events = {"Ir": 1000, "Dr": 300, "Dw": 200, "I1mr": 10, "D1mr": 20, "D1mw": 10}
    events |= {"ILmr": 1, "DLmr": 2, "DLmw": 1}
    l1_misses, ll_misses = 40, 4
    expected = (1500 - l1_misses) + 5 * (l1_misses - ll_misses) + 35 * ll_misses
    assert estimated_cycles(events) == expected
    assert Counts(events).estimated_cycles == expected


def test_an_overhead_is_subtracted_and_never_below_zero() -> None:
    counted = Counts({"Ir": 1000.0, "D1mr": 1.0}).minus(Counts({"Ir": 300.0, "D1mr": 4.0}))
    assert counted.events == {"Ir": 700.0, "D1mr": 0.0}


def test_counted_sides_are_rebuilt_with_one_thread() -> None:
    ort = Loader("pytest_modelopt.variants.ort_sessions:ort_runner", {"path": "m", "threads": 2})
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2}
    openvino = Loader("x:y", {"xml": "m.xml", "config": config}, numpy_inputs=True)
    assert single_threaded(ort).kwargs == {"path": "m", "threads": 1}
    assert single_threaded(openvino).kwargs["config"]["INFERENCE_NUM_THREADS"] == 1
    assert single_threaded(openvino).numpy_inputs
    assert config["INFERENCE_NUM_THREADS"] == 2  # the variant's own loader is left as it was


def test_a_wrapped_loader_is_rebuilt_with_one_thread_too() -> None:
    """The slowdown aid wraps the variant's loader: left at two threads, ONNX Runtime's pool
    added about 50k instructions a call under valgrind (+0.8% of resnet18 at 32x32), so +2%
    asked read +2.9%."""
    ort = Loader("pytest_modelopt.variants.ort_sessions:ort_runner", {"path": "m", "threads": 2})
    slowed = Loader("pytest_modelopt.testing:slowed_runner", {"loader": ort, "iterations": 9})
    assert single_threaded(slowed).kwargs == {
        "loader": single_threaded(ort),
        "iterations": 9,
    }
    assert single_threaded(slowed).kwargs["loader"].kwargs["threads"] == 1


def test_client_requests_are_no_ops_outside_valgrind() -> None:
    requests = ClientRequests()
    assert requests.running_on_valgrind() is False
    requests.toggle_collect()  # the magic sequence runs as plain rotates on a real CPU
    requests.dump("nothing")


def looping_runner(work: int, load_work: int = 0):
    """A worker's loader: `load_work` steps once when loaded, `work` steps per call."""

    def loop(steps: int) -> int:
        total = 0
        for i in range(steps):
            total += i
        return total

    loop(load_work)
    return lambda batch: loop(work)


@needs_valgrind
def test_only_the_counted_calls_are_counted() -> None:
    """Loading and warm-up are not counted, and a call's count grows with its own work only."""
    from pytest_modelopt.counting import counted_sides

    small = (Loader("test_counting:looping_runner", {"work": 2000, "load_work": 300_000}), None)
    large = (Loader("test_counting:looping_runner", {"work": 4000}), None)
    worker = CountingWorker(threads=1)
    variant, reference = counted_sides(small, large, threads=1, label="loops", worker=worker)
    variant.start()
    reference.start()
    try:
        small_calls, large_calls = variant.sample(5), reference.sample(5)
        variant.close()
        reference.close()
        assert worker.running  # the process is kept for the next comparison
        assert not variant.pair.slots  # the pair's sides are unloaded
    finally:
        worker.close()
    assert not worker.running
    # 300,000 steps at load would be 150 calls' worth: none of it is in a call's count
    assert max(small_calls) < 1.2 * min(small_calls)
    # twice the steps, twice the instructions, up to the call's own constant cost
    per_step = (min(large_calls) - min(small_calls)) / 2000
    assert per_step > 0
    assert min(small_calls) == pytest.approx(2000 * per_step, rel=0.05)


@needs_valgrind
def test_a_preload_overlaps_and_a_failed_one_leaves_the_load_to_say_why() -> None:
    from pytest_modelopt.counting import counted_sides
    from pytest_modelopt.worker import WorkerUnavailable

    worker = CountingWorker(threads=1)
    try:
        worker.start(preload=("json", "no_such_module_zz"))  # answered later, not awaited
        loops = (Loader("test_counting:looping_runner", {"work": 1000}), None)
        variant, _ = counted_sides(loops, loops, threads=1, label="loops", worker=worker)
        variant.start()
        assert variant.sample(1)[0] > 0
        variant.close()
        missing = (Loader("no_such_module_zz:runner", {}), None)
        variant, _ = counted_sides(missing, loops, threads=1, label="missing", worker=worker)
        with pytest.raises(WorkerUnavailable, match=r"missing: the counting worker failed.*zz"):
            variant.start()
        assert worker.running  # a failed load leaves the process for the next comparison
    finally:
        worker.close()


# -- selection ---------------------------------------------------------------------------------


def test_the_meter_is_an_option_an_ini_key_and_validated(counted: pytest.Pytester) -> None:
    contract(counted)
    result = counted.runpytest("--modelopt-measure=cycles")
    assert "--modelopt-measure: expected one of wall, instructions, got 'cycles'" in (
        result.stderr.str()
    )
    counted.makeini(FAST_INI + "modelopt_measure = nonsense\n")
    result = counted.runpytest()
    assert "modelopt_measure: expected one of wall, instructions" in result.stderr.str()


def test_a_bad_marker_meter_is_a_collection_error(counted: pytest.Pytester) -> None:
    counted.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["toy_fast"], measure="cycles")
        def test_toy(modelopt_variant):
            pass
        """
    )
    result = counted.runpytest()
    result.stdout.fnmatch_lines(["*measure must be one of 'wall', 'instructions', got 'cycles'*"])


def test_without_valgrind_a_counted_test_skips_and_strict_fails(
    counted: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELOPT_VALGRIND", "no-such-valgrind-zz")
    contract(counted)
    result = counted.runpytest("--modelopt-measure=instructions", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*the instructions meter needs valgrind*apt-get install*"])
    result = counted.runpytest("--modelopt-measure=instructions", "--modelopt-strict")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*needs valgrind*--modelopt-strict*"])


def test_a_variant_without_a_loader_cannot_be_counted(counted: pytest.Pytester) -> None:
    counted.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["toy_local"], measure="instructions")
        def test_toy(modelopt_variant):
            pass
        """
    )
    result = counted.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*toy[[]toy_local[]] cannot be counted*no loader*"])


# -- counting ----------------------------------------------------------------------------------


@needs_valgrind
def test_the_marker_counts_one_test_and_the_others_are_timed(counted: pytest.Pytester) -> None:
    counted.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["toy_fast"], measure="instructions")
        def test_counted(modelopt_variant):
            modelopt_variant.expect(instructions_ratio=">=9", instructions_per_call="<=1e7")

        @pytest.mark.modelopt(techniques=["toy_fast"])
        def test_timed(modelopt_variant):  # timed, but judged on what timing cannot move
            modelopt_variant.expect(size_ratio="<=1")
        """
    )
    result = counted.runpytest("--modelopt-json=results.json")
    result.assert_outcomes(passed=2)
    records = {
        r["test"].split("::")[1]: r
        for r in json.loads((counted.path / "results.json").read_text())["results"]
    }
    assert records["test_counted[toy_fast]"]["meter"] == "instructions"
    assert records["test_timed[toy_fast]"]["meter"] == "wall"
    counts = records["test_counted[toy_fast]"]["latency"]["counts"]
    # the variant loops a tenth of the reference's steps: close to a tenth of the instructions
    assert 9 < counts["reference"]["instructions"] / counts["variant"]["instructions"] < 11
    assert counts["variant"]["cycles_model"].startswith("L1 hit 1, last-level hit 5, RAM 35")
    assert "AVX-512" in counts["variant"]["isa_note"]
    result.stdout.fnmatch_lines(["*test_counted*toy_fast*M Ir*x Ir [[]*", "*test_timed*toy_fast*"])


@needs_valgrind
def test_counts_agree_between_processes_and_catch_two_percent(
    counted: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    """The gate CI users rely on: a baseline recorded by one process, compared in others."""
    contract(counted)
    measure = ("--modelopt-measure=instructions",)
    counted.runpytest(*measure, "--modelopt-save-baseline", "--modelopt-json=first.json")
    stored = next((counted.path / "baselines").glob("*-counted/*.json"))
    assert json.loads(stored.read_text())["entries"]
    result = counted.runpytest(*measure, "--modelopt-json=second.json")
    result.assert_outcomes(passed=1)  # A/A: a fresh process, the same counts
    first, second = counts_of(counted.path / "first.json"), counts_of(counted.path / "second.json")
    for side in ("variant", "reference"):
        spread = abs(first[side]["instructions"] / second[side]["instructions"] - 1)
        assert spread < 0.002, (side, spread)
    results = [counted.path / "first.json", counted.path / "second.json"]
    code = main(["compare", *map(str, results)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(r"test_toy\[toy_fast\]\s+instructions_per_call\s.*PASS", out), out
    if importlib.util.find_spec("matplotlib") is not None:
        page = counted.path / "matrix.html"
        assert main(["merge", *map(str, results), "--html", str(page)]) == 0
        assert "-counted" in page.read_text()
        assert "x Ir" in page.read_text()
    contract(counted, extra=0.02)  # the variant's loop does 2% more steps
    result = counted.runpytest(*measure)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*regression against the baseline for *-counted*instructions_per_call*",
            "what changed, by function*",
            "function (self Ir per call)*baseline*measured*change",
        ]
    )
    assert "instructions_per_call  " in result.stdout.str()


@needs_valgrind
def test_the_inject_slowdown_aid_reaches_the_counted_worker(counted: pytest.Pytester) -> None:
    """Under the counting meter the injected loop is sized in instructions: +2% asked is +2%
    of the variant's instructions, in every process."""
    contract(counted)
    measure = "--modelopt-measure=instructions"
    result = counted.runpytest(measure, "--modelopt-save-baseline", "--modelopt-json=clean.json")
    result.assert_outcomes(passed=1)
    result = counted.runpytest(
        measure, "--modelopt-inject-slowdown=toy_fast=0.02", "--modelopt-json=slowed.json"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*instructions_per_call*FAIL*"])
    clean, slowed = counts_of(counted.path / "clean.json"), counts_of(counted.path / "slowed.json")
    grown = slowed["variant"]["instructions"] / clean["variant"]["instructions"] - 1
    assert grown == pytest.approx(0.02, abs=0.005)  # plus the wrapper's call: 0.3% of a toy call
    latency = json.loads((counted.path / "clean.json").read_text())["results"][0]["latency"]
    for side in ("variant", "reference"):  # counts see no page faults: glibc's defaults there
        assert latency[side]["isolation"] == "worker process under valgrind (callgrind)"
        assert latency[side]["allocator"] == "system default"


@needs_valgrind
def test_counted_tests_share_one_worker_and_their_baseline_is_named(
    counted: pytest.Pytester,
) -> None:
    """The worker's start is paid once a session; a wall session's counted tests say which
    (counted) baseline they were compared with."""
    counted.makepyfile(
        """
        import pytest

        @pytest.mark.modelopt(techniques=["toy_fast"], measure="instructions")
        def test_first(modelopt_variant):
            modelopt_variant.expect(instructions_ratio=">=5")

        @pytest.mark.modelopt(techniques=["toy_fast"], measure="instructions")
        def test_second(modelopt_variant):
            modelopt_variant.expect(instructions_ratio=">=5")
        """
    )
    counted.runpytest("--modelopt-save-baseline").assert_outcomes(passed=2)
    result = counted.runpytest("--modelopt-json=results.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["compared with the baseline for *-counted: 2 passed"])
    assert "no baseline for" not in result.stdout.str()
    assert "another fingerprint" not in result.stdout.str()
    records = json.loads((counted.path / "results.json").read_text())["results"]
    pids = {r["latency"]["counts"]["variant"]["worker_pid"] for r in records}
    assert len(pids) == 1, pids
