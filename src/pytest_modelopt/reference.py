"""The reference: the model as written, run eagerly, built by its own framework's builder.

Every variant is compared with the reference, the technique ``eager``. Each framework registers
the build function of its models' reference, in the module of that framework, with
:func:`register_reference`; ``eager`` builds with the one registered for the spec's framework,
and applies to exactly the frameworks that registered one. Adding a framework is registering its
reference beside its techniques: nothing here or in the evaluator names a framework.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pytest_modelopt.errors import NotApplicable
from pytest_modelopt.registry import (
    F,
    Requirements,
    Technique,
    get_technique,
    register_technique,
    warn_if_replaced,
)

if TYPE_CHECKING:
    from pytest_modelopt.variants.base import BuildContext, Variant

REFERENCE = "eager"
DESCRIPTION = "the fp32 model as written, run eagerly: the reference of every comparison"

# The reference of each framework's models, by framework: a technique named REFERENCE each.
_REFERENCES: dict[str, Technique] = {}


def register_reference(
    framework: str,
    *,
    backend: str | Iterable[str] = (),
    packages: str | Iterable[str] = (),
) -> Callable[[F], F]:
    """Register the decorated build function as the reference of ``framework`` models.

    ``backend`` and ``packages`` name what it runs on, as :func:`register_technique`'s do: they
    are checked before it builds, and a counting worker imports them before it counts. A
    framework's reference registered again from elsewhere is replaced, with a warning naming both.
    """
    requires = Requirements.from_marker(backend=backend, packages=packages)

    def decorator(build: F) -> F:
        previous = _REFERENCES.get(framework)
        warn_if_replaced(
            f"the reference of {framework} models", previous.build if previous else None, build
        )
        _REFERENCES[framework] = Technique(
            name=REFERENCE,
            build=build,
            requires=requires,
            frameworks=(framework,),
            description=(build.__doc__ or "").strip().split("\n")[0],
        )
        register_technique(REFERENCE, frameworks=sorted(_REFERENCES), description=DESCRIPTION)(
            build_reference
        )
        return build

    return decorator


def reference_for(framework: str) -> Technique:
    """Return the reference registered for ``framework`` models.

    A framework without one is NotApplicable: no variant of its models can be compared.
    """
    get_technique(REFERENCE)  # the built-in and installed references are registered first
    try:
        return _REFERENCES[framework]
    except KeyError:
        known = ", ".join(sorted(_REFERENCES))
        raise NotApplicable(
            f"{REFERENCE}: no reference is registered for {framework} models (only for {known})"
        ) from None


def build_reference(ctx: BuildContext) -> Variant:
    """Build the reference of the spec's model with its framework's registered build function."""
    reference = reference_for(ctx.spec.framework)
    missing = reference.unmet(ctx.hardware)
    if missing is not None:
        raise missing
    return reference.build(ctx)
