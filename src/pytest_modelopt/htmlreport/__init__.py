"""One self-contained HTML page from one or many runs.

The page holds the variant x hardware matrix, per-model Pareto plots (latency against accuracy
and size), trends when the runs span dates, and each run's details. Plots are drawn with
matplotlib (imported here, lazily) and embedded as base64 PNG: the file needs nothing else to
open, anywhere.

- ``page``: ``render``, the HTML: machines, matrix, what to ship, run details;
- ``plots``: the Pareto and trend plots as PNG.
"""

from pytest_modelopt.htmlreport.page import STYLE, VERSIONS, render
from pytest_modelopt.htmlreport.plots import COLOURS

__all__ = ["COLOURS", "STYLE", "VERSIONS", "render"]
