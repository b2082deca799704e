"""The report's page: machines, the variant x hardware matrix, what to ship, and each run's details.

The plots are ``plots``'s PNGs, embedded as base64 images; everything else is HTML tables.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pytest_modelopt.htmlreport.plots import _pareto_png, _trend_png
from pytest_modelopt.readable import one_line
from pytest_modelopt.results import Run, accuracy_of

if TYPE_CHECKING:
    from pytest_modelopt.search import Choice


VERSIONS = ("torch", "onnxruntime", "openvino", "tensorflow", "tensorflow-cpu", "pytest-modelopt")
STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif;
       margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 28px; }
h3 { font-size: 15px; margin-bottom: 6px; }
p.meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.cell { min-width: 150px; }
td.pass { background: #eaf7ea; } td.fail { background: #fde8e8; }
td.inconclusive { background: #fff6dd; } td.none { color: #999; }
.big { font-size: 15px; font-weight: 600; } .small { color: #555; font-size: 12px; }
.verdict { font-size: 11px; font-weight: 600; letter-spacing: 0.03em; }
img { max-width: 100%; border: 1px solid #eee; }
.mark { font-size: 11px; font-weight: 600; } .mark.recommended { color: #1a7f37; }
.mark.excluded { color: #999; font-weight: normal; }
"""


def render(runs: list[Run], title: str, choices: list[Choice] | None = None) -> str:
    """Render the report of ``runs`` (one or many machines, one or many dates) as HTML text.

    With ``choices`` (``search.choose_runs``), the matrix marks each machine's recommended
    variant, ties and Pareto front, and a section says what to ship.
    """
    latest = _latest_per_fingerprint(runs)
    marks = _choice_marks(choices or [])
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{len(runs)} run(s) on {len(latest)} fingerprint(s); generated '
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. Each cell: speedup against "
        "the fp32 reference measured in the same session [confidence interval], p50 latency, "
        "size ratio, accuracy (or top-1 agreement with the reference).</p>",
        _machines(runs),
        "<h2>Variant x hardware matrix</h2>",
    ]
    for spec in _specs(latest.values()):
        parts.append(_matrix(spec, latest, marks))
    if choices:
        parts.append(_choices_section(choices))
    parts.append("<h2>Pareto plots: latency against accuracy and size</h2>")
    for spec in _specs(latest.values()):
        parts.append(f"<h3>{_e(spec)}</h3>")
        parts.append(_img(_pareto_png(spec, latest), f"Pareto plot of {spec}"))
    trends = _trend_series(runs)
    if trends:
        parts.append("<h2>Trends over time</h2>")
        for spec, series in sorted(trends.items()):
            parts.append(f"<h3>{_e(spec)}</h3>")
            parts.append(_img(_trend_png(spec, series), f"speedup of {spec} over time"))
    parts.append("<h2>Runs in detail</h2>")
    for run in sorted(runs, key=lambda r: (r.fingerprint, r.created)):
        parts.append(_details(run))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _e(text: Any) -> str:
    """Text as HTML: one line, no terminal escape codes, escaped."""
    return html.escape(one_line(text, limit=None))


def _latest_per_fingerprint(runs: Iterable[Run]) -> dict[str, Run]:
    latest: dict[str, Run] = {}
    for run in sorted(runs, key=lambda r: r.created):
        latest[run.fingerprint] = run
    return dict(sorted(latest.items()))


def _specs(runs: Iterable[Run]) -> list[str]:
    return sorted({record["spec"] for run in runs for record in run.records})


def _machines(runs: list[Run]) -> str:
    rows = [
        "<h2>Machines</h2><table><tr><th>fingerprint</th><th>hardware</th><th>runs</th>"
        "<th>library versions</th></tr>"
    ]
    for fingerprint, group in _group(runs).items():
        last = group[-1]
        cpu = last.hardware.get("cpu", {})
        gpus = ", ".join(g.get("name", "?") for g in last.hardware.get("gpus", [])) or "no GPU"
        hardware = (
            f"{cpu.get('brand', '?')}, {cpu.get('physical_cores', '?')} cores, "
            f"{cpu.get('isa_level', '?')}; {gpus}"
        )
        detected = last.hardware.get("detected_fingerprint")
        if detected and detected != fingerprint:
            hardware += f" (a machine name; detected as {detected})"
        dates = ", ".join(f"{run.created:%Y-%m-%d %H:%M}" for run in group)
        versions = ", ".join(
            f"{name} {last.environment[name]}" for name in VERSIONS if name in last.environment
        )
        rows.append(
            f"<tr><td><b>{_e(fingerprint)}</b></td><td>{_e(hardware)}</td><td>{_e(dates)}</td>"
            f"<td>{_e(versions)}</td></tr>"
        )
    return "\n".join(rows) + "</table>"


