"""Exceptions raised by pytest-modelopt.

Every error says which model, which technique and what to do about it::

    ModeloptError
    ├── SpecError                 a ModelSpec is malformed (no inputs, a factory that fails)
    │   └── TrainingDataMissing   a technique that trains, on a spec without train_data
    ├── UnknownTechniqueError     a technique name that nobody registered
    ├── BudgetError               a budget that cannot be read (unknown metric, bad threshold)
    ├── ParameterError            a technique parameter that the technique does not take
    ├── RequirementMissing        this machine lacks what a technique needs
    │   ├── PackageMissing        a Python package is not installed (a failure under strict mode)
    │   ├── HardwareMissing       a GPU or ISA extension is absent (always a skip)
    │   └── NotApplicable         the technique does not apply to this kind of model (a skip)
    ├── BuildError                a technique failed to build a variant of a model
    │   └── NoEffectError         a technique ran but left the model unchanged
    ├── InvalidFileError          a baseline or results file that cannot be read or is malformed
    └── ContractViolation         measured metrics broke a budget or regressed from the baseline
                                  (also an AssertionError)
"""

from __future__ import annotations


class ModeloptError(Exception):
    """Base class of every error raised by pytest-modelopt."""


class SpecError(ModeloptError):
    """A ModelSpec cannot be used as given."""


class TrainingDataMissing(SpecError):
    """A technique that trains was asked of a spec without ``train_data``.

    An error when a test names the technique, a skip in a search of every technique.
    """


class UnknownTechniqueError(ModeloptError, KeyError):
    """A technique name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BudgetError(ModeloptError, ValueError):
    """A budget that cannot be parsed or names an unknown metric."""


class ParameterError(ModeloptError, ValueError):
    """A technique parameter that the technique does not define, or a value it cannot use."""


class RequirementMissing(ModeloptError):
    """This machine lacks something a technique or test needs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PackageMissing(RequirementMissing):
    """A Python package is not installed."""


class HardwareMissing(RequirementMissing):
    """A device or instruction-set extension is not present."""


class NotApplicable(RequirementMissing):
    """The technique does not apply to this kind of model (a torch technique on a Keras model)."""


class BuildError(ModeloptError):
    """A technique failed to build a variant."""


class NoEffectError(BuildError):
    """A technique ran without changing the model: never let it pass as an optimization."""


class InvalidFileError(ModeloptError, ValueError):
    """A baseline or results file that cannot be read, or does not have the expected shape.

    The message names the file, the place in it and the problem; such a file is never skipped
    or overwritten.
    """


class ContractViolation(ModeloptError, AssertionError):
    """A variant's measurements broke one or more budgets."""
