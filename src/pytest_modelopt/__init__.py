"""pytest-modelopt: model performance contracts as pytest tests.

Importing the package imports no ML library; each name below is loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pytest_modelopt.budget import Budget, Check, Verdict
    from pytest_modelopt.errors import (
        BudgetError,
        BuildError,
        ContractViolation,
        HardwareMissing,
        ModeloptError,
        NoEffectError,
        NotApplicable,
        PackageMissing,
        RequirementMissing,
        SpecError,
        UnknownTechniqueError,
    )
    from pytest_modelopt.evaluation import Evaluator
    from pytest_modelopt.hardware import Hardware, detect_hardware
    from pytest_modelopt.measure import MeasureSettings
    from pytest_modelopt.registry import get_technique, list_techniques, register_technique
    from pytest_modelopt.spec import ModelSpec
    from pytest_modelopt.variant_contract import VariantContract
    from pytest_modelopt.variant_result import VariantResult
    from pytest_modelopt.variants.base import BuildContext, Variant

_EXPORTS = {
    "Budget": "budget",
    "Check": "budget",
    "Verdict": "budget",
    "BudgetError": "errors",
    "BuildError": "errors",
    "ContractViolation": "errors",
    "HardwareMissing": "errors",
    "ModeloptError": "errors",
    "NoEffectError": "errors",
    "NotApplicable": "errors",
    "PackageMissing": "errors",
    "RequirementMissing": "errors",
    "SpecError": "errors",
    "UnknownTechniqueError": "errors",
    "Evaluator": "evaluation",
    "VariantContract": "variant_contract",
    "VariantResult": "variant_result",
    "Hardware": "hardware",
    "detect_hardware": "hardware",
    "MeasureSettings": "measure",
    "get_technique": "registry",
    "list_techniques": "registry",
    "register_technique": "registry",
    "ModelSpec": "spec",
    "BuildContext": "variants.base",
    "Variant": "variants.base",
}
__all__ = [
    "Budget",
    "BudgetError",
    "BuildContext",
    "BuildError",
    "Check",
    "ContractViolation",
    "Evaluator",
    "Hardware",
    "HardwareMissing",
    "MeasureSettings",
    "ModelSpec",
    "ModeloptError",
    "NoEffectError",
    "NotApplicable",
    "PackageMissing",
    "RequirementMissing",
    "SpecError",
    "UnknownTechniqueError",
    "Variant",
    "VariantContract",
    "VariantResult",
    "Verdict",
    "detect_hardware",
    "get_technique",
    "list_techniques",
    "register_technique",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"pytest_modelopt.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'pytest_modelopt' has no attribute {name!r}")
