"""Faults: a save killed at any moment, and damaged or hostile baseline and results files."""

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_modelopt.baselines import (
    BaselineEntry,
    BaselineStore,
    SaveReport,
    Tolerances,
    compare,
    load_baseline_file,
)
from pytest_modelopt.cli import main
from pytest_modelopt.errors import InvalidFileError
from pytest_modelopt.report import results_table
from pytest_modelopt.results import load_run
from pytest_modelopt.search import choose_runs
from test_baselines import entry, fake_hardware

SAVER = """
import sys, itertools
sys.path[:0] = [{tests!r}]
from pathlib import Path
from pytest_modelopt.baselines import BaselineStore, SaveReport
from test_faults import ENTRIES, big
from test_baselines import fake_hardware

import os, time
real_fsync = os.fsync
def slow_fsync(fd):  # a slow disk: kills land inside the write window far more often
    real_fsync(fd)
    time.sleep(0.1)
os.fsync = slow_fsync
store = BaselineStore(Path({root!r}), fake_hardware())
versions = [{{f"t.py::test[{{i}}]": big(size) for i in range(ENTRIES)}} for size in (111, 222)]
print("ready", flush=True)
for version in itertools.cycle(versions):
    store.save(version, SaveReport())
"""


ENTRIES = 20
KILLS = 10


def big(size: int) -> dict:
    """An entry with a large environment string: most of a save's time is spent writing."""
    return {**entry(size=size), "environment": {"blob": "x" * 400_000}}


def test_kill_9_during_saves_never_damages_the_baseline(tmp_path: Path) -> None:
    """A process saving a large baseline over and over is killed at random moments; each time
    the file on disk is a complete, valid baseline: the old one or the new one."""
    store = BaselineStore(tmp_path, fake_hardware())
    store.save({f"t.py::test[{i}]": big(111) for i in range(ENTRIES)}, SaveReport())
    path = store.path_for("t.py")
    script = SAVER.format(tests=str(Path(__file__).parent), root=str(tmp_path))
    sizes_seen = set()
    moments = random.Random(0)
    for _ in range(KILLS):
        saver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert saver.stdout is not None
        assert saver.stdout.readline().strip() == "ready"
        time.sleep(moments.uniform(0.3, 0.9))  # past the first load, at any moment of a save
        os.kill(saver.pid, signal.SIGKILL)
        saver.wait(timeout=30)
        saver.stdout.close()
        assert saver.returncode == -signal.SIGKILL
        document = load_baseline_file(path, store.fingerprint)
        sizes = {e["size_bytes"] for e in document["entries"].values()}
        assert len(document["entries"]) == ENTRIES
        assert len(sizes) == 1, "a file mixing two saves"
        sizes_seen |= sizes
    assert sizes_seen <= {111, 222}
    leftovers = [p.name for p in path.parent.iterdir() if p.suffix == ".tmp"]
    print(f"{len(leftovers)} of {KILLS} kills landed inside a write; sizes seen {sizes_seen}")
    assert leftovers, "no kill landed inside a write: the test did not exercise the fault"
    assert all(name.startswith(".") for name in leftovers), "temp files are hidden"
    assert store.baseline_files() == [path], "a killed save's temp file is never read"


# -- fuzzing -----------------------------------------------------------------------------------

LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(-1, 1)
    | st.text(max_size=8)
)
JSON = st.recursive(
    LEAF,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data[:2]):  # long sample lists would drown the rest
            yield from _paths(value, (*prefix, index))


@st.composite
def mutated(draw, document):
    """A valid document with one place replaced by arbitrary JSON, or one key deleted."""
    data = json.loads(json.dumps(document))
    paths = list(_paths(data))
    path = draw(st.sampled_from(paths[1:]))
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON)
    return json.dumps(data)


def valid_baseline() -> dict:
    store = BaselineStore(Path("unused"), fake_hardware())
    return store.document("t.py", {"t.py::test[a]": entry()})


def outcome(load, *args):
    """(what load returned, None), or (None, the InvalidFileError's message): anything else
    raised is a crash, and fails the test."""
    try:
        return load(*args), None
    except InvalidFileError as error:
        return None, str(error)


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.one_of(mutated(valid_baseline()), st.binary(max_size=64).map(repr), JSON.map(json.dumps)))
def test_fuzzed_baseline_is_a_clear_error_or_fully_usable(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = BaselineStore(Path(directory), fake_hardware())
        path = store.path_for("t.py")
        path.parent.mkdir(parents=True)
        path.write_text(text)
        document, error = outcome(load_baseline_file, path, store.fingerprint)
        if error is not None:
            assert error.startswith(f"baseline {path}: ")
            return
        for stored in document["entries"].values():  # accepted: then every rule can use it
            typed = BaselineEntry.from_json(stored), BaselineEntry.from_json(entry())
            compare(*typed, Tolerances(latency=0.1), same_hardware=True)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_as_baseline_are_a_clear_error(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "t-x.json"
        path.write_bytes(raw)
        with pytest.raises(InvalidFileError, match=f"^baseline {path}: "):
            load_baseline_file(path, "fp")


@pytest.fixture(scope="module")
def results_document() -> dict:
    """A results file written by a real run of the fake techniques: a variant test and a
    search (the file's ``searches``)."""
    from fakes import CONFTEST, FAST_INI

    with tempfile.TemporaryDirectory() as directory:
        project = Path(directory)
        (project / "conftest.py").write_text(CONFTEST)
        (project / "pytest.ini").write_text(FAST_INI)
        (project / "test_toy.py").write_text(
            "import pytest\n\n@pytest.mark.modelopt(techniques=['fake_fast'])\n"
            "def test_toy(modelopt_variant):\n    modelopt_variant.expect(size_ratio=1)\n\n"
            "@pytest.mark.modelopt_best(budgets={'top1_agreement': '>=99%'}, chains=False,\n"
            "    techniques=['fake_fast', 'fake_same'])\n"
            "def test_best(modelopt_best):\n    pass\n"
        )
        subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--modelopt-json=r.json"],
            cwd=project,
            check=True,
            capture_output=True,
            timeout=300,
        )
        return json.loads((project / "r.json").read_text())


def test_fuzzed_results_files_are_a_clear_error_or_fully_usable(results_document: dict) -> None:
    @FUZZ
    @given(st.one_of(mutated(results_document), JSON.map(json.dumps)))
    def check(text: str) -> None:
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "run.json"
            path.write_text(text)
            run, error = outcome(load_run, path)
            if error is not None:
                assert error.startswith(f"results file {path}: ")
                return
            results_table(run.records)  # accepted: then the report can use every record
            for budgets in ([], ["top1_agreement>=99%", "size_ratio<=2"]):  # and modelopt best
                for choice in choose_runs([run], budgets, searches=True):
                    choice.table()

    assert results_document["searches"][0]["records"], "the fuzz must reach a search's records"
    check()


def test_cli_on_a_damaged_results_file_says_which_and_why(
    results_document: dict, tmp_path: Path, capsys
) -> None:
    damaged = json.loads(json.dumps(results_document))
    damaged["results"][0]["latency"]["speedup_interval"] = [3, 1]
    path = tmp_path / "run.json"
    path.write_text(json.dumps(damaged))
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"modelopt: error: results file {path}: results[0].latency.speedup_interval: "
        "interval low 3 is above its high 1\n"
    )
