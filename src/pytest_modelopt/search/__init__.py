"""Which variant should I ship on this machine? Choose among measured variants under budgets.

    choice = choose(records, ["accuracy_drop<=1%", "size_ratio<=0.5"], objective="latency")
    print(choice.table())          # ranked, Pareto front, ties, the recommendation, exclusions

``records`` are the per-variant dicts of a results JSON (``--modelopt-json``) or
``VariantContract.to_dict()``, all of one model on one machine. The rules, in order:

1. **Constraints.** Each budget (the budget syntax of ``expect``: ``"accuracy_drop<=1%"``,
   ``"size_ratio<=0.5"``) is judged on each candidate as ``expect`` judges it. A candidate is
   *feasible* when every constraint PASSes; one that FAILs is excluded with the measured value
   and the budget it breaks; one that is INCONCLUSIVE (the budget inside its interval, too noisy)
   or did not measure the metric is excluded as *undecided*, with the reason.
2. **Objective.** ``latency`` ranks by the speedup against the fp32 reference (paired,
   interleaved rounds, with an interval: absolute latencies drift between the minutes that
   separate two variants' measurements, the paired ratio does not), or by the instructions
   ratio in a counted run; ``throughput`` by items per second at the spec's batch (absolute,
   interval of the median latency); ``size`` by bytes on disk (exact). Any metric name is also
   accepted as an objective.
3. **Ties.** The interval of a candidate's objective decides, not its median: a feasible
   candidate is *tied for best* when no other feasible candidate is surely better than it,
   i.e. when the better end of its interval reaches the highest lower end (for a
   higher-is-better objective) among the feasible candidates whose measurement can decide
   (rule 4: a measurement flagged too noisy to judge is never surely better than another, nor
   sets the level the others must reach). The candidate best by median is
   always tied for best; all tied candidates share rank 1 (``=1``), the others are ranked by
   median from ``len(tied) + 1``. A candidate without an interval (size, a synthesized
   reference) is a point.
4. **Recommendation.** Among the tied, the first by: a measurement that can decide (its
   objective not flagged too noisy to judge, its interval bounded), a median at the level the
   best measurement guarantees (the highest lower end of rule 3: a candidate tied only by the
   width of its own interval, as a disturbed 1.02x [0.77x, 28.1x] beside a 4.5x [3.1x, 6.5x]
   is, is most likely slower and stays in the tie), fewer steps (the fp32
   reference 0, a technique 1, a chain one per part: a step that buys nothing measurable is
   not worth shipping), smaller on disk, more accurate, then the better median. The output
   says when the recommendation is a tie, and with which.
   A search (``Evaluator.best``) first measures again, afresh, each tied candidate whose
   objective is flagged too noisy (up to twice), so that a disturbance does not decide this.
5. **Pareto front** over (speed, accuracy, size) among the feasible candidates, ties respected:
   A dominates B when B is not surely faster than A, A is at least as accurate and at most as
   large, and A is better on one of them (surely faster, more accurate, or smaller). The front
   is the feasible candidates nobody dominates. "Surely faster" is interval-disjoint, as above,
   and only a measurement that can decide is surely faster.

The fp32 reference is always a candidate: its own record where the run measured ``eager``, else
one made from the variants' records (speedup exactly 1, no drop, the reference's size and
accuracy), so that "no variant is measurably better than fp32" can be the answer.
"""

from pytest_modelopt.reference import REFERENCE
from pytest_modelopt.search.candidates import QUALITY_METRICS, Candidate
from pytest_modelopt.search.choice import Choice, choose
from pytest_modelopt.search.contract import (
    ContractCheck,
    baseline_entry,
    check_contract,
    contract_of,
)
from pytest_modelopt.search.driver import PRIORITY, search, spec_framework
from pytest_modelopt.search.driver import _params_of as _params_of
from pytest_modelopt.search.objective import (
    COUNTED_OBJECTIVES,
    OBJECTIVES,
    Objective,
    parse_budgets,
    parse_constraint,
    parse_objective,
)
from pytest_modelopt.search.ranking import ACCURACY_AXES, SPEED_METRICS, surely_better
from pytest_modelopt.search.result import SearchResult
from pytest_modelopt.search.runs import choose_runs

__all__ = [
    "ACCURACY_AXES",
    "COUNTED_OBJECTIVES",
    "OBJECTIVES",
    "PRIORITY",
    "QUALITY_METRICS",
    "REFERENCE",
    "SPEED_METRICS",
    "Candidate",
    "Choice",
    "ContractCheck",
    "Objective",
    "SearchResult",
    "baseline_entry",
    "check_contract",
    "choose",
    "choose_runs",
    "contract_of",
    "parse_budgets",
    "parse_constraint",
    "parse_objective",
    "search",
    "spec_framework",
    "surely_better",
]
