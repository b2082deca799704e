"""The pickler the build cache saves torch objects with: ``torch.save(..., pickle_module=...)``.

torch.ao's quantized modules (Conv, Linear, ...) pickle their settings and weights through a
``__getstate__`` of their own, and their ``__setstate__`` sets them on an object that
``nn.Module.__init__`` never ran on (torch 2.14): unpickled, such a module has no ``_modules``,
and an FX graph module that holds one (FX static_int8, qat_int8) fails to load ("'Conv2d' object
has no attribute '_modules'"). This pickler stores them as their own ``__deepcopy__`` copies
them: a module initialized first, then given that state.
"""

from __future__ import annotations

import pickle
from typing import Any

__all__ = ["Pickler", "Unpickler", "load", "rebuilt_module"]

Unpickler = pickle.Unpickler
load = pickle.load


class Pickler(pickle.Pickler):
    """A pickler that stores torch.ao's quantized modules so that they load back whole."""

    def reducer_override(self, obj: Any) -> Any:
        """Reduce a module with a ``__getstate__`` of its own to ``rebuilt_module``."""
        if _has_own_state(obj):
            return rebuilt_module, (type(obj), obj.__getstate__())
        return NotImplemented


def rebuilt_module(cls: Any, state: Any) -> Any:
    """Make a module of ``cls`` as ``nn.Module.__init__`` would, then give it ``state``."""
    import torch

    module = cls.__new__(cls)
    torch.nn.Module.__init__(module)
    module.__setstate__(state)
    return module


def _has_own_state(obj: Any) -> bool:
    """Return whether ``obj`` is a torch.ao module that pickles its state as a tuple."""
    cls = type(obj)
    if not cls.__module__.startswith("torch.ao.nn."):
        return False
    import torch

    return isinstance(obj, torch.nn.Module) and "__getstate__" in _defined_by(cls)


def _defined_by(cls: type) -> set[str]:
    """Return the names the classes of ``cls``'s MRO below ``nn.Module`` define."""
    import torch

    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is torch.nn.Module:
            break
        names |= set(vars(klass))
    return names
