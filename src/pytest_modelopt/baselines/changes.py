"""What a failure says grew: the top lists of an entry diffed against its baseline's.

One diff serves the counted functions (self instructions per call) and the timed operators
(self milliseconds per call, the variant's and, shorter, the reference's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_modelopt.readable import table_lines


@dataclass(frozen=True)
class TopList:
    """What a top list of an entry ranks, for the table of what changed.

    Its entry key, the name of a row, the unit and format of its figures, and where its rows go
    in the results JSON (``json_key``, each row
    ``{json_name: ..., "baseline": ..., "measured": ...}``).
    """

    key: str
    row: str
    unit: str
    digits: int
    json_key: str
    json_name: str
    rows: int = 10  # shown in a failure

    def format(self, value: float) -> str:
        """Format a figure of the list with thousands separators and its digits."""
        return f"{value:,.{self.digits}f}"


FUNCTIONS = TopList("top_functions", "function", "self Ir per call", 0, "functions", "function")
OPERATORS = TopList("top_operators", "operator", "self ms per call", 3, "operators", "operator")
# The reference's table is shorter: it says whether the reference got faster (a speedup falls
# then too), the variant's says what grew.
REFERENCE_OPERATORS = TopList(
    "reference_top_operators",
    "reference operator",
    "self ms per call",
    3,
    "reference_operators",
    "operator",
    rows=5,
)
NO_STORED_PROFILE = (
    "the baseline has no operator profile (recorded by an earlier pytest-modelopt, or where none "
    "could be taken): re-record it with --modelopt-save-baseline to see what grew by operator"
)


def top_diff(
    stored: Mapping[str, float], new: Mapping[str, float], rows: int = 10
) -> list[tuple[str, float | None, float | None]]:
    """Return the names whose figure changed most between two top lists.

    Each list is the top 30 of its run. Rows are (name, baseline, measured); None where a name is
    not in that list.
    """
    stored = _with_libraries(stored, new)
    names = set(stored) | set(new)

    def change(name: str) -> float:
        return abs(new.get(name, 0.0) - stored.get(name, 0.0))

    ranked = sorted(names, key=lambda name: (-change(name), name))[:rows]
    return [(name, stored.get(name), new.get(name)) for name in ranked if change(name) > 0]


def _with_libraries(stored: Mapping[str, float], new: Mapping[str, float]) -> dict[str, float]:
    """Name a stored function of a stripped library as the new run names it.

    Baselines recorded before counted functions named their library hold a bare address
    (``0x1a2b30``) where the new run has ``0x1a2b30 in libfoo.so``: the same function.
    """
    renamed = {}
    for name in new:
        address, separator, _ = name.partition(" in ")
        if separator and address in stored and name not in stored:
            renamed[address] = name
    return {renamed.get(name, name): figure for name, figure in stored.items()}


def format_top_diff(
    stored: Mapping[str, float], new: Mapping[str, float], kind: TopList = FUNCTIONS
) -> str:
    """Format a table of what grew: the rows of a top list whose figure per call changed most."""
    diff = top_diff(stored, new, kind.rows)
    if not diff:
        return ""
    rows = [(f"{kind.row} ({kind.unit})", "baseline", "measured", "change")]
    for name, old, measured in diff:
        growth = (measured or 0.0) - (old or 0.0)
        rows.append(
            (
                name[:60],
                "-" if old is None else kind.format(old),
                "-" if measured is None else kind.format(measured),
                ("+" if growth >= 0 else "") + kind.format(growth),
            )
        )
    title = f"what changed, by {kind.row} (- : not in that run's top 30):"
    return "\n".join([title, *table_lines(rows)])


def what_grew(
    stored: Mapping[str, Any], new: Mapping[str, Any], unavailable: Mapping[str, str] | None = None
) -> tuple[str, dict[str, Any]]:
    """Say why an entry regressed, as far as its top lists tell.

    Return the tables for the failure message, and their rows for the results JSON
    (``functions`` of a counted entry; ``operators`` and ``reference_operators`` of a timed one,
    or ``operators_unavailable`` saying why there are none: ``unavailable`` gives a side's reason
    where it could not be profiled).
    """
    counted = new.get("meter") == "instructions"
    kinds = (FUNCTIONS,) if counted else (OPERATORS, REFERENCE_OPERATORS)
    if not counted:
        why = (unavailable or {}).get("variant")
        if why is None and not new.get(OPERATORS.key):
            why = "this run's variant was not profiled"
        if why is None and not stored.get(OPERATORS.key):
            why = NO_STORED_PROFILE
        if why is not None:
            return f"what changed, by operator: not shown: {why}", {"operators_unavailable": why}
    tables, rows = [], {}
    for kind in kinds:
        old, measured = stored.get(kind.key, {}), new.get(kind.key, {})
        if not measured and kind is REFERENCE_OPERATORS:
            continue  # the reference could not be profiled: its rows would all read "-"
        table = format_top_diff(old, measured, kind)
        if table:
            tables.append(table)
        rows[kind.json_key] = [
            {kind.json_name: name, "baseline": before, "measured": after}
            for name, before, after in top_diff(old, measured, kind.rows)
        ]
    return "\n".join(tables), rows
