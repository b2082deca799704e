"""A failed contract reads like a good pytest failure: the user's line, the table, the reason,
and nothing else (no plugin internals, no third-party debug log, no terminal escape codes)."""

import json
import re

import pytest

# A technique whose variant swaps the two class scores: top-1 agreement 0%, a FAIL without any
# timing luck. Its build logs on third-party loggers at DEBUG, as torch.compile's structured trace
# and nncf do, and on the user's own logger; its note carries an exporter's colour codes.
BROKEN = """
import logging

import pytest
from pytest_modelopt import register_technique
from conftest import Toy, _variant


class Swapped(Toy):
    def __call__(self, x):
        return [[2.0 * x, float(x)]]


@register_technique("fake_swapped", frameworks=("python",))
def build_swapped(ctx):
    trace = logging.getLogger("torch.__trace")
    nncf = logging.getLogger("nncf")
    saved = [(logger, logger.level, logger.propagate) for logger in (trace, nncf)]
    try:
        for logger in (trace, nncf):
            logger.setLevel(logging.DEBUG)
            logger.propagate = True
        for i in range(300):
            trace.debug("trace record %d", i)
            nncf.debug("nncf record %d", i)
        nncf.warning("nncf says something worth a warning")
    finally:
        for logger, level, propagate in saved:
            logger.setLevel(level)
            logger.propagate = propagate
    logging.getLogger("myapp").debug("the user's own record")
    variant = _variant(ctx, ctx.model.work)
    variant.run = Swapped(ctx.model.work)
    variant.notes.append("\\x1b[96mThis is step 1/3\\x1b[0m of the export\\nand a second line")
    return variant


logging.getLogger("myapp").setLevel(logging.DEBUG)  # the user's own logging configuration


@pytest.mark.modelopt(techniques=["fake_swapped"])
def test_toy(modelopt_variant):
    assert logging.getLogger("myapp").level == logging.DEBUG
    modelopt_variant.expect(top1_agreement=">=90%")
"""


def failure_section(lines: list[str]) -> list[str]:
    """The FAILURES section's lines, from the test's header to the short summary."""
    start = next(i for i, line in enumerate(lines) if re.match(r"^_+ test_toy", line))
    end = next(i for i, line in enumerate(lines) if i > start and line.startswith("====="))
    return lines[start:end]


def test_a_failed_contract_reads_like_a_pytest_failure(project: pytest.Pytester) -> None:
    """One run (measuring waits for the machine-wide timing lock), four properties."""
    project.makepyfile(BROKEN)
    result = project.runpytest("--modelopt-json=results.json")
    result.assert_outcomes(failed=1)  # the test body asserted the user's level was untouched
    section = failure_section(result.outlines)
    assert_stops_at_the_users_line(result, "\n".join(section))
    # The whole report of one failure (traceback, table, captured output) fits in a screenful,
    # though the build logged hundreds of third-party DEBUG records.
    assert len(section) <= 60, "\n".join(section)
    assert_third_party_debug_is_not_captured("\n".join(section))
    assert_notes_are_one_clean_line(result, project)


def assert_stops_at_the_users_line(result: pytest.RunResult, text: str) -> None:
    result.stdout.fnmatch_lines(
        [
            '>       modelopt_variant.expect(top1_agreement=">=90%")',
            "E       *toy?fake_swapped?: contract broken (top1_agreement)",
            "E       *metric*measured*budget*verdict*",
            "E       *top1_agreement*0.00%*>= 90*FAIL*",
        ]
    )
    assert "variant_result.py" not in text, text  # no frame of the plugin's own source
    assert "__tracebackhide__" not in text, text
    assert "modelopt_variant = <VariantContract toy[fake_swapped]>" in text, text


def assert_third_party_debug_is_not_captured(text: str) -> None:
    assert "trace record" not in text, text
    assert "nncf record" not in text, text
    assert "nncf says something worth a warning" in text, text  # WARNING still reaches the log
    assert "the user's own record" in text, text  # the user's logger is captured as configured


def assert_notes_are_one_clean_line(result: pytest.RunResult, project: pytest.Pytester) -> None:
    from pytest_modelopt.cli import main

    output = result.stdout.str()
    assert "\x1b" not in output
    assert "[96m" not in output
    result.stdout.fnmatch_lines(["note (toy[[]fake_swapped[]]): This is step 1/3 of the export …"])
    assert "a second line" not in output
    # A results file written before notes were cleaned still renders clean.
    path = project.path / "results.json"
    document = json.loads(path.read_text())
    document["results"][0]["variant"]["notes"] = ["\x1b[96mraw\x1b[0m note\nsecond line"]
    document["results"][0]["technique"] = "fake\x1b[31m_swapped\nx"
    path.write_text(json.dumps(document))
    assert main(["report", str(path)]) == 0
    assert main(["report", str(path), "--html", str(project.path / "report.html")]) == 0
    page = (project.path / "report.html").read_text()
    assert "\x1b" not in page
    assert "[96m" not in page
    assert "second line" not in page
    assert "raw note …" in page


@pytest.mark.parametrize("flag", ["--full-trace", "-vv"])
def test_the_plugin_frames_show_on_request(project: pytest.Pytester, flag: str) -> None:
    project.makepyfile(BROKEN)
    result = project.runpytest(flag)
    result.assert_outcomes(failed=1)
    text = "\n".join(failure_section(result.outlines))
    assert "variant_contract.py" in text, text
    assert "raise ContractViolation(" in text, text


def test_third_party_filter_leaves_loggers_as_they_were() -> None:
    import logging

    from pytest_modelopt.readable import quiet_third_party_logs

    user, torch_trace = logging.getLogger("myapp.readable"), logging.getLogger("torch.__trace")
    before = [
        (lg.level, lg.propagate, list(lg.handlers), list(lg.filters)) for lg in (user, torch_trace)
    ]
    root_filters = [list(h.filters) for h in logging.getLogger().handlers]
    with quiet_third_party_logs():
        pass
    after = [
        (lg.level, lg.propagate, list(lg.handlers), list(lg.filters)) for lg in (user, torch_trace)
    ]
    assert after == before
    assert [list(h.filters) for h in logging.getLogger().handlers] == root_filters


def test_one_line() -> None:
    from pytest_modelopt.readable import one_line

    assert one_line("\x1b[96mThis is step 1/3\x1b[0m") == "This is step 1/3"
    assert one_line("[96mThis is step 1/3[0m") == "This is step 1/3"  # ESC lost on the way
    assert one_line("first\n\nsecond") == "first …"
    assert one_line("\n  indented\n") == "indented"
    assert one_line("a\tb\x07") == "a b"
    assert len(one_line("x" * 1000)) == 240
    assert one_line("x" * 1000, limit=None) == "x" * 1000
