"""Counts: callgrind's events of a counted stretch, read from its dump, and the cost model.

Estimated cycles use the model of Itamar Turner-Trauring (pythonspeed.com, "consistent
benchmarking in CI"), which iai and CodSpeed's first instrument adopted: an L1 hit costs 1 cycle,
an access that misses L1 but hits the last level 5, one that goes to RAM 35::

    cycles = (Ir + Dr + Dw - L1 misses) + 5 * (L1 misses - LL misses) + 35 * LL misses
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_modelopt.worker import WorkerUnavailable

EVENTS = ("Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")
CYCLES_MODEL = "L1 hit 1, last-level hit 5, RAM 35 cycles (Turner-Trauring, as iai and CodSpeed)"


TOP_FUNCTIONS = 30


@dataclass(frozen=True)
class Counts:
    """Callgrind's events of one counted stretch, and the functions that cost most (self Ir)."""

    events: dict[str, float]
    functions: dict[str, float] = field(default_factory=dict)

    @property
    def instructions(self) -> float:
        """Return the instructions executed (callgrind's ``Ir``)."""
        return self.events.get("Ir", 0.0)

    @property
    def estimated_cycles(self) -> float:
        """Return the cycles estimated from the instructions and simulated cache misses."""
        return estimated_cycles(self.events)

    def minus(self, other: Counts) -> Counts:
        """Return these counts less an overhead (the empty bracket), never below zero."""
        events = {
            name: max(0.0, value - other.events.get(name, 0.0))
            for name, value in self.events.items()
        }
        return Counts(events, self.functions)


def estimated_cycles(events: Mapping[str, float]) -> float:
    """Cycles from simulated cache behaviour (the module docstring's model)."""
    accesses = events.get("Ir", 0.0) + events.get("Dr", 0.0) + events.get("Dw", 0.0)
    l1_misses = events.get("I1mr", 0.0) + events.get("D1mr", 0.0) + events.get("D1mw", 0.0)
    ll_misses = events.get("ILmr", 0.0) + events.get("DLmr", 0.0) + events.get("DLmw", 0.0)
    return (accesses - l1_misses) + 5 * (l1_misses - ll_misses) + 35 * ll_misses


def total_instructions(path: Path) -> float:
    """Read only the instructions total of a callgrind dump: its header and its last lines.

    For the counting worker's own calibration, where parsing the whole dump would allocate
    enough to change what the calls counted after it cost (allocator state).
    """
    with path.open("rb") as dump:
        head = dump.read(_EDGE)
        dump.seek(max(0, path.stat().st_size - _EDGE))
        tail = dump.read()
    names: list[bytes] = []
    summary: list[bytes] = []
    for line in head.splitlines():
        if line.startswith(b"events:"):
            names = line.split()[1:]
        elif line.startswith(b"summary:"):
            summary = line.split()[1:]
    totals = [line.split()[1:] for line in tail.splitlines() if line.startswith(b"totals:")]
    values = totals[-1] if totals else summary
    if b"Ir" not in names or len(values) <= names.index(b"Ir"):
        raise WorkerUnavailable(f"callgrind dump {path} has no totals: valgrind failed to write it")
    return float(values[names.index(b"Ir")])


_EDGE = 8192  # bytes read from each end of a dump: the header and the totals line


def parse_callgrind(path: Path, top: int = TOP_FUNCTIONS) -> Counts:
    """Read the totals of a callgrind dump and its ``top`` functions by self instructions.

    A cost line follows a ``fn=`` line (self cost) or a ``calls=`` line (the inclusive cost of
    that call, which is not the caller's own and is skipped).
    """
    names: list[str] = []
    totals: list[float] | None = None
    self_ir: dict[str, float] = {}
    function = ""
    binary = ""
    after_call = False
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith("events:"):
                names = line.split()[1:]
            elif line.startswith("totals:") or (line.startswith("summary:") and totals is None):
                totals = [float(value) for value in line.split()[1:]]
            elif line.startswith("ob="):
                binary = Path(line[3:].strip()).name
            elif line.startswith("fn="):
                function = line[3:].strip()
                # A stripped library's functions are bare addresses: say whose they are.
                if function.startswith("0x") and binary:
                    function = f"{function} in {binary}"
            elif line.startswith("calls="):
                after_call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_call:
                    after_call = False
                    continue
                costs = line.split()[1:]
                if costs and function:
                    self_ir[function] = self_ir.get(function, 0.0) + float(costs[0])
    if totals is None or not names:
        raise WorkerUnavailable(f"callgrind dump {path} has no totals: valgrind failed to write it")
    events = {
        name: totals[index] if index < len(totals) else 0.0 for index, name in enumerate(names)
    }
    ranked = sorted(self_ir.items(), key=lambda item: -item[1])[:top]
    return Counts(events, dict(ranked))


def per_call(counts: list[Counts]) -> dict[str, Any]:
    """Summarize counted calls: per-call medians, estimated cycles, the last call's top functions.

    Medians of events are robust to a call that an allocator's trim or a lazy cache made dearer.
    """
    if not counts:
        return {}
    events = {name: statistics.median(c.events.get(name, 0.0) for c in counts) for name in EVENTS}
    return {
        "instructions": events["Ir"],
        "estimated_cycles": estimated_cycles(events),
        "events": events,
        "calls": len(counts),
        "top_functions": counts[-1].functions,
    }
