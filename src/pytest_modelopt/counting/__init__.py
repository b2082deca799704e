"""The instruction-counting meter: each side's calls counted under valgrind's callgrind.

Timing between two sessions drifts (speedups moved up to 20% between quiet sessions here);
instructions counted under simulation do not. Both sides of a comparison are rebuilt from their
:class:`~pytest_modelopt.worker.Loader` in one worker process that runs under callgrind, with
threads fixed to one. The engine (:class:`~pytest_modelopt.measure.Interleaver`) asks each side
for samples as it asks a timing side; a sample here is the instructions of one call.

- ``valgrind``: valgrind on this machine, its options, and client requests from Python;
- ``counts``: callgrind dumps read into ``Counts``, and the estimated-cycles model;
- ``client``: ``CountingWorker``, the session's process under callgrind, from this side;
- ``sides``: ``CountedPair`` and ``CountedSide``, a comparison's pair and a meter per side;
- ``server``: inside the worker (``python -m pytest_modelopt.counting``, ``__main__``).

Every public name is importable from here.
"""

from pytest_modelopt.counting.client import CountingWorker, close_shared_workers, shared_worker
from pytest_modelopt.counting.counts import (
    CYCLES_MODEL,
    EVENTS,
    TOP_FUNCTIONS,
    Counts,
    estimated_cycles,
    parse_callgrind,
    per_call,
    total_instructions,
)
from pytest_modelopt.counting.sides import (
    COUNTED_ROUNDS,
    ISA_NOTE,
    CountedPair,
    CountedSide,
    counted_sides,
    counting_settings,
    single_threaded,
)
from pytest_modelopt.counting.valgrind import (
    DUMP_STATS_AT,
    RUNNING_ON_VALGRIND,
    START_INSTRUMENTATION,
    STOP_INSTRUMENTATION,
    TOGGLE_COLLECT,
    VALGRIND_ENV,
    VALGRIND_OPTIONS,
    ClientRequests,
    ValgrindMissing,
    find_valgrind,
    valgrind_version,
)

__all__ = [
    "COUNTED_ROUNDS",
    "CYCLES_MODEL",
    "DUMP_STATS_AT",
    "EVENTS",
    "ISA_NOTE",
    "RUNNING_ON_VALGRIND",
    "START_INSTRUMENTATION",
    "STOP_INSTRUMENTATION",
    "TOGGLE_COLLECT",
    "TOP_FUNCTIONS",
    "VALGRIND_ENV",
    "VALGRIND_OPTIONS",
    "ClientRequests",
    "CountedPair",
    "CountedSide",
    "CountingWorker",
    "Counts",
    "ValgrindMissing",
    "close_shared_workers",
    "counted_sides",
    "counting_settings",
    "estimated_cycles",
    "find_valgrind",
    "parse_callgrind",
    "per_call",
    "shared_worker",
    "single_threaded",
    "total_instructions",
    "valgrind_version",
]
