"""The paper's "Last / Best" table and training-curve figures from the logs of your runs (``scripts/make_tables.py``).

    python scripts/make_tables.py --run RPG-UFKL=runs/rpg_ufkl --run DAPO=runs/dapo --out report/

PATH (of --run [LABEL=]PATH) is a run directory (<run_dir>/logs/*.jsonl: one verl file-logger JSONL per launch
segment, ordered by content, a later segment taking over at its first step and a launch that resumed no
checkpoint starting a new series; <run_dir>/resolved_config.yaml), a single
JSONL file, or a TensorBoard event directory. Without LABEL= the run is named by trainer.experiment_name of its
resolved config (else by its policy loss). Writes table.md, table.tex (booktabs), table.csv (one line per cell),
curves.png and curves.pdf to --out. Everything odd in the logs (unparsable lines, gaps, abandoned branches,
NaN, missing evaluations) is printed and listed in table.md; cells without a number say why.
Semantics of Last/Best and of the marks: recipe/rpg/tables/report.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recipe.rpg.tables.paper_results import PAPER_TABLES
from recipe.rpg.tables.report import DEFAULT_BENCHMARKS, Options, ReportError, build_report, write_report
from recipe.rpg.tables.runlogs import RunLogError, load_run


def _pair(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"{what} must look like A=B, got {text!r}")
    return key, value


def _step(text: str) -> int | str:
    if text == "last":
        return text
    try:
        step = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--step must be an integer >= 0 or 'last', got {text!r}") from None
    if step < 0:
        raise argparse.ArgumentTypeError(f"--step must be >= 0, got {step}")
    return step


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="make_tables.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, metavar="[LABEL=]PATH",
                   help="a run (repeatable; rows keep this order)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--step", type=_step, default=400,
                   help="the step of 'Last' and the end of 'Best' (default 400, the paper's); 'last' = each run's "
                        "last logged step (for short runs)")
    p.add_argument("--benchmarks", default="auto",
                   help="comma-separated benchmark columns, or 'auto' (default): those of "
                        f"{','.join(DEFAULT_BENCHMARKS)} that some run logged, then any other val-core data source")
    p.add_argument("--map", action="append", default=[], metavar="SRC=NAME",
                   help="read the logged data source SRC as benchmark NAME (repeatable), e.g. math_dapo=aime2024")
    p.add_argument("--n", type=int, default=None,
                   help="use val-core/<source>/<var>/mean@N (default: the one sample count each run logged)")
    p.add_argument("--val-var", default="acc", help="the validation variable (default acc; verl logs 'reward' "
                                                    "when the reward function returns no 'acc')")
    p.add_argument("--best-from", type=int, default=1,
                   help="first step 'Best' considers (default 1: the step-0 evaluation is the untrained model)")
    p.add_argument("--digits", type=int, default=4, help="decimals printed and compared for the marks (default 4)")
    p.add_argument("--compare-paper", type=int, choices=sorted(PAPER_TABLES), default=None, metavar="TABLE",
                   help=f"add the paper's numbers (Table {', '.join(map(str, sorted(PAPER_TABLES)))}) under the "
                        "matching runs")
    p.add_argument("--strict", action="store_true", help="exit 1 when anything was reported about the logs")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        source_map = {}
        for item in args.map:
            src, name = _pair(item, "--map")
            if src in source_map and source_map[src] != name:
                raise ReportError(f"--map {src} is given twice ({source_map[src]}, {name})")
            source_map[src] = name
        benchmarks = None if args.benchmarks == "auto" else tuple(b for b in args.benchmarks.split(",") if b)
        if benchmarks == ():
            raise ReportError("--benchmarks is empty")
        opts = Options(step=args.step, benchmarks=benchmarks, source_map=source_map, n=args.n,
                       val_var=args.val_var, best_from=args.best_from, digits=args.digits,
                       compare_paper=args.compare_paper)
        runs = []
        for item in args.run:
            label, sep, path = item.partition("=")
            runs.append(load_run(label, path) if sep and label and path else load_run(None, item))
        report = build_report(runs, opts)
    except (ReportError, RunLogError, argparse.ArgumentTypeError) as e:
        print(f"make_tables.py: error: {e}", file=sys.stderr)
        return 2
    if not any(run.series for run in runs):
        for d in report.diagnostics:
            print(f"  {d}", file=sys.stderr)
        print("make_tables.py: error: no run has any logged metric", file=sys.stderr)
        return 2

    try:
        import matplotlib  # noqa: F401  (the figures; checked before anything is written)
    except ImportError as e:
        print(f"make_tables.py: error: the figures need matplotlib, which this Python ({sys.executable}) lacks "
              f"({e}); nothing was written. Use the project's environment (.venv/bin/python, set up by "
              "`bash scripts/setup.sh`) or `pip install matplotlib`", file=sys.stderr)
        return 2
    paths = write_report(report, args.out)
    for run in runs:
        steps = run.steps
        span = f"steps {steps[0]}-{steps[-1]}" if steps else "no steps"
        print(f"{run.label}: {run.path} ({run.source}, {len(run.segments)} segment(s), {span})")
    if report.diagnostics:
        print(f"{len(report.diagnostics)} thing(s) to know about the logs:", file=sys.stderr)
        for d in report.diagnostics:
            print(f"  {d}", file=sys.stderr)
    missing = sum(1 for r in report.ours for c in r.cells.values() if c.value is None)
    if missing:
        print(f"{missing} table cell(s) have no number; table.md says why for each", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 1 if args.strict and report.diagnostics else 0
