"""`modelopt best`: the recommendation per machine and model from results files."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pytest_modelopt.cli import main
from searchdata import digits_records, record, results_document, search_entry, write_results

BUDGETS = ["--budget", "accuracy_drop<=1%", "--budget", "size_ratio<=0.5"]


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def matrix(tmp_path: Path) -> Path:
    """A merged nightly matrix: two machines, where box-b's int8 runtimes are slower, and an
    older run of box-a that the latest one replaces."""
    directory = tmp_path / "nightly"
    directory.mkdir()
    write_results(directory / "a.json", digits_records(), fingerprint="box-a")
    old = [record("eager", 1.0, (0.99, 1.01)), record("static_int8", 9.0, (8.9, 9.1))]
    write_results(
        directory / "a-old.json", old, fingerprint="box-a", created="2026-11-01T10:00:00+00:00"
    )
    b = [
        record("eager", 1.0, (0.98, 1.02)),
        record("onnxruntime_static_int8", 1.1, (1.0, 1.2), size_ratio=0.26, accuracy=0.948),
        record("static_int8", 2.5, (2.4, 2.6), size_ratio=0.26, accuracy=0.949),
    ]
    write_results(directory / "b.json", b, fingerprint="box-b")
    return directory


def test_best_recommends_per_fingerprint(matrix: Path, capsys) -> None:
    code, out, err = run_cli(capsys, "best", matrix, *BUDGETS)
    assert (code, err) == (0, "")
    box_a, box_b = out.split("\n\n")
    assert box_a.startswith(
        "digits_cnn on box-a: objective latency: speedup (higher is better); constraints: "
        "accuracy_drop <= 1.00%, size_ratio <= 0.5x\n"
    )
    assert "recommended: onnxruntime_static_int8, speedup 4x [3.8x, 4.3x]; a tie" in box_a
    rows = {line.split()[1]: line for line in box_a.splitlines() if line.startswith(("=", "4"))}
    assert rows["onnxruntime_static_int8"].startswith("=1")
    assert rows["onnxruntime_static_int8"].endswith("recommended, tie, Pareto")
    assert rows["static_int8"].split()[0] == "4"  # the old run's 9x is not this run's
    assert "  pruned_structured+static_int8: accuracy_drop 5.00% breaks <= 1.00%" in box_a
    assert box_b.startswith("digits_cnn on box-b")
    assert "recommended: static_int8, speedup 2.5x [2.4x, 2.6x]\n" in box_b
    assert "  eager: size_ratio 1x breaks <= 0.5x" in box_b


def test_best_writes_json_with_the_same_answer(matrix: Path, tmp_path: Path, capsys) -> None:
    out_json = tmp_path / "choices.json"
    code, out, _ = run_cli(
        capsys, "best", matrix / "a.json", *BUDGETS, "--objective", "size", "--json", out_json
    )
    assert code == 0
    assert out.endswith(f"choices written to {out_json}\n")
    (choice,) = json.loads(out_json.read_text())
    assert choice["fingerprint"] == "box-a"
    assert choice["objective"] == {"name": "size", "metric": "size_bytes"}
    assert choice["recommended"] == "static_int8"
    assert choice["tied"] == ["static_int8", "onnxruntime_static_int8"]
    assert f"recommended: {choice['recommended']}" in out


def test_no_feasible_candidate_exits_1(matrix: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "best", matrix / "b.json", "--budget", "size_ratio<=0.1")
    assert code == 1
    assert "no candidate of digits_cnn meets every constraint (3 measured)" in out
    assert "  static_int8: size_ratio 0.26x breaks <= 0.1x" in out


SEARCH = "test_digits.py::test_best"


def search_candidates() -> list[dict]:
    """A search's own candidates on box-a: onnxruntime is fastest but too large; under the
    size budget static_int8 is surely faster than dynamic_int8. The results' fastest feasible
    variant, onnxruntime_static_int8, is not among them."""
    return [
        record("onnxruntime", 5.0, (4.8, 5.2)),
        record("static_int8", 3.0, (2.9, 3.1), size_ratio=0.26, accuracy=0.949),
        record("dynamic_int8", 1.5, (1.4, 1.6), size_ratio=0.3, accuracy=0.95),
    ]


@pytest.fixture
def searched(tmp_path: Path) -> Path:
    """A merged matrix whose runs also hold a search each (the results JSON's ``searches``):
    box-a's latest, an older box-a run whose search the latest replaces, and box-b's."""
    directory = tmp_path / "searched"
    directory.mkdir()
    a = search_entry(SEARCH, search_candidates(), recommended="static_int8", tied=["static_int8"])
    write_results(directory / "a.json", digits_records(), searches=[a])
    old = search_entry(
        SEARCH,
        [record("openvino_int8", 9.0, (8.9, 9.1), size_ratio=0.27, accuracy=0.946)],
        recommended="openvino_int8",
        tied=["openvino_int8"],
    )
    write_results(
        directory / "a-old.json",
        [record("eager", 1.0, (0.99, 1.01))],
        searches=[old],
        created="2026-11-01T10:00:00+00:00",
    )
    b_candidates = [
        record("openvino_int8", 2.0, (1.9, 2.1), size_ratio=0.27, accuracy=0.946),
        record("static_int8", 1.2, (1.1, 1.3), size_ratio=0.26, accuracy=0.949),
    ]
    b = search_entry(SEARCH, b_candidates, recommended="openvino_int8", tied=["openvino_int8"])
    write_results(
        directory / "b.json",
        [record("static_int8", 2.5, (2.4, 2.6), size_ratio=0.26, accuracy=0.949)],
        fingerprint="box-b",
        searches=[b],
    )
    return directory


def test_best_judges_each_search_among_its_own_candidates_per_fingerprint(
    searched: Path, tmp_path: Path, capsys
) -> None:
    out_json = tmp_path / "choices.json"
    code, out, err = run_cli(capsys, "best", searched, *BUDGETS, "--json", out_json)
    assert (code, err) == (0, "")
    a_results, a_search, b_results, b_search = out.removesuffix(
        f"choices written to {out_json}\n"
    ).split("\n\n")
    assert a_results.startswith("digits_cnn on box-a: objective latency")
    assert "recommended: onnxruntime_static_int8" in a_results
    assert a_search.startswith(
        f"digits_cnn on box-a (search {SEARCH}): objective latency: speedup (higher is better); "
        "constraints: accuracy_drop <= 1.00%, size_ratio <= 0.5x\n"
    )
    # its own candidates only: not the results' variants, nor the older run's search
    variants = {line.split()[1] for line in a_search.splitlines() if line[:1] in "=0123456789"}
    assert variants == {"static_int8", "dynamic_int8"}
    assert "\nrecommended: static_int8, speedup 3x [2.9x, 3.1x]\n" in a_search
    assert "  onnxruntime: size_ratio 1x breaks <= 0.5x" in a_search
    assert "note:" not in out, "the same budgets give the session's answer: nothing to note"
    assert b_results.startswith("digits_cnn on box-b: ")
    assert b_search.startswith(f"digits_cnn on box-b (search {SEARCH}): ")
    assert "\nrecommended: openvino_int8, speedup 2x [1.9x, 2.1x]\n" in b_search
    choices = json.loads(out_json.read_text())
    assert [(c["fingerprint"], c["search"], c["recommended"], c["tied"]) for c in choices] == [
        (
            "box-a",
            None,
            "onnxruntime_static_int8",
            ["onnxruntime_static_int8", "openvino_int8", "dynamic_int8"],
        ),
        ("box-a", SEARCH, "static_int8", ["static_int8"]),
        ("box-b", None, "static_int8", ["static_int8"]),
        ("box-b", SEARCH, "openvino_int8", ["openvino_int8"]),
    ]


def test_merge_marks_the_matrix_from_its_records_not_the_searches(
    searched: Path, tmp_path: Path, capsys
) -> None:
    pytest.importorskip("matplotlib")
    out_html = tmp_path / "matrix.html"
    assert run_cli(capsys, "merge", searched, "--html", out_html, *BUDGETS)[0] == 0
    parser = Cells()
    parser.feed(out_html.read_text())
    section = [row for row in parser.rows if row and row[0] == "digits_cnn"]
    assert [row[1] for row in section] == ["box-a", "box-b"]  # no row for the searches


def test_a_search_read_under_other_budgets_or_rules_says_what_the_session_chose(
    searched: Path, capsys
) -> None:
    code, out, _ = run_cli(capsys, "best", searched / "a.json", "--budget", "accuracy_drop<=1%")
    assert code == 0
    assert f"(search {SEARCH}): objective latency" in out
    assert "recommended: onnxruntime, speedup 5x [4.8x, 5.2x]" in out
    assert (
        "note: in the session this search recommended static_int8 (tied: static_int8) for "
        "objective latency under accuracy_drop <= 1.00%, size_ratio <= 0.5x; this reading asks "
        "for other budgets or another objective\n"
    ) in out
    document = json.loads((searched / "a.json").read_text())
    document["searches"][0]["recommended"] = "dynamic_int8"
    (searched / "a.json").write_text(json.dumps(document))
    code, out, _ = run_cli(capsys, "best", searched / "a.json", *BUDGETS)
    assert code == 0
    assert (
        "note: in the session this search recommended dynamic_int8 (tied: static_int8) for "
        "objective latency under accuracy_drop <= 1.00%, size_ratio <= 0.5x; the same "
        "objective and budgets: the rules that choose differ (another pytest-modelopt "
        "version?)\n"
    ) in out


def test_a_search_that_measured_nothing_recommends_nothing(tmp_path: Path, capsys) -> None:
    empty = {**search_entry(SEARCH, digits_records(), recommended=None, tied=[]), "records": []}
    path = write_results(tmp_path / "r.json", digits_records(), searches=[empty])
    code, out, _ = run_cli(capsys, "best", path, *BUDGETS)
    assert code == 1
    assert "no candidate of digits_cnn meets every constraint (0 measured)" in out
    assert "note:" not in out


def damage(document: dict, how: str) -> None:
    search = document["searches"][0]
    if how == "other model":
        search["records"][1]["spec"] = "resnet18"
    elif how == "search twice":
        document["searches"].append(search)
    elif how == "candidate twice":
        search["records"].append(search["records"][0])
    elif how == "no tied":
        del search["tied"]
    elif how == "bad record":
        del search["records"][0]["latency"]
    elif how == "bad metric":
        search["records"][2]["metrics"]["size_ratio"]["value"] = "small"
    elif how == "bad interval":
        search["records"][0]["metrics"]["throughput"]["interval"] = [3, 1]
    elif how == "bad results metric":
        document["results"][0]["metrics"]["peak_memory_mb"] = {"value": None, "undecidable": 1}


@pytest.mark.parametrize(
    ("how", "place"),
    [
        (
            "other model",
            "searches[0].records[1].spec: 'resnet18' is not the model of its search, 'digits_cnn'",
        ),
        ("search twice", f"searches: tests recorded twice: ['{SEARCH}']"),
        (
            "candidate twice",
            "searches[0].records: tests recorded twice: ['digits_cnn::search[onnxruntime]']",
        ),
        ("no tied", "searches[0]: missing key 'tied'"),
        ("bad record", "searches[0].records[0]: missing key 'latency'"),
        (
            "bad metric",
            "searches[0].records[2].metrics['size_ratio'].value: expected a finite number or "
            'null, got str "small"',
        ),
        (
            "bad interval",
            "searches[0].records[0].metrics['throughput'].interval: interval low 3 is above "
            "its high 1",
        ),
        (
            "bad results metric",
            "results[0].metrics['peak_memory_mb'].undecidable: expected a string or null, "
            "got int 1",
        ),
    ],
)
def test_a_damaged_search_is_an_error_naming_the_file_and_place(
    tmp_path: Path, capsys, how: str, place: str
) -> None:
    entry = search_entry(SEARCH, search_candidates(), recommended="static_int8", tied=[])
    document = results_document(digits_records(), searches=[entry])
    damage(document, how)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(document))
    code, out, err = run_cli(capsys, "best", path, *BUDGETS)
    assert (code, out) == (2, "")
    assert err == f"modelopt: error: results file {path}: {place}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--budget", "acuracy_drop<=1%"],
            "modelopt: error: unknown budget metric 'acuracy_drop'; known metrics: speedup,",
        ),
        (
            ["--budget", "size_ratio<<0.5"],
            "modelopt: error: budget 'size_ratio<<0.5': '<0.5' is not a number (with an optional",
        ),
        (["--objective", "fast"], "modelopt: error: unknown objective 'fast': choose latency"),
        (
            ["--spec", "resnet"],
            "modelopt: error: no results for model resnet; the files hold digits_cnn",
        ),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(
    matrix: Path, capsys, args: list[str], message: str
) -> None:
    code, out, err = run_cli(capsys, "best", matrix, *args)
    assert (code, out) == (2, "")
    assert err.startswith(message), err


def test_unreadable_file_exits_2_naming_it(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "best", tmp_path / "missing.json")
    assert code == 2
    assert err == f"modelopt: error: results file {tmp_path / 'missing.json'}: no such file\n"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run_cli(capsys, "best", bad)
    assert code == 2
    assert err.startswith(f"modelopt: error: results file {bad}:")
    code, _, err = run_cli(capsys, "best", tmp_path)
    assert code == 2  # bad.json is in it
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, "best", empty)
    assert (code, err) == (2, f"modelopt: error: no results files in {empty}\n")


class Cells(HTMLParser):
    """The text of every table cell, row by row, and the headings, of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.headings: list[str] = []
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "h2":
            self._heading = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "h2" and self._heading is not None:
            self.headings.append("".join(self._heading))
            self._heading = None

    def handle_data(self, data: str) -> None:
        for part in (self._cell, self._heading):
            if part is not None:
                part.append(data)


def test_merge_with_budgets_marks_the_matrix_and_says_what_to_ship(
    matrix: Path, tmp_path: Path, capsys
) -> None:
    pytest.importorskip("matplotlib")
    out_html = tmp_path / "matrix.html"
    code, _, err = run_cli(capsys, "merge", matrix, "--html", out_html, *BUDGETS)
    assert (code, err) == (0, "")
    page = out_html.read_text()
    parser = Cells()
    parser.feed(page)
    assert "Which variant to ship" in parser.headings
    rows = {row[0]: row[1:] for row in parser.rows if row}
    # the matrix: a column per machine (box-a, box-b), the marks in each technique's cell
    assert rows["technique"] == ["box-a", "box-b"]
    a_cell, b_cell = rows["onnxruntime_static_int8"]
    assert a_cell.endswith("rank =1 · ★ recommended · tie · Pareto"), a_cell
    # on box-b static_int8 is surely faster, as small and more accurate: off the front
    assert b_cell.endswith("no contract | rank 2"), b_cell
    assert rows["static_int8"][1].endswith("rank =1 · ★ recommended · tie · Pareto")
    assert rows["eager"][0].endswith("excluded: size_ratio 1x breaks <= 0.5x")
    assert rows["pruned_structured+static_int8"][1] == "not run"
    # the section: one row per model and machine
    section = [row for row in parser.rows if row and row[0] == "digits_cnn"]
    assert [row[1] for row in section] == ["box-a", "box-b"]
    assert section[0][2] == "onnxruntime_static_int8 | speedup 4x [3.8x, 4.3x]"
    assert section[0][3] == "openvino_int8, dynamic_int8"
    assert section[1][2] == "static_int8 | speedup 2.5x [2.4x, 2.6x]"
    assert "eager: size_ratio 1x breaks <= 0.5x" in section[1][5]
    assert page.count("★ recommended") == 2


def test_merge_without_budgets_has_no_marks(matrix: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    out_html = tmp_path / "matrix.html"
    assert run_cli(capsys, "merge", matrix, "--html", out_html)[0] == 0
    page = out_html.read_text()
    assert "Which variant to ship" not in page
    assert "★ recommended" not in page
    code, out, err = run_cli(capsys, "merge", matrix, "--html", out_html, "--budget", "speed>=2")
    assert (code, out) == (2, "")
    assert err.startswith("modelopt: error: unknown budget metric 'speed'")


def test_a_reader_that_stops_early_ends_the_command_quietly(matrix: Path) -> None:
    """`modelopt best matrix | head -1`: the pipe's reader is gone before the command writes;
    the command ends with 141 (as if by SIGPIPE) and no traceback."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails, however short the output
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from pytest_modelopt.cli import main; sys.exit(main())",
                "best",
                str(matrix),
                *BUDGETS,
            ],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")