def _group(runs: Iterable[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (r.fingerprint, r.created)):
        groups.setdefault(run.fingerprint, []).append(run)
    return groups


def _matrix(spec: str, latest: dict[str, Run], marks: dict[tuple[str, str], str]) -> str:
    techniques = sorted(
        {r["technique"] for run in latest.values() for r in run.records if r["spec"] == spec}
    )
    head = "".join(f"<th>{_e(fp)}</th>" for fp in latest)
    rows = [f"<h3>{_e(spec)}</h3><table><tr><th>technique</th>{head}</tr>"]
    for technique in techniques:
        cells = []
        for run in latest.values():
            record = next(
                (r for r in run.records if r["spec"] == spec and r["technique"] == technique),
                None,
            )
            cell = _cell(record)
            mark = marks.get((run.fingerprint, record["test"])) if record else None
            cells.append(cell[: -len("</td>")] + mark + "</td>" if mark else cell)
        rows.append(f"<tr><th>{_e(technique)}</th>{''.join(cells)}</tr>")
    return "\n".join(rows) + "</table>"


def _cell(record: dict[str, Any] | None) -> str:
    if record is None:
        return '<td class="cell none">not run</td>'
    latency = record["latency"]
    low, high = latency["speedup_interval"]
    sizes = record["sizes"]
    ratio = sizes["variant_bytes"] / sizes["reference_bytes"] if sizes["reference_bytes"] else 0
    accuracy = accuracy_of(record)
    shown = (
        f"{'acc' if accuracy[0] == 'accuracy' else 'agree'} {accuracy[1]:.1%}" if accuracy else ""
    )
    state = _state(record)
    if latency.get("meter") == "instructions":
        ratio_text = f"{latency['speedup']:.3f}x Ir"
        figure = f"{latency['counts']['variant']['instructions'] / 1e6:.4g}M Ir/call"
    else:
        ratio_text = f"{latency['speedup']:.2f}x"
        figure = f"p50 {latency['variant']['stats']['p50'] * 1e3:.3g} ms"
    return (
        f'<td class="cell {state}"><span class="big">{ratio_text}</span> '
        f'<span class="small">[{_bound(low)}, {_bound(high)}]</span><br>'
        f'<span class="small">{figure} · size '
        f"{ratio:.2f}x · {shown}</span><br>"
        f'<span class="verdict">{_e(_state_text(record))}</span></td>'
    )


def _figures(latency: dict[str, Any]) -> tuple[str, str, str]:
    """Variant and reference figures (p50 ms, or instructions per call) and the ratio's unit."""
    if latency.get("meter") == "instructions":
        counts = latency["counts"]
        return (
            f"{counts['variant']['instructions']:,.0f} Ir",
            f"{counts['reference']['instructions']:,.0f} Ir",
            " Ir",
        )
    return (
        f"{latency['variant']['stats']['p50'] * 1e3:.4g}",
        f"{latency['reference']['stats']['p50'] * 1e3:.4g}",
        "",
    )


def _bound(value: float | None) -> str:
    return "∞" if value is None else f"{value:.2f}"


def _state(record: dict[str, Any]) -> str:
    verdict = record.get("verdict")
    baseline = record.get("baseline", {}).get("status")
    if verdict == "FAIL" or baseline == "regressed":
        return "fail"
    if verdict == "INCONCLUSIVE" or baseline == "inconclusive":
        return "inconclusive"
    return "pass" if verdict == "PASS" or baseline == "passed" else ""


def _state_text(record: dict[str, Any]) -> str:
    parts = [f"contract {record['verdict']}" if record.get("verdict") else "no contract"]
    baseline = record.get("baseline", {}).get("status")
    if baseline:
        parts.append(baseline if "baseline" in baseline else f"baseline {baseline}")
    return " · ".join(parts)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _trend_series(runs: list[Run]) -> dict[str, dict[str, list[tuple[dt.datetime, Any]]]]:
    """Return the records to plot as trends, by spec, then by technique and machine.

    spec -> 'technique @ fingerprint' -> [(date, record)], when a fingerprint has runs on at
    least two dates.
    """
    trends: dict[str, dict[str, list[tuple[dt.datetime, Any]]]] = {}
    for fingerprint, group in _group(runs).items():
        if len({run.created.date() for run in group}) < 2:
            continue
        for run in group:
            for record in run.records:
                key = one_line(f"{record['technique']} @ {fingerprint}", limit=None)
                trends.setdefault(record["spec"], {}).setdefault(key, []).append(
                    (run.created, record)
                )
    return trends


def _details(run: Run) -> str:
    rows = [
        f"<h3>{_e(run.label)} <span class='small'>({_e(run.path.name)})</span></h3>",
        "<table><tr><th>test</th><th>technique</th><th>speedup [interval]</th>"
        "<th>p50 ms</th><th>ref p50 ms</th><th>size</th><th>accuracy</th><th>contract</th>"
        "<th>baseline</th><th>notes</th></tr>",
    ]
    for record in run.records:
        latency = record["latency"]
        low, high = latency["speedup_interval"]
        variant, reference, unit = _figures(latency)
        accuracy = accuracy_of(record)
        checks = "; ".join(
            f"{c.get('metric')} {c.get('budget')}: {c.get('verdict')}"
            for c in record.get("checks", [])
            if isinstance(c, dict)
        )
        baseline = record.get("baseline", {})
        moved = "; ".join(
            f"{c.get('metric')} {c.get('baseline')} → {c.get('measured')}: {c.get('verdict')}"
            for c in baseline.get("checks", [])
            if isinstance(c, dict)
        )
        notes = "; ".join(one_line(note) for note in record["variant"]["notes"])
        rows.append(
            f"<tr><td>{_e(record['test'])}</td><td>{_e(record['technique'])}</td>"
            f"<td>{latency['speedup']:.3g}x{unit} [{_bound(low)}, {_bound(high)}]</td>"
            f"<td>{variant}</td><td>{reference}</td>"
            f"<td>{record['sizes']['variant_bytes']:,} B</td>"
            f"<td>{_e(f'{accuracy[0]} {accuracy[1]:.2%}' if accuracy else '-')}</td>"
            f'<td class="{_state(record)}">{_e(record.get("verdict") or "-")}<br>'
            f'<span class="small">{_e(checks)}</span></td>'
            f'<td>{_e(baseline.get("status", "-"))}<br><span class="small">{_e(moved)}</span>'
            f'</td><td class="small">{_e(notes)}</td></tr>'
        )
    return "\n".join(rows) + "</table>"


# -- which variant to ship (search.py): marks in the matrix, and a section ------------------------


def _choice_marks(choices: list[Choice]) -> dict[tuple[str, str], str]:
    """(fingerprint, test id) -> the HTML of the marks of that record's cell."""
    marks = {}
    for choice in choices:
        for candidate in choice.candidates:
            if candidate.test is None:
                continue
            if not candidate.feasible:
                text = f"excluded: {candidate.why_excluded()}"
                html_marks = f'<br><span class="mark excluded">{_e(text)}</span>'
            else:
                words = [f"rank {'=' if candidate.tied else ''}{candidate.rank}"]
                words += ["★ recommended"] if candidate.recommended else []
                words += ["tie"] if candidate.tied else []
                words += ["Pareto"] if candidate.pareto else []
                kind = "recommended" if candidate.recommended else "ranked"
                html_marks = f'<br><span class="mark {kind}">{_e(" · ".join(words))}</span>'
            marks[(choice.fingerprint or "", candidate.test)] = html_marks
    return marks


def _choices_section(choices: list[Choice]) -> str:
    """Per model and machine: what to ship, the ties, the Pareto front and the exclusions."""
    first = choices[0]
    budgets = ", ".join(f"{b.metric.name} {b}" for b in first.budgets) or "none"
    rows = [
        '<h2 id="which-variant">Which variant to ship</h2>',
        f'<p class="meta">Objective {_e(first.objective.describe())}; constraints: '
        f"{_e(budgets)}. A tie: no feasible variant is surely better (the intervals decide, "
        "not the medians); among the tied, the recommendation is the one whose measurement "
        "can decide, then the fewest steps, the smallest, the most accurate.</p>",
        "<table><tr><th>model</th><th>fingerprint</th><th>recommended</th><th>tied</th>"
        "<th>Pareto front</th><th>excluded</th></tr>",
    ]
    for choice in sorted(choices, key=lambda c: (c.spec, c.fingerprint or "")):
        best = choice.recommended
        shown = _e(choice.verdict()) if best is None else f"<b>{_e(best.label)}</b>"
        if best is not None:
            value = best.metrics.get(choice.objective.metric.name)
            if value is not None:
                shown += f'<br><span class="small">{_e(_measured(choice, value))}</span>'
        tied = ", ".join(c.label for c in choice.tied if c is not best) or "-"
        front = ", ".join(c.label for c in choice.front) or "-"
        excluded = "<br>".join(f"{_e(c.label)}: {_e(c.why_excluded())}" for c in choice.excluded)
        state = "pass" if best is not None else "fail"
        rows.append(
            f"<tr><td>{_e(choice.spec)}</td><td>{_e(choice.fingerprint)}</td>"
            f'<td class="{state}">{shown}</td><td>{_e(tied)}</td><td>{_e(front)}</td>'
            f'<td class="small">{excluded or "-"}</td></tr>'
        )
    return "\n".join(rows) + "</table>"


def _measured(choice: Choice, value: Any) -> str:
    metric = choice.objective.metric
    text = f"{metric.name} {metric.format(value.value)}"
    if value.interval is not None:
        text += f" [{metric.format(value.interval[0])}, {metric.format(value.interval[1])}]"
    return text
