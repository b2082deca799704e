"""The README's examples, run as written: a block marked ``<!-- readme-example: NAME -->`` is
taken from README.md as it is, written into a test module and run by pytest."""

import json
import re
from pathlib import Path

import pytest

# Imported here, before pytester saves sys.modules, so that the runs below do not unload it.
pytest.importorskip("torch")

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_block(name: str) -> str:
    """The python code block that follows ``<!-- readme-example: name -->`` in the README."""
    text = README.read_text()
    marker = f"<!-- readme-example: {name} -->"
    assert text.count(marker) == 1, f"README.md must mark exactly one block with {marker}"
    match = re.match(r"\s*```python\n(.*?)\n```", text.split(marker, 1)[1], re.DOTALL)
    assert match, f"{marker} must be followed by a ```python block"
    return match.group(1)


def test_the_custom_model_section_runs_as_written(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_text_classifier=readme_block("custom-model"))
    # The README's command line, and a results file to check what was judged.
    result = pytester.runpytest("--modelopt-max-time=2", "--modelopt-json=run.json")
    result.assert_outcomes(passed=2)
    records = {
        r["technique"]: r for r in json.loads((pytester.path / "run.json").read_text())["results"]
    }
    judged = {
        name: sorted(c["metric"] for c in record["checks"]) for name, record in records.items()
    }
    # The body's budget on both, the marker's on its own technique only.
    assert judged == {
        "torchscript": ["accuracy_drop", "max_abs_error"],
        "dynamic_int8": ["accuracy_drop", "max_abs_error", "size_ratio"],
    }
    for record in records.values():
        assert record["verdict"] == "PASS"
        # The labels reached the measurement: accuracy is measured, not only agreement.
        assert {"accuracy", "reference_accuracy", "accuracy_drop"} <= set(record["accuracy"])
    # What the README says of dynamic_int8: its embedding stays fp32, the file barely shrinks.
    sizes = records["dynamic_int8"]["sizes"]
    assert 0.90 <= sizes["variant_bytes"] / sizes["reference_bytes"] <= 0.97
    assert records["dynamic_int8"]["variant"]["details"]["fp32_weights"] == {"Embedding": 64000}
    result.stdout.fnmatch_lines(
        [
            "note (text_classifier[[]dynamic_int8[]]): dynamic_int8: int8 layers: GRU x1, "
            "Linear x1; weights left in fp32: Embedding 64,000 (91% of the model's weights): the "
            "size shrinks little"
        ]
    )
