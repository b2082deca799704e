"""One verdict path: judge, measure once more while undecided, and apply the inconclusive policy.

A contract (``VariantContract.expect``: budgets) and the baseline gate (a stored entry) decide the
same way: judge every check; while one is INCONCLUSIVE and retries remain, measure again and
judge again; then the test fails on a FAIL, and on an INCONCLUSIVE under the ``fail`` policy.
Each caller words its own failure (a budget table, or a baseline table with what grew).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from pytest_modelopt.budget import Verdict


class Judged(Protocol):
    """A check with a verdict: a budget's ``Check`` or a ``BaselineCheck``."""

    @property
    def verdict(self) -> Verdict:
        """Return the check's verdict."""
        ...


CheckT = TypeVar("CheckT", bound=Judged)


@dataclass(frozen=True)
class Decision(Generic[CheckT]):
    """The checks as last judged, and what they mean for the test under the policy."""

    checks: tuple[CheckT, ...]
    policy: str = "fail"
    measured_again: int = 0

    @property
    def failed(self) -> list[CheckT]:
        """Return the checks that surely fail."""
        return [c for c in self.checks if c.verdict is Verdict.FAIL]

    @property
    def undecided(self) -> list[CheckT]:
        """Return the checks the measurements could not decide."""
        return [c for c in self.checks if c.verdict is Verdict.INCONCLUSIVE]

    @property
    def fails_inconclusive(self) -> bool:
        """Return whether the test fails for undecided checks (none failed; policy ``fail``)."""
        return not self.failed and bool(self.undecided) and self.policy == "fail"


def decide(
    judge: Callable[[], Sequence[CheckT]],
    *,
    measure_again: Callable[[], object] | None,
    retries: int,
    policy: str,
    log: Callable[[str], None] = lambda message: None,
    label: str = "",
) -> Decision[CheckT]:
    """Judge; measure again (up to ``retries`` times) while a check is INCONCLUSIVE.

    ``judge`` is called after each measurement, so it must read the latest one. ``policy`` is
    one of ``budget.INCONCLUSIVE_POLICIES`` (validated where it is read). ``label`` names what
    is judged in the log line: ``"resnet18[onnxruntime]: inconclusive against the baseline"``.
    """
    checks = tuple(judge())
    again = 0
    while measure_again is not None and again < retries:
        if not any(c.verdict is Verdict.INCONCLUSIVE for c in checks):
            break
        log(f"{label}, measuring once more")
        measure_again()
        again += 1
        checks = tuple(judge())
    return Decision(checks, policy, again)
