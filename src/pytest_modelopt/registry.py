"""The technique registry: named ways to build a variant, and what each needs to run.

A technique is a build function registered under the name users type in markers and see in test
ids. It declares its requirements (packages, a GPU, ISA extensions), so that a test skips exactly
the techniques this machine cannot run. Registering imports nothing heavy: backends are imported
inside each build function.

A technique declares its parameters as a frozen dataclass (``params=``): each field's default is
the parameter's default, its type what a value must be, and ``field(metadata={"help": ...})``
what it means (``modelopt techniques`` renders them). Values given in markers or to ``Evaluator``
are checked against it by name and, where the type says, by type; the build function reads the
resolved values as the dict ``ctx.params``.

Techniques chain with ``+``: ``pruned_structured+static_int8`` builds the first technique, then
the second on the torch module it yields (its ``Variant.model``). A chain's parameters are given
per component: ``{"pruned_structured": {"ratio": 0.3}, "static_int8": {...}}``.

Third-party packages add techniques by calling :func:`register_technique` in a module named by an
entry point of the group ``pytest_modelopt.techniques``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import importlib.metadata
import importlib.util
import pkgutil
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pytest_modelopt.backends import install_hint, modules_of
from pytest_modelopt.errors import (
    BuildError,
    HardwareMissing,
    PackageMissing,
    ParameterError,
    RequirementMissing,
    UnknownTechniqueError,
)
from pytest_modelopt.parameters import (
    accepts,
    check_parameters_class,
    parameter_defaults,
    parameter_types,
    type_name,
    untyped_parameters,
)

if TYPE_CHECKING:
    from pytest_modelopt.hardware import Hardware
    from pytest_modelopt.variants.base import BuildContext, Variant

BuildFunction = Callable[["BuildContext"], "Variant"]
F = TypeVar("F", bound=BuildFunction)

# The package whose modules hold the built-in techniques: each is imported on the first registry
# lookup (found by pkgutil, so a new module needs no list kept by hand).
BUILTIN_PACKAGE = "pytest_modelopt.variants"
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
        modules = (*_as_tuple(packages), *modules_of(_as_tuple(backend)))
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
                f"package {', '.join(missing)} not installed ({install_hint(missing)})"
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
    """A registered way to build a variant: its build function, requirements and parameters.

    ``parameters`` is the frozen dataclass that declares its parameters (None: it takes none).
    A chain (``a+b``) is a technique too, whose ``components`` name its parts in order.
    """

    name: str
    build: BuildFunction
    requires: Requirements = Requirements()
    frameworks: tuple[str, ...] = ("torch",)
    description: str = ""
    parameters: type[Any] | None = None
    components: tuple[str, ...] = ()  # the techniques of a chain, in order

    @property
    def defaults(self) -> dict[str, Any]:
        """Return each parameter's default value, by name."""
        return parameter_defaults(self.parameters)

    def resolve_params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Return the defaults overridden by ``params``, as the dict a build function reads.

        A name the technique does not take, or a value of a type its parameter does not accept,
        is a ParameterError. A chain's parameters are a mapping per component, each resolved by
        that component.
        """
        params = dict(params or {})
        if self.components:
            unknown = set(params) - set(self.components)
            if unknown:
                raise ParameterError(
                    f"{self.name}: parameters of a chain are given per component "
                    f"({', '.join(self.components)}); got {', '.join(sorted(unknown))}"
                )
            return {
                name: get_technique(name).resolve_params(params.get(name))
                for name in self.components
            }
        defaults = self.defaults
        unknown = set(params) - set(defaults)
        if unknown:
            known = ", ".join(sorted(defaults)) or "none"
            raise ParameterError(
                f"{self.name} takes no parameter {', '.join(repr(n) for n in sorted(unknown))}; "
                f"its parameters: {known}"
            )
        if self.parameters is not None:
            hints = parameter_types(self.parameters)
            for name, value in params.items():
                expected = hints.get(name, Any)
                if not accepts(expected, value):
                    raise ParameterError(
                        f"{self.name}: parameter {name!r} expects {type_name(expected)}, "
                        f"got {value!r} ({type(value).__name__})"
                    )
        return {**defaults, **params}

    def build_variant(self, ctx: BuildContext) -> Variant:
        """Build the variant with ``ctx`` and name it after this technique.

        The build function gets ``ctx`` with ``technique`` set to this name and leaves the
        variant's name out: the registration names it. A build that names it otherwise is
        overruled, and a note on the variant says so.
        """
        variant = self.build(dataclasses.replace(ctx, technique=self.name))
        if variant.technique and variant.technique != self.name:
            variant.notes.append(
                f"its build named it {variant.technique!r}; it is registered as {self.name!r}, "
                "the name it keeps"
            )
        variant.technique = self.name
        return variant

    def unmet(self, hardware: Hardware) -> RequirementMissing | None:
        """Return why this technique cannot run on ``hardware`` (its name first), or None."""
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
    params: type[Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Callable[[F], F]:
    """Register the decorated build function as technique ``name``.

    ``frameworks`` names the kinds of models it applies to (``torch``, ``python``, ...); a model of
    another kind skips it with that reason. ``params`` is a frozen dataclass declaring the
    parameters: a default for every field, its type, and ``metadata={"help": ...}`` saying what
    it means. ``defaults`` (a dict of name to default) is the older, untyped form: the names are
    checked, the values are not.

    The build function returns its :class:`~pytest_modelopt.variants.base.Variant` without a
    name: the registry names it ``name`` (a chain's, ``a+b``), and passes the name to the build
    as ``ctx.technique`` for its messages. A build that still names its variant keeps working;
    where that name differs from ``name``, ``name`` wins and a note on the variant records the
    other.
    """
    requires = Requirements.from_marker(gpu=gpu, backend=backend, isa=isa, packages=packages)
    if params is not None and defaults is not None:
        raise TypeError(f"technique {name!r}: give params (a dataclass) or defaults, not both")
    parameters = untyped_parameters(name, defaults) if defaults else params
    if parameters is not None:
        check_parameters_class(name, parameters)

    def decorator(build: F) -> F:
        technique = Technique(
            name=name,
            build=build,
            requires=requires,
            frameworks=tuple(frameworks),
            description=description or (build.__doc__ or "").strip().split("\n")[0],
            parameters=parameters,
        )
        previous = _REGISTRY.get(name)
        warn_if_replaced(f"technique {name!r}", previous.build if previous else None, build)
        _REGISTRY[name] = technique
        return build

    return decorator


def get_technique(name: str) -> Technique:
    """Return the technique registered as ``name``; ``a+b`` is built as a chain of techniques.

    An unknown name is an UnknownTechniqueError that lists the registered ones.
    """
    _load_builtins()
    if "+" in name:
        return _chain([get_technique(part.strip()) for part in name.split("+")])
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownTechniqueError(
            f"unknown technique {name!r}; registered techniques: {known}"
        ) from None


def list_techniques(pattern: str = "*", exclude: Iterable[str] = ()) -> list[str]:
    """Return the registered technique names matching an fnmatch ``pattern``, sorted.

    Names matching any of the ``exclude`` patterns are left out.
    """
    _load_builtins()
    names = fnmatch.filter(sorted(_REGISTRY), pattern)
    excluded = set().union(*(fnmatch.filter(names, p) for p in exclude))
    return [name for name in names if name not in excluded]


def _chain(parts: list[Technique]) -> Technique:
    """One technique that builds each part on the torch module the previous part yields."""
    name = "+".join(part.name for part in parts)
    if len(parts) < 2 or any(part.components for part in parts):
        raise UnknownTechniqueError(f"{name!r} is not a chain of registered techniques")
    frameworks = set(parts[0].frameworks).intersection(*(part.frameworks for part in parts))
    requires = parts[0].requires
    for part in parts[1:]:
        requires = requires + part.requires

    def build(ctx: BuildContext) -> Variant:

        model, notes, details = ctx.model, [], {}
        upstream: str | None = None  # the build-cache key of the step before
        cached = ctx.build_step is not None
        for index, part in enumerate(parts):
            step = dataclasses.replace(
                ctx, model=model, params=ctx.params[part.name], workdir=ctx.workdir / part.name
            )
            step.workdir.mkdir(parents=True, exist_ok=True)
            ctx.log(f"{ctx.spec.name}[{name}]: step {index + 1}/{len(parts)}: {part.name}")
            if cached and ctx.build_step is not None and index < len(parts) - 1:
                variant, upstream = ctx.build_step(part, step, upstream)
                cached = upstream is not None
            else:
                variant = part.build_variant(step)
            notes += [f"{part.name}: {note}" for note in variant.notes]
            details[part.name] = variant.details
            if index < len(parts) - 1:
                if variant.model is None:
                    raise BuildError(
                        f"{name}: {part.name} yields no torch module for {parts[index + 1].name} "
                        "to start from; put it last in the chain"
                    )
                model = variant.model
        # The last part's variant, left unnamed: build_variant names it after the whole chain.
        variant.technique, variant.details, variant.notes = "", details, notes
        return variant

    return Technique(
        name=name,
        build=build,
        requires=requires,
        frameworks=tuple(sorted(frameworks)),
        description=" then ".join(part.name for part in parts),
        components=tuple(part.name for part in parts),
    )


def builtin_modules() -> list[str]:
    """Return the modules of the built-in techniques: those of ``pytest_modelopt.variants``.

    Found by pkgutil, sorted; a module whose name starts with an underscore is left out.
    """
    package = importlib.import_module(BUILTIN_PACKAGE)
    return sorted(
        f"{BUILTIN_PACKAGE}.{module.name}"
        for module in pkgutil.iter_modules(package.__path__)
        if not module.name.startswith("_")
    )


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in builtin_modules():
        importlib.import_module(module)
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        entry_point.load()


def warn_if_replaced(what: str, previous: BuildFunction | None, build: BuildFunction) -> None:
    """Warn that ``what``, registered by ``previous``, is replaced by ``build`` from elsewhere.

    Nothing is said where nothing was registered, or where the same function registers again
    (a module imported twice).
    """
    if previous is not None and _origin(previous) != _origin(build):
        warnings.warn(
            f"{what} from {_origin(previous)} is replaced by {_origin(build)}", stacklevel=3
        )


def _origin(function: Callable[..., Any]) -> str:
    return f"{function.__module__}.{function.__qualname__}"


def _as_tuple(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)
