"""Checking a loaded JSON document against a declared shape, with errors that name the place.

A shape is a tag (``"str"``, ``"int"``, ``"number"``, ``"positive"``, ``"interval"``,
``"dict"``, ``"list"``, ``"any"``; ``"str?"``, ``"number?"`` and ``"interval?"`` also accept
null), a dict of keys to shapes (a key ending in ``?`` is optional; other keys are allowed and
ignored), or ``("map", shape)`` / ``("list", shape)`` for a str-keyed mapping or a list whose
values all have ``shape``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pytest_modelopt.errors import InvalidFileError

Shape = Any


class ShapeError(ValueError):
    """A value that does not have its shape; the message starts with the place (or "top level")."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where or 'top level'}: {problem}")


def check(value: Any, shape: Shape, where: str = "") -> None:
    """Raise ShapeError naming the first place where ``value`` does not have ``shape``."""
    if isinstance(shape, dict):
        _check_object(value, shape, where)
    elif isinstance(shape, tuple):
        kind, inner = shape
        if kind == "map":
            if not isinstance(value, dict):
                raise ShapeError(where, f"expected an object, got {_kind(value)}")
            for key, item in value.items():
                check(item, inner, f"{where}[{key!r}]")
        else:
            if not isinstance(value, list):
                raise ShapeError(where, f"expected a list, got {_kind(value)}")
            for index, item in enumerate(value):
                check(item, inner, f"{where}[{index}]")
    else:
        _check_tag(value, shape, where)


def _check_object(value: Any, shape: dict[str, Shape], where: str) -> None:
    if not isinstance(value, dict):
        raise ShapeError(where, f"expected an object, got {_kind(value)}")
    for key, inner in shape.items():
        optional = key.endswith("?")
        name = key.rstrip("?")
        if name not in value:
            if optional:
                continue
            raise ShapeError(where, f"missing key {name!r}")
        check(value[name], inner, f"{where}.{name}" if where else name)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _check_tag(value: Any, tag: str, where: str) -> None:
    if tag == "any":
        return
    if tag == "str":
        ok = isinstance(value, str)
    elif tag == "int":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    elif tag == "number":
        ok = _is_number(value)
    elif tag == "positive":
        ok = _is_number(value) and value > 0
    elif tag == "number?":
        ok = value is None or _is_number(value)
    elif tag == "dict":
        ok = isinstance(value, dict)
    elif tag == "list":
        ok = isinstance(value, list)
    elif tag == "str?":
        ok = value is None or isinstance(value, str)
    elif tag in {"interval", "interval?"}:
        if value is not None or tag == "interval":
            _check_interval(value, where)
        return
    else:  # pragma: no cover - a programming error in a declared shape
        raise AssertionError(f"unknown shape tag {tag!r}")
    if not ok:
        wanted = {
            "int": "a non-negative integer",
            "number": "a finite number",
            "positive": "a finite number above 0",
            "number?": "a finite number or null",
            "str?": "a string or null",
        }.get(tag, f"a {tag}")
        raise ShapeError(where, f"expected {wanted}, got {_kind(value)}")


def _check_interval(value: Any, where: str) -> None:
    if not (isinstance(value, list) and len(value) == 2):
        raise ShapeError(where, f"expected [low, high] (null for unbounded), got {_kind(value)}")
    low, high = value
    for side in value:
        if side is not None and not _is_number(side):
            raise ShapeError(where, f"interval bounds must be numbers or null, got {_kind(side)}")
    if low is not None and high is not None and low > high:
        raise ShapeError(where, f"interval low {low} is above its high {high}")


def _kind(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, float) else repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def load_json(path: Path, shape: Shape, what: str) -> Any:
    """Read and check a JSON file; every problem is an InvalidFileError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidFileError(f"{what} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidFileError(f"{what} {path}: cannot be read: {error}") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise InvalidFileError(f"{what} {path}: not valid JSON: {error}") from None
    try:
        check(data, shape)
    except ShapeError as error:
        raise InvalidFileError(f"{what} {path}: {error}") from None
    return data


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed (not standard JSON)")


def finite_or_none(value: float | None) -> float | None:
    """JSON has no infinity: an unbounded side of an interval is stored as null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)
