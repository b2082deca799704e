"""Timing a variant interleaved with its reference, until the speedup is known well enough.

Protocol, in order:

1. Threads are fixed (torch intra-op threads; default: the physical cores) and recorded.
2. Each callable's first call is timed alone and reported as first-call time: lazy
   initialization and JIT compilation never land in the samples.
3. Warm-up, alternating both callables, for at least ``warmup_s`` and ``warmup_calls`` calls each,
   and longer while the rolling median of either is still moving.
4. Rounds: each round times the variant and the reference once each, in a random order, with GC
   off. The per-round ratio reference/variant is what the speedup is estimated from: both halves
   of a round see the same machine state, so slow drift (thermal, a neighbour's load) cancels.
   Between two runtimes (torch and ONNX Runtime, say), a round times a *block* of calls of each:
   each runtime's idle thread pool keeps spinning for a while after its last call and slows the
   other's next calls (eager mobilenetv3 measured 14 ms alternated call by call with ONNX Runtime,
   6 ms alone; its first three calls after an ONNX Runtime block took 16, 11 and 10 ms), so the
   first calls of each block, for at least ``transition_s``, are discarded,
   and the round's ratio is the ratio of the two blocks' medians.
5. The speedup is the Hodges-Lehmann estimate of the per-round ratios (on the log scale), with
   the interval of the Wilcoxon signed-rank test (stats.ratio_estimate). Rounds continue until
   that interval is narrower than ``target_width`` (relative), or the time cap is reached. Raw
   samples are kept.

Two runtimes are timed each in a worker process of its own where their variants can be reloaded
there (pytest_modelopt.worker): their thread pools then never share a process. A pair of
processes carries an effect of its own for its life (an A/A comparison of eager against itself in
two processes read 0.95-0.97 in every comparison of one pair, 1.00-1.08 in another's), which its
rounds cannot show; so worker sides can be timed in ``process_pairs`` fresh pairs of processes,
one after the other, each with its share of the time and its own warm-up and stopping rule: the
estimate is over all rounds, and the interval reaches every pair's estimate. A comparison measured
again adds one fresh pair (with ``process_pairs=1``, its rounds pool with the first's). GPU work is
timed with CUDA events around each call, never a host clock around asynchronous work.

The engine asks each side, a *meter*, for samples: per-call figures in the meter's unit. Wall-clock
meters (``InProcess``, ``Worker``, ``CudaEvents``) give seconds; the counting meter
(pytest_modelopt.counting) gives instructions counted under valgrind. One loop serves both: the
counting meter only changes the settings: no first call or warm-up of the engine's (its worker warms
up natively), no settling (counts do not drift), and Student's t interval over as few as three
rounds instead of the signed-rank interval's eleven (stats.student_t_ratio_estimate).
"""

from pytest_modelopt.measure.comparison import Comparison, Timing
from pytest_modelopt.measure.conditions import current_threads, fixed_threads, gc_paused
from pytest_modelopt.measure.engine import Interleaver, time_alone
from pytest_modelopt.measure.meters import Call, CudaEvents, Meter, Side
from pytest_modelopt.measure.settings import MeasureSettings

__all__ = [
    "Call",
    "Comparison",
    "CudaEvents",
    "Interleaver",
    "MeasureSettings",
    "Meter",
    "Side",
    "Timing",
    "current_threads",
    "fixed_threads",
    "gc_paused",
    "time_alone",
]
