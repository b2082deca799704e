"""A technique's parameters: a frozen dataclass per technique, and how values are checked.

Each field's default is the parameter's default, its type what a value must be, and
``metadata={"help": ...}`` (written with :func:`param`) what it means. Values given in markers or
to ``Evaluator`` are checked against the type where it can be checked (:func:`accepts`), and
``modelopt techniques`` writes the types as words (:func:`type_name`).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import numbers
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

T = TypeVar("T")

_TYPES: dict[type[Any], dict[str, Any]] = {}  # each parameters class's resolved field types


def param(default: T, meaning: str) -> T:
    """Declare a technique parameter: its default, and what it means (`modelopt techniques`)."""
    declared: T = dataclasses.field(default=default, metadata={"help": meaning})
    return declared


def parameter_defaults(parameters: type[Any] | None) -> dict[str, Any]:
    """Return the default of each field of a parameters dataclass, by name ({} for None)."""
    if parameters is None:
        return {}
    defaults = {}
    for item in dataclasses.fields(parameters):
        if item.default_factory is not dataclasses.MISSING:
            defaults[item.name] = item.default_factory()
        else:
            defaults[item.name] = item.default
    return defaults


def parameter_types(parameters: type[Any]) -> dict[str, Any]:
    """Return the declared type of each field of a parameters dataclass, by name.

    String annotations (``from __future__ import annotations``) are resolved in the module that
    declares the class, once; a field whose annotation cannot be resolved accepts any value.
    """
    if parameters not in _TYPES:
        try:
            _TYPES[parameters] = typing.get_type_hints(parameters)
        except Exception:  # a name imported for type checkers only: check nothing, not fail
            _TYPES[parameters] = {
                item.name: Any if isinstance(item.type, str) else item.type
                for item in dataclasses.fields(parameters)
            }
    return _TYPES[parameters]


def accepts(expected: Any, value: Any) -> bool:
    """Say whether ``value`` is of the type ``expected``, where that can be checked.

    Checked: None, bool, int (not bool), float (an int too), str, ``Literal`` choices, a
    callable, and unions of these; any other type accepts every value.
    """
    origin = typing.get_origin(expected)
    if origin is typing.Union or origin is types.UnionType:
        return any(accepts(choice, value) for choice in typing.get_args(expected))
    if origin is Literal:
        return any(
            value == choice and type(value) is type(choice) for choice in typing.get_args(expected)
        )
    if origin is collections.abc.Callable or expected is collections.abc.Callable:
        return callable(value)
    if expected is None or expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    return True


def type_name(expected: Any, show: Callable[[Any], str] = repr) -> str:
    """Return how a parameter's type reads: ``float or None``, ``'script' or 'trace'``.

    ``show`` writes a ``Literal`` choice (``repr`` by default).
    """
    choices = type_alternatives(expected, show)
    if len(choices) == 1:
        return choices[0]
    return f"{', '.join(choices[:-1])} or {choices[-1]}"


def type_alternatives(expected: Any, show: Callable[[Any], str] = repr) -> list[str]:
    """Return the alternatives a parameter's type allows, each as :func:`type_name` writes it.

    ``float | None`` gives ``["float", "None"]``; ``Literal["l1", "l2"]``, ``["'l1'", "'l2'"]``.
    """
    origin = typing.get_origin(expected)
    if origin is typing.Union or origin is types.UnionType:
        return [
            name for choice in typing.get_args(expected) for name in type_alternatives(choice, show)
        ]
    if origin is Literal:
        return [show(choice) for choice in typing.get_args(expected)]
    if origin is collections.abc.Callable or expected is collections.abc.Callable:
        return ["a callable"]
    if expected is None or expected is type(None):
        return ["None"]
    if expected is Any:
        return ["any value"]
    return [getattr(expected, "__name__", str(expected))]


def untyped_parameters(name: str, defaults: Mapping[str, Any]) -> type[Any]:
    """Return a frozen dataclass of ``defaults``' names, each of any type: the older form."""
    fields = [
        (key, Any, dataclasses.field(default_factory=functools.partial(_same, value)))
        for key, value in defaults.items()
    ]
    return dataclasses.make_dataclass(f"{name}_parameters", fields, frozen=True)


def _same(value: Any) -> Any:
    return value


def check_parameters_class(name: str, parameters: type[Any]) -> None:
    """Raise TypeError unless ``parameters`` is a frozen dataclass with a default per field."""
    if not (isinstance(parameters, type) and dataclasses.is_dataclass(parameters)):
        raise TypeError(f"technique {name!r}: params must be a dataclass, got {parameters!r}")
    if not getattr(parameters, "__dataclass_params__").frozen:  # noqa: B009
        raise TypeError(f"technique {name!r}: declare {parameters.__name__} frozen=True")
    for item in dataclasses.fields(parameters):
        if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
            raise TypeError(f"technique {name!r}: parameter {item.name!r} has no default")
