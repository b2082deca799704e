"""The ``modelopt`` command: compare two runs, report one, merge many into a matrix.

    modelopt compare OLD.json NEW.json       table of changes with verdicts; exit 1 on a regression
    modelopt report run.json [--html out.html]
    modelopt merge results/*.json --html matrix.html
    modelopt best results.json --budget "accuracy_drop<=1%" [--objective latency]
    modelopt techniques [--update docs/techniques.md]

Inputs are results files written by ``pytest --modelopt-json``. A file that cannot be read or
is malformed stops the command with exit status 2 and a message naming the file and the problem.
``techniques`` prints every registered technique, its requirements and parameters, as Markdown.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_modelopt.atomic import atomic_write_text
from pytest_modelopt.baselines import Tolerances
from pytest_modelopt.errors import InvalidFileError
from pytest_modelopt.readable import table_lines

EXIT_REGRESSION = 1
EXIT_BAD_INPUT = 2
EXIT_BROKEN_PIPE = 141  # as a shell reports a program ended by SIGPIPE (128 + 13)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``modelopt`` command on ``argv`` (default: the command line); return the exit status.

    0 on success, 1 for a regression (``compare``) or no recommendation (``best``), 2 for bad
    input (a file that cannot be read, a budget that cannot be parsed), 141 when the reader of
    stdout stopped early.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.command(args)
        sys.stdout.flush()
    except InvalidFileError as error:
        print(f"modelopt: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        # `modelopt best run.json | head`: the reader has all it wanted. Python's documented
        # recipe: point stdout at devnull so that the flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelopt", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    compare = commands.add_parser("compare", help="what changed between two runs, with verdicts")
    compare.add_argument("old", type=Path, help="the earlier results JSON")
    compare.add_argument("new", type=Path, help="the later results JSON")
    defaults = Tolerances()  # the same defaults as the plugin's regression gate
    compare.add_argument("--speedup-tolerance", type=float, default=defaults.speedup)
    compare.add_argument("--size-tolerance", type=float, default=defaults.size)
    compare.add_argument("--accuracy-tolerance", type=float, default=defaults.accuracy)
    compare.add_argument(
        "--latency-tolerance", type=float, default=None, help="also gate absolute p50 latency"
    )
    compare.set_defaults(command=_compare)

    report = commands.add_parser("report", help="one run as a table, or as an HTML report")
    report.add_argument("run", type=Path, help="a results JSON")
    report.add_argument("--html", type=Path, help="write a self-contained HTML report here")
    report.set_defaults(command=_report)

    merge = commands.add_parser(
        "merge", help="many runs (machines, dates) as a variant x hardware matrix in HTML"
    )
    merge.add_argument(
        "runs", type=Path, nargs="+", help="results JSON files, or directories of them"
    )
    merge.add_argument("--html", type=Path, required=True, help="the HTML file to write")
    merge.add_argument("--title", default="pytest-modelopt: variant x hardware matrix")
    _choice_options(
        merge,
        budget_help="mark each machine's recommended variant, ties and Pareto front under this "
        "constraint (repeatable; as in modelopt best)",
        objective=None,
        objective_help="with --budget: latency (default), throughput, size",
    )
    merge.set_defaults(command=_merge)

    best = commands.add_parser(
        "best",
        help="which variant to ship, per machine and model, under budgets (search.py)",
        description="Rank the measured variants of each model on each machine (fingerprint) "
        "under the budgets, with ties decided by the confidence intervals, the Pareto front "
        "and the recommendation; each search in the files (@pytest.mark.modelopt_best) is "
        "ranked apart, among its own candidates, as the session ranked them; exit 1 when a "
        "model or a search has no variant that meets every budget.",
    )
    best.add_argument(
        "runs", type=Path, nargs="+", help="results JSON files, or directories of them"
    )
    _choice_options(
        best,
        budget_help="a constraint, e.g. 'accuracy_drop<=1%%' or 'size_ratio<=0.5' (repeatable)",
        objective="latency",
        objective_help="latency (paired speedup), throughput (items/s), size (bytes), or a "
        "metric name",
    )
    best.add_argument("--spec", action="append", default=[], help="only this model (repeatable)")
    best.add_argument("--json", type=Path, help="also write the choices here as JSON")
    best.set_defaults(command=_best)

    techniques = commands.add_parser(
        "techniques",
        help="every registered technique, its requirements and parameters, as Markdown",
        description="Print every registered technique (built-in and from installed packages) "
        "as Markdown: what it does, the models it applies to, what it needs, and its parameters "
        "with their types, defaults and meanings.",
    )
    techniques.add_argument(
        "--update",
        type=Path,
        metavar="FILE",
        help="instead of printing, rewrite the generated block of FILE (docs/techniques.md): "
        "what lies between its BEGIN and END marker lines",
    )
    techniques.set_defaults(command=_techniques)
    return parser


def _choice_options(
    parser: argparse.ArgumentParser, *, budget_help: str, objective: str | None, objective_help: str
) -> None:
    """Add the options of a choice (``choose``): ``--budget`` (repeatable) and ``--objective``."""
    parser.add_argument(
        "--budget", action="append", default=[], metavar="METRIC<=VALUE", help=budget_help
    )
    parser.add_argument("--objective", default=objective, help=objective_help)


def _compare(args: argparse.Namespace) -> int:
    from pytest_modelopt.baselines import compare, entry_from_record, hardware_differences
    from pytest_modelopt.budget import Verdict
    from pytest_modelopt.results import load_run

    old, new = load_run(args.old), load_run(args.new)
    tolerances = Tolerances(
        speedup=args.speedup_tolerance,
        size=args.size_tolerance,
        accuracy=args.accuracy_tolerance,
        latency=args.latency_tolerance,
    )
    same_fingerprint = old.fingerprint == new.fingerprint
    lines = [f"old: {old.path} ({old.label})", f"new: {new.path} ({new.label})"]
    if not same_fingerprint:
        differences = hardware_differences(old.hardware, new.hardware, ("old", "new"))
        lines.append(
            f"different fingerprints ({old.fingerprint} != {new.fingerprint}): values are shown, "
            "not judged; differs: " + ("; ".join(differences) or "name only")
        )
    old_records = {r["test"]: r for r in old.records}
    new_records = {r["test"]: r for r in new.records}
    rows: list[tuple[str, ...]] = [("test", "metric", "old", "new", "change", "limit", "verdict")]
    regressions = 0
    for test in sorted(set(old_records) | set(new_records)):
        if test not in new_records:
            rows.append((test, "-", "present", "missing", "", "", "REMOVED"))
            continue
        if test not in old_records:
            rows.append((test, "-", "missing", "present", "", "", "NEW"))
            continue
        before_entry, after_entry = (
            entry_from_record(r[test], recorded="", settings={}, environment={})
            for r in (old_records, new_records)
        )
        same_hardware = same_fingerprint and _detected(old) == _detected(new)
        checks = compare(before_entry, after_entry, tolerances, same_hardware=same_hardware)
        for index, check in enumerate(checks):
            metric = check.check.budget.metric
            before, after = check.baseline.value, check.check.measured.value
            change = f"{(after - before) / before:+.1%}" if before else ""
            verdict = check.verdict.value if same_fingerprint else "not judged"
            if same_fingerprint and check.verdict is Verdict.FAIL:
                regressions += 1
            rows.append(
                (
                    test if index == 0 else "",
                    metric.name,
                    metric.format_measured(check.baseline),
                    metric.format_measured(check.check.measured),
                    change,
                    str(check.check.budget),
                    verdict,
                )
            )
    lines += table_lines(rows)
    lines.append(
        f"{regressions} regression(s)" if same_fingerprint else "not judged: different hardware"
    )
    print("\n".join(lines))
    return EXIT_REGRESSION if regressions else 0


def _detected(run: Any) -> Any:
    return run.hardware.get("detected_fingerprint", run.fingerprint)


def _report(args: argparse.Namespace) -> int:
    from pytest_modelopt.report import results_table
    from pytest_modelopt.results import load_run

    run = load_run(args.run)
    if args.html:
        from pytest_modelopt.htmlreport import render

        atomic_write_text(args.html, render([run], f"pytest-modelopt: {run.label}"))
        print(f"report written to {args.html}")
        return 0
    print(f"{run.path}: {run.label}")
    print("\n".join(line for line, _ in results_table(run.records)))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from pytest_modelopt.htmlreport import render
    from pytest_modelopt.results import load_run

    paths = []
    for path in args.runs:  # a directory stands for its *.json (tox and Windows do not glob)
        paths += sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not paths:
        raise InvalidFileError(f"no results files in {', '.join(map(str, args.runs))}")
    runs = [load_run(path) for path in paths]
    choices = _choices(runs, args.budget, args.objective)
    if choices is None:
        return EXIT_BAD_INPUT
    atomic_write_text(args.html, render(runs, args.title, choices or None))
    fingerprints = sorted({run.fingerprint for run in runs})
    print(f"matrix of {len(runs)} runs ({', '.join(fingerprints)}) written to {args.html}")
    return 0


def _load_runs(arguments: Sequence[Path]) -> list[Any]:
    """Load the results files named, a directory standing for its *.json.

    Directories are read here because tox and Windows do not glob. None found, or one unreadable,
    is an InvalidFileError naming it.
    """
    from pytest_modelopt.results import load_run

    paths = []
    for path in arguments:
        paths += sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not paths:
        raise InvalidFileError(f"no results files in {', '.join(map(str, arguments))}")
    return [load_run(path) for path in paths]


def _choices(runs: list[Any], budgets: list[str], objective: str | None) -> list[Any] | None:
    """Return the search's choices for merge's marks.

    [] when no budget or objective is given, or None after printing why a budget or objective
    cannot be read.
    """
    from pytest_modelopt.errors import BudgetError
    from pytest_modelopt.search import choose_runs

    if not budgets and objective is None:
        return []
    try:
        return choose_runs(runs, budgets, objective or "latency")
    except BudgetError as error:
        print(f"modelopt: error: {error}", file=sys.stderr)
        return None


def _best(args: argparse.Namespace) -> int:
    import json

    from pytest_modelopt.errors import BudgetError
    from pytest_modelopt.search import choose_runs

    try:
        choices = choose_runs(
            _load_runs(args.runs),
            args.budget,
            args.objective,
            specs=args.spec or None,
            searches=True,
        )
    except BudgetError as error:
        print(f"modelopt: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print("\n\n".join(choice.table() for choice in choices))
    if args.json:
        document = [choice.to_dict() for choice in choices]
        atomic_write_text(args.json, json.dumps(document, indent=2, default=str) + "\n")
        print(f"choices written to {args.json}")
    return EXIT_REGRESSION if any(c.recommended is None for c in choices) else 0


def _techniques(args: argparse.Namespace) -> int:
    from pytest_modelopt.catalog import render, update

    if args.update is None:
        sys.stdout.write(render())
        return 0
    try:
        changed = update(args.update)
    except OSError as error:
        raise InvalidFileError(f"{args.update}: {error.strerror or error}") from error
    print(f"{args.update} {'updated' if changed else 'already up to date'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
