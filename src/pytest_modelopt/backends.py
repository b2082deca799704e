"""The backends: one record each, for the registry, the reports and the device listing.

A backend is what a technique names with ``backend=``: the modules it imports, the extra of this
package that installs them, the distributions whose versions are recorded with every result, and
how to ask it for its devices. Adding a backend is adding one record here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pytest_modelopt import devices


@dataclass(frozen=True)
class Backend:
    """One backend: what it imports and installs, what is recorded of it, how it lists devices.

    ``extra`` is empty for a core dependency; ``devices`` is None for a library that has no
    devices of its own (an optimization toolkit on top of a runtime).
    """

    name: str
    modules: tuple[str, ...]
    extra: str
    distributions: tuple[str, ...]
    devices: Callable[[], dict[str, Any]] | None = None


BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (
        Backend("torch", ("torch",), "", ("torch",), devices.torch_devices),
        Backend(
            "onnxruntime",
            ("onnx", "onnxruntime"),
            "onnx",
            ("onnx", "onnxruntime"),
            devices.onnxruntime_devices,
        ),
        Backend("openvino", ("openvino",), "openvino", ("openvino",), devices.openvino_devices),
        Backend("nncf", ("nncf",), "openvino", ("nncf",)),
        Backend(
            "tensorflow",
            ("tensorflow",),
            "tensorflow",
            ("tensorflow", "tensorflow-cpu"),
            devices.tensorflow_devices,
        ),
        Backend("litert", ("ai_edge_litert",), "tensorflow", ("ai-edge-litert",)),
        Backend("torch_pruning", ("torch_pruning",), "pruning", ("torch-pruning",)),
        Backend("torchao", ("torchao",), "torchao", ("torchao",)),
    )
}
# Recorded with every result beside the backends' own: this package, and what the models use.
CORE_DISTRIBUTIONS = ("pytest-modelopt", "timm", "numpy")


def modules_of(names: Iterable[str]) -> tuple[str, ...]:
    """Return the modules the named backends import; ValueError names an unknown backend."""
    modules: list[str] = []
    for name in names:
        if name not in BACKENDS:
            known = ", ".join(sorted(BACKENDS))
            raise ValueError(f"unknown backend {name!r}; known backends: {known}")
        modules += BACKENDS[name].modules
    return tuple(dict.fromkeys(modules))


def extras_for(modules: Iterable[str]) -> list[str]:
    """Return the extras of this package that install any of ``modules``, sorted."""
    wanted = set(modules)
    return sorted({b.extra for b in BACKENDS.values() if b.extra and set(b.modules) & wanted})


def install_hint(modules: Iterable[str]) -> str:
    """Return how to install ``modules``: this package's extra where one has them, else pip."""
    modules = list(modules)
    extras = extras_for(modules)
    if extras:
        return f"pip install 'pytest-modelopt[{','.join(extras)}]'"
    return f"pip install {' '.join(modules)}"


def tracked_distributions() -> tuple[str, ...]:
    """Return the distributions whose versions are recorded with every result."""
    backends = (name for backend in BACKENDS.values() for name in backend.distributions)
    return tuple(dict.fromkeys((*CORE_DISTRIBUTIONS, *backends)))


def backend_devices() -> dict[str, Any]:
    """Each installed backend's view of the devices; imports the backends, so call it on demand.

    None for a backend whose modules are not all installed; a broken install is reported, not
    raised.
    """
    found: dict[str, Any] = {}
    for backend in BACKENDS.values():
        if backend.devices is None:
            continue
        if any(importlib.util.find_spec(module) is None for module in backend.modules):
            found[backend.name] = None
            continue
        try:
            found[backend.name] = backend.devices()
        except Exception as error:
            found[backend.name] = {"error": f"{type(error).__name__}: {error}"}
    return found
