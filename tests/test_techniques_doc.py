"""docs/techniques.md holds what `modelopt techniques` renders from the registry, kept in step."""

import difflib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_modelopt.catalog import BEGIN, END, generated_block, replace_block
from pytest_modelopt.cli import main
from pytest_modelopt.registry import ENTRY_POINT_GROUP

DOC = Path(__file__).parent.parent / "docs" / "techniques.md"
REGENERATE = "modelopt techniques --update docs/techniques.md"


def modelopt(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in a fresh interpreter: only the built-in (and installed) techniques."""
    return subprocess.run(
        [sys.executable, "-m", "pytest_modelopt.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_docs_techniques_md_is_what_modelopt_techniques_renders() -> None:
    installed = [e.name for e in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]
    if installed:
        pytest.skip(f"third-party techniques installed ({', '.join(installed)}): not in the doc")
    done = modelopt("techniques")
    assert done.returncode == 0, done.stderr
    committed = generated_block(DOC.read_text(encoding="utf-8"), DOC)
    if committed != done.stdout:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                done.stdout.splitlines(keepends=True),
                "docs/techniques.md",
                "modelopt techniques",
            )
        )
        pytest.fail(
            f"docs/techniques.md differs from what `modelopt techniques` renders: run "
            f"`{REGENERATE}` to regenerate it\n{diff}",
            pytrace=False,
        )


def test_update_rewrites_only_the_generated_block(tmp_path: Path) -> None:
    document = tmp_path / "techniques.md"
    document.write_text(f"# Intro\n\nprose\n\n{BEGIN}\nstale\n{END}\n\n## After\n\nmore prose\n")
    done = modelopt("techniques", "--update", str(document))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{document} updated\n"
    text = document.read_text()
    assert text.startswith(f"# Intro\n\nprose\n\n{BEGIN}\n| technique | what it does |")
    assert text.endswith(f"\n{END}\n\n## After\n\nmore prose\n")
    assert "### `torchscript`" in text
    assert "stale" not in text
    again = modelopt("techniques", "--update", str(document))
    assert again.stdout == f"{document} already up to date\n"


def test_update_without_the_markers_is_an_error(tmp_path: Path, capsys) -> None:
    document = tmp_path / "techniques.md"
    document.write_text("# no markers\n")
    assert main(["techniques", "--update", str(document)]) == 2
    assert "no generated block: put the lines" in capsys.readouterr().err
    assert document.read_text() == "# no markers\n"
    assert main(["techniques", "--update", str(tmp_path / "missing.md")]) == 2


def test_the_rendering_shows_requirements_types_defaults_and_help() -> None:
    done = modelopt("techniques")
    text = done.stdout
    assert "### `openvino_int8`" in text
    assert (
        "Needs the packages `openvino` and `nncf` (`pip install 'pytest-modelopt[openvino]'`)."
        in text
    )
    assert "Needs the package `torch` and the CPU extension `avx512_bf16` or `amx_bf16`." in text
    assert "Applies to keras models." in text
    assert (
        '| `importance` | `"l1"` or `"l2"` | `"l1"` | group magnitude norm: `"l1"` or `"l2"` |'
        in text
    )
    assert "| `round_to` | `int` or `None` | `None` |" in text


def test_replace_block_keeps_what_lies_outside() -> None:
    text = f"a\n{BEGIN}\nold\n{END}\nb\n"
    assert replace_block(text, "new\n") == f"a\n{BEGIN}\nnew\n{END}\nb\n"
    assert generated_block(replace_block(text, "new\n")) == "new\n"
