"""What keeps a failed contract readable.

The plugin's frames hidden from its traceback, third-party log records below WARNING kept out of
what pytest captures while a variant is built and timed, and every string bound for a table one
line without terminal escape codes.

Imports neither pytest nor an ML library: ``variant_result.py`` works without pytest.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

# -- traceback ------------------------------------------------------------------------------------

# One entry per configured pytest session (pytester runs nest them): show the plugin's frames?
_SHOW_PLUGIN_FRAMES: list[bool] = []


def hide_plugin_frame(excinfo: Any) -> bool:
    """Decide ``__tracebackhide__`` for the plugin frames that raise a contract's failure.

    The traceback stops at the user's line, unless the exception is not one of ours (a bug in the
    plugin shows where it happened) or the session asked for everything (``-vv``;
    ``--full-trace`` ignores ``__tracebackhide__`` by itself).
    """
    from pytest_modelopt.errors import ModeloptError

    if _SHOW_PLUGIN_FRAMES and _SHOW_PLUGIN_FRAMES[-1]:
        return False
    value = getattr(excinfo, "value", None)
    return isinstance(value, ModeloptError)


def push_frame_policy(show: bool) -> None:
    """Start a pytest session's policy: show the plugin's frames in its failures (-vv) or not."""
    _SHOW_PLUGIN_FRAMES.append(show)


def pop_frame_policy() -> None:
    """End the session's policy: the enclosing session's policy applies again."""
    if _SHOW_PLUGIN_FRAMES:
        _SHOW_PLUGIN_FRAMES.pop()


# -- text bound for a table -----------------------------------------------------------------------

# CSI sequences (colours, cursor moves), OSC sequences (titles, links), lone two-byte escapes.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
# An SGR colour code whose ESC byte was lost on the way ("[96m"): no note means that literally.
_ORPHAN_SGR = re.compile(r"\[\d{1,3}(?:;\d{1,3})*m")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
NOTE_LIMIT = 240


def one_line(text: Any, limit: int | None = NOTE_LIMIT) -> str:
    """Return ``text`` as one line of a table.

    Terminal escape codes and control characters removed, the first non-empty line kept (an
    ellipsis says more followed), at most ``limit`` characters.

    ``[96mThis is step 1/3[0m`` with its ESC bytes reads ``This is step 1/3``.
    """
    text = _ESCAPES.sub("", str(text)).replace("\t", " ").replace("\r", "\n")
    text = _CONTROL.sub("", _ORPHAN_SGR.sub("", text))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if len(lines) > 1:
        first += " …"
    if limit is not None and len(first) > limit:
        first = first[: limit - 1].rstrip() + "…"
    return first


def first_few(items: Sequence[str], shown: int = 5) -> str:
    """Return the first ``shown`` items joined with commas, and how many more there are."""
    more = len(items) - shown
    return ", ".join(items[:shown]) + (f" and {more} more" if more > 0 else "")


def table_lines(rows: Sequence[Sequence[Any]]) -> list[str]:
    """Lay out ``rows`` in aligned columns, a rule under the first (the header).

    Each cell is made one line (``one_line``, at any length); no line ends in spaces.
    """
    cells = [[one_line(cell, limit=None) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = []
    for index, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


# -- third-party logs -----------------------------------------------------------------------------

# Loggers of the libraries that build and run variants. torch.compile's structured trace logger
# (``torch.__trace``) is always at DEBUG; nncf logs at INFO; TensorFlow logs through absl.
THIRD_PARTY_LOGGERS = (
    "torch",
    "torchvision",
    "torchao",
    "torch_pruning",
    "timm",
    "onnx",
    "onnx_ir",
    "onnxscript",
    "onnxruntime",
    "openvino",
    "nncf",
    "tensorflow",
    "tf_keras",
    "keras",
    "absl",
    "ai_edge_litert",
    "tensorrt",
    "filelock",
    "matplotlib",
    "PIL",
)


def is_third_party(name: str) -> bool:
    """Return whether logger ``name`` is one of the libraries whose chatter is kept quiet."""
    return any(name == root or name.startswith(root + ".") for root in THIRD_PARTY_LOGGERS)


class _BelowWarningFromThirdParty(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not is_third_party(record.name)


_FILTER = _BelowWarningFromThirdParty()


def _capture_handlers() -> list[logging.Handler]:
    """Return the handlers pytest put on the root logger to capture records (report, caplog)."""
    try:
        from _pytest.logging import LogCaptureHandler
    except ImportError:  # pytest is not here: nothing captures
        return []
    return [h for h in logging.getLogger().handlers if isinstance(h, LogCaptureHandler)]


@contextlib.contextmanager
def quiet_third_party_logs() -> Iterator[None]:
    """Keep third-party records below WARNING out of what pytest captures while the block runs.

    What pytest captures is the failure report's "Captured log" section and caplog; the filter
    is removed again afterwards.

    No logger's level, propagation or handlers change: the user's configuration of their own
    loggers, and a trace a library writes on request (``TORCH_TRACE``), are left as they are.
    """
    handlers = [h for h in _capture_handlers() if _FILTER not in h.filters]
    for handler in handlers:
        handler.addFilter(_FILTER)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(_FILTER)
