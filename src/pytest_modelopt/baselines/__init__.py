"""Baselines: the last accepted measurements of each test, stored per hardware fingerprint.

- ``store``: the files (``<root>/<fingerprint>/<module>-<hash>.json``), read and validated,
  saved and pruned under the fingerprint directory's lock (``BaselineStore``);
- ``entries``: the typed entry (``BaselineEntry``), made from a result record, and the records
  too disturbed to store;
- ``tolerances``: how far each metric may move (``Tolerances``, the marker's overrides);
- ``gate``: the regression rules (``compare``) and the table of a comparison;
- ``changes``: what a failure says grew (``what_grew``, a diff of top lists).

Every public name is importable from here.
"""

from pytest_modelopt.baselines.changes import (
    FUNCTIONS,
    NO_STORED_PROFILE,
    OPERATORS,
    REFERENCE_OPERATORS,
    TopList,
    format_top_diff,
    top_diff,
    what_grew,
)
from pytest_modelopt.baselines.entries import (
    DISTURBED_FACTOR,
    BaselineEntry,
    StoredValue,
    disturbed_records,
    entry_from_record,
)
from pytest_modelopt.baselines.gate import (
    ACCURACY_METRICS,
    BaselineCheck,
    compare,
    format_baseline_checks,
)
from pytest_modelopt.baselines.store import (
    ENTRY_SHAPE,
    FILE_SHAPE,
    OBTAINED_SUFFIX,
    SCHEMA,
    BaselineStore,
    SaveReport,
    baseline_filename,
    counted_fingerprint,
    dump,
    hardware_differences,
    hardware_record,
    load_baseline_file,
    module_of,
)
from pytest_modelopt.baselines.tolerances import Tolerances, choice_tolerance

__all__ = [
    "ACCURACY_METRICS",
    "DISTURBED_FACTOR",
    "ENTRY_SHAPE",
    "FILE_SHAPE",
    "FUNCTIONS",
    "NO_STORED_PROFILE",
    "OBTAINED_SUFFIX",
    "OPERATORS",
    "REFERENCE_OPERATORS",
    "SCHEMA",
    "BaselineCheck",
    "BaselineEntry",
    "BaselineStore",
    "SaveReport",
    "StoredValue",
    "Tolerances",
    "TopList",
    "baseline_filename",
    "choice_tolerance",
    "compare",
    "counted_fingerprint",
    "disturbed_records",
    "dump",
    "entry_from_record",
    "format_baseline_checks",
    "format_top_diff",
    "hardware_differences",
    "hardware_record",
    "load_baseline_file",
    "module_of",
    "top_diff",
    "what_grew",
]
