"""The measuring defaults, written once: the engine's ``MeasureSettings`` and the plugin's options.

Kept in a module of plain numbers so that reading the plugin's options imports nothing heavy.
"""

from __future__ import annotations

MAX_TIME_S = 10.0  # seconds of timing per comparison before a verdict (stretched, see OVERRUN)
WARMUP_S = 1.0  # the least warm-up per comparison, in seconds
TARGET_WIDTH = 0.02  # timing stops once the speedup interval is this narrow (relative width)
CONFIDENCE = 0.999  # confidence level of intervals and verdicts
NOISE_THRESHOLD = 0.25  # IQR/median of the per-round ratios above which nothing is judged
# How far past its time cap a comparison may go to reach the rounds a finite interval needs.
OVERRUN = 4.0
SEARCH_MAX_TIME_S = 600.0  # seconds a search (Evaluator.best, modelopt_best) may start candidates
# Fresh pairs of worker processes a cross-runtime comparison is timed in. More than one shows a
# pair's own effect in the interval, at about twice the wall time for three (verdict-quality.md).
PROCESS_PAIRS = 1
