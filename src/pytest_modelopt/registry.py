"""The technique registry: named ways to build a variant, and what each needs to run.

A technique is a build function registered under the name users type in markers and see in test
ids. It declares its requirements (packages, a GPU, ISA extensions), so that a test skips exactly
the techniques this machine cannot run. Registering imports nothing heavy: backends are imported
inside each build function.

Third-party packages add techniques by calling :func:`register_technique` in a module named by an
entry point of the group ``pytest_modelopt.techniques``.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import importlib.util
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pytest_modelopt.errors import (
    HardwareMissing,
    PackageMissing,
    RequirementMissing,
    UnknownTechniqueError,
)

if TYPE_CHECKING:
    from pytest_modelopt.hardware import Hardware
    from pytest_modelopt.variants.base import BuildContext, Variant

BuildFunction = Callable[["BuildContext"], "Variant"]
F = TypeVar("F", bound=BuildFunction)

# The import names a backend needs, and the extra that installs them.
BACKENDS: dict[str, tuple[tuple[str, ...], str]] = {
    "torch": (("torch",), ""),
    "onnxruntime": (("onnx", "onnxruntime"), "onnx"),
    "openvino": (("openvino",), "openvino"),
    "nncf": (("nncf",), "openvino"),
    "tensorflow": (("tensorflow",), "tensorflow"),
    "litert": (("ai_edge_litert",), "tensorflow"),
}
# Modules holding the built-in techniques; imported on the first registry lookup.
BUILTIN_MODULES = (
    "pytest_modelopt.variants.torch_eager",
    "pytest_modelopt.variants.torchscript",
    "pytest_modelopt.variants.quantization",
    "pytest_modelopt.variants.onnx_runtime",
    "pytest_modelopt.variants.openvino",
    "pytest_modelopt.variants.tflite",
)
ENTRY_POINT_GROUP = "pytest_modelopt.techniques"


@dataclass(frozen=True)
class Requirements:
    """What must be present to run something.

    ``isa`` entries are all required; one entry may list alternatives with ``|``
    (``"avx512_bf16|amx_bf16"``).
    """

    packages: tuple[str, ...] = ()
    gpu: bool = False
    isa: tuple[str, ...] = ()

    @classmethod
    def from_marker(
        cls,
        *,
        gpu: bool = False,
        backend: str | Iterable[str] = (),
        isa: str | Iterable[str] = (),
        packages: str | Iterable[str] = (),
    ) -> Requirements:
        """Build from the keywords of ``@pytest.mark.modelopt_requires``."""
        modules = list(_as_tuple(packages))
        for name in _as_tuple(backend):
            if name not in BACKENDS:
                known = ", ".join(sorted(BACKENDS))
                raise ValueError(f"unknown backend {name!r}; known backends: {known}")
            modules += BACKENDS[name][0]
        return cls(packages=tuple(dict.fromkeys(modules)), gpu=gpu, isa=_as_tuple(isa))

    def __add__(self, other: Requirements) -> Requirements:
        return Requirements(
            packages=tuple(dict.fromkeys(self.packages + other.packages)),
            gpu=self.gpu or other.gpu,
            isa=tuple(dict.fromkeys(self.isa + other.isa)),
        )

    def check(self, hardware: Hardware) -> None:
        """Raise PackageMissing or HardwareMissing with the exact reason, or return."""
        missing = [name for name in self.packages if importlib.util.find_spec(name) is None]
        if missing:
            raise PackageMissing(
                f"package {', '.join(missing)} not installed{_install_hint(missing)}"
            )
        if self.gpu and not hardware.gpus:
            detail = "; ".join(hardware.notes) or "NVML found no device"
            raise HardwareMissing(f"needs an NVIDIA GPU, none found ({detail})")
        for entry in self.isa:
            choices = entry.split("|")
            if not any(hardware.has_isa(flag) for flag in choices):
                raise HardwareMissing(
                    f"needs the CPU extension {' or '.join(choices)}, which "
                    f"{hardware.cpu.brand} ({hardware.cpu.arch}) lacks"
                )


@dataclass(frozen=True)
class Technique:
    name: str
    build: BuildFunction
    requires: Requirements = Requirements()
    frameworks: tuple[str, ...] = ("torch",)
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def unmet(self, hardware: Hardware) -> RequirementMissing | None:
        try:
            self.requires.check(hardware)
        except RequirementMissing as missing:
            return type(missing)(f"{self.name}: {missing.reason}")
        return None


_REGISTRY: dict[str, Technique] = {}
_loaded = False


def register_technique(
    name: str,
    *,
    backend: str | Iterable[str] = (),
    packages: str | Iterable[str] = (),
    gpu: bool = False,
    isa: str | Iterable[str] = (),
    frameworks: Iterable[str] = ("torch",),
    description: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Callable[[F], F]:
    """Register the decorated build function as technique ``name``.

    ``frameworks`` names the kinds of models it applies to (``torch``, ``python``, ...); a model of
    another kind skips it with that reason.
    """
    requires = Requirements.from_marker(gpu=gpu, backend=backend, isa=isa, packages=packages)

    def decorator(build: F) -> F:
        technique = Technique(
            name=name,
            build=build,
            requires=requires,
            frameworks=tuple(frameworks),
            description=description or (build.__doc__ or "").strip().split("\n")[0],
            defaults=dict(defaults or {}),
        )
        previous = _REGISTRY.get(name)
        if previous is not None and _origin(previous.build) != _origin(build):
            warnings.warn(
                f"technique {name!r} from {_origin(previous.build)} is replaced by "
                f"{_origin(build)}",
                stacklevel=2,
            )
        _REGISTRY[name] = technique
        return build

    return decorator


def get_technique(name: str) -> Technique:
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownTechniqueError(
            f"unknown technique {name!r}; registered techniques: {known}"
        ) from None


def list_techniques(pattern: str = "*", exclude: Iterable[str] = ()) -> list[str]:
    """Registered technique names matching an fnmatch ``pattern``, sorted."""
    _load_builtins()
    names = fnmatch.filter(sorted(_REGISTRY), pattern)
    excluded = set().union(*(fnmatch.filter(names, p) for p in exclude))
    return [name for name in names if name not in excluded]


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        entry_point.load()


def _origin(function: Callable[..., Any]) -> str:
    return f"{function.__module__}.{function.__qualname__}"


def _as_tuple(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _install_hint(modules: list[str]) -> str:
    extras = sorted(
        {extra for mods, extra in BACKENDS.values() if extra and set(mods) & set(modules)}
    )
    if extras:
        return f" (pip install 'pytest-modelopt[{','.join(extras)}]')"
    return f" (pip install {' '.join(modules)})"
