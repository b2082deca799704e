"""The report's plots: per-model Pareto plots and speedup trends, drawn as PNG with matplotlib.

matplotlib is imported when a figure is made, never at import time.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pytest_modelopt.readable import one_line
from pytest_modelopt.results import Run, accuracy_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _pareto_png(spec: str, latest: dict[str, Run]) -> bytes:
    figure = _figure(12, 4.6)
    by_accuracy, by_size = figure.subplots(1, 2)
    accuracy_name = "accuracy"
    unit, scale = _size_unit(
        r["sizes"]["variant_bytes"] for run in latest.values() for r in run.records
    )
    for index, (fingerprint, run) in enumerate(latest.items()):
        colour = COLOURS[index % len(COLOURS)]
        points = []
        for record in (r for r in run.records if r["spec"] == spec):
            if record["latency"].get("meter") == "instructions":
                continue  # counted: no latency to plot
            accuracy = accuracy_of(record)
            latency_ms = record["latency"]["variant"]["stats"]["p50"] * 1e3
            if accuracy is None or latency_ms <= 0:
                continue
            accuracy_name = accuracy[0]
            size = record["sizes"]["variant_bytes"] / scale
            points.append((latency_ms, accuracy[1], size, one_line(record["technique"])))
        if not points:
            continue
        largest = max(p[2] for p in points) or 1.0
        areas = [40 + 360 * p[2] / largest for p in points]
        by_accuracy.scatter(
            [p[0] for p in points],
            [p[1] for p in points],
            s=areas,
            color=colour,
            alpha=0.6,
            label=fingerprint,
            edgecolors="black",
            linewidths=0.5,
        )
        by_size.scatter(
            [p[0] for p in points],
            [p[2] for p in points],
            s=60,
            color=colour,
            alpha=0.7,
            label=fingerprint,
            edgecolors="black",
            linewidths=0.5,
        )
        _front(by_accuracy, [(p[0], p[1]) for p in points], colour, higher_is_better=True)
        _front(by_size, [(p[0], p[2]) for p in points], colour, higher_is_better=False)
        offset = (6, 6 + 11 * index)  # labels of different machines do not sit on each other
        for latency_ms, accuracy_value, size, technique in points:
            for axes, y in ((by_accuracy, accuracy_value), (by_size, size)):
                axes.annotate(
                    technique,
                    (latency_ms, y),
                    fontsize=8,
                    xytext=offset,
                    textcoords="offset points",
                    color=colour,
                )
    by_accuracy.set(
        xscale="log",
        xlabel="p50 latency (ms, log)",
        ylabel=accuracy_name.replace("_", " "),
        title=f"{spec}: latency vs {accuracy_name.replace('_', ' ')} (marker area: size)",
    )
    by_size.set(
        xscale="log",
        xlabel="p50 latency (ms, log)",
        ylabel=f"size on disk ({unit})",
        title=f"{spec}: latency vs size",
    )
    for axes in (by_accuracy, by_size):
        axes.margins(x=0.08, y=0.15)  # room for the labels above the highest points
        axes.grid(True, alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8, title="fingerprint", title_fontsize=8)
    return _png(figure)


def _size_unit(sizes: Iterable[int]) -> tuple[str, float]:
    largest = max(sizes, default=0)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if largest >= scale:
            return unit, scale
    return "bytes", 1.0


def _front(
    axes: Axes, points: list[tuple[float, float]], colour: str, *, higher_is_better: bool
) -> None:
    """Draw the Pareto front (faster and better than every point it leaves out), dashed."""
    best = -math.inf if higher_is_better else math.inf
    front = []
    for latency, value in sorted(points):
        if (value > best) if higher_is_better else (value < best):
            front.append((latency, value))
            best = value
    if len(front) > 1:
        axes.step(
            [p[0] for p in front],
            [p[1] for p in front],
            where="post",
            color=colour,
            linestyle="--",
            linewidth=1,
            alpha=0.8,
        )


def _trend_png(spec: str, series: dict[str, list[tuple[dt.datetime, Any]]]) -> bytes:
    figure = _figure(12, 4)
    axes = figure.subplots()
    for index, (name, points) in enumerate(sorted(series.items())):
        dates = [date for date, _ in points]
        speedups = [record["latency"]["speedup"] for _, record in points]
        lows = [record["latency"]["speedup_interval"][0] for _, record in points]
        highs = [record["latency"]["speedup_interval"][1] for _, record in points]
        below = [s - (low if low is not None else s) for s, low in zip(speedups, lows, strict=True)]
        above = [
            (high if high is not None else s) - s for s, high in zip(speedups, highs, strict=True)
        ]
        axes.errorbar(
            dates,
            speedups,
            yerr=[below, above],
            marker="o",
            capsize=3,
            color=COLOURS[index % len(COLOURS)],
            label=name,
        )
    axes.set(
        ylabel="speedup vs fp32 reference",
        title=f"{spec}: speedup over time (bars: confidence interval)",
    )
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.autofmt_xdate()
    return _png(figure)
