"""The paper's "Last / Best" tables and training-curve figures, from run logs (``recipe.rpg.tables.runlogs``).

Table (one row per run, in the order given; two columns per benchmark):

- the metric of a benchmark is verl's validation metric ``val-core/<data_source>/<var>/mean@<n>`` (``var`` =
  ``acc`` by default; ``n`` = the number of samples per problem, 32 in the paper). ``source_map`` reads other
  data-source names as a benchmark (``{"math_dapo": "aime2024"}``);
- **Last** = the value at step ``N`` (``step``, default 400, the paper's; ``"last"`` = each run's last logged
  step). A run without an evaluation at ``N`` gets no number but a note saying so (never a nearby step);
- **Best** = the highest value over the evaluations at steps ``best_from .. N`` (default 1: the evaluation at
  step 0 is the model before training, not a result of it); the earliest step reaching it is reported;
  NaN evaluations are skipped and named in a note;
- marks, as in the paper: per column the highest value **bold**, the second highest underlined, compared at
  the printed precision (``digits``, 4 as in the paper; ties share a mark); only in columns with two or more
  numbers;
- columns: ``benchmarks=None`` (auto) shows the paper's five benchmarks (AIME24, AIME25, AMC23, Minerva,
  OlympiadBench) that some run logged, then any other data source found; the ones left out are named under the
  table. An explicit list shows exactly those columns;
- ``compare_paper=T`` adds, under each run whose name matches a method of the paper's Table T, the paper's
  row and the difference (ours - paper).

Figures: one panel per benchmark column (its ``mean@n`` against step) and one each for the reward
(``critic/score/mean``), the actor entropy (``actor/entropy``) and the mean response length
(``response_length/mean``), verl 0.9.1's names (``trainer/ppo/metric_utils.py``, ``trainer/ppo/ray_trainer.py``);
one line per run that has data, runs without data named in the panel.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from recipe.rpg.tables.paper_results import BENCHMARK_TITLES, PAPER_TABLES, PaperTable
from recipe.rpg.tables.runlogs import Diagnostic, RunLog, config_value, method_from_config, name_key, steps_phrase

DEFAULT_BENCHMARKS = ("aime2024", "aime2025", "amc23", "minerva", "olympiadbench")
#: verl 0.9.1 training metrics -> panel title.
TRAINING_CURVES = {
    "critic/score/mean": "Reward (critic score)",
    "actor/entropy": "Entropy",
    "response_length/mean": "Response length",
}
STATS = ("last", "best")


class ReportError(ValueError):
    """Inputs a table cannot be made from (bad option values, duplicate labels)."""


@dataclass
class Options:
    step: int | str = 400  # an int, or "last" (each run's last logged step)
    benchmarks: tuple[str, ...] | None = None  # None: auto
    source_map: dict[str, str] = field(default_factory=dict)  # logged data source -> benchmark
    n: int | None = None  # None: the single n a run logged
    val_var: str = "acc"
    best_from: int = 1
    digits: int = 4
    compare_paper: int | None = None

    def __post_init__(self):
        if not (self.step == "last" or (isinstance(self.step, int) and not isinstance(self.step, bool)
                                        and self.step >= 0)):
            raise ReportError(f"step must be an integer >= 0 or 'last', got {self.step!r}")
        if self.compare_paper is not None and self.compare_paper not in PAPER_TABLES:
            raise ReportError(f"compare_paper: the paper has result tables {sorted(PAPER_TABLES)}, "
                              f"got {self.compare_paper!r}")
        if self.n is not None and self.n < 1:
            raise ReportError(f"n must be >= 1, got {self.n}")
        if self.digits < 1:
            raise ReportError(f"digits must be >= 1, got {self.digits}")


@dataclass
class Cell:
    value: float | None = None  # None: no number (``note`` says why)
    step: int | None = None  # the step the value comes from
    n: int | None = None
    metric: str | None = None
    note: str | None = None
    mark: str = ""  # "bold" | "underline" | ""


@dataclass
class Row:
    label: str
    kind: str  # "ours" | "paper" | "delta"
    cells: dict[tuple[str, str], Cell]
    run: RunLog | None = None
    paper_method: str | None = None
    last_step: int | None = None  # the step "Last" refers to (ours)


@dataclass
class ValSeries:
    metric: str
    n: int
    values: dict[int, float]


@dataclass
class Report:
    options: Options
    runs: list[RunLog]
    columns: list[str]
    rows: list[Row]
    val_series: dict[tuple[str, str], ValSeries]  # (run label, benchmark) -> series
    table_notes: list[str]
    diagnostics: list[Diagnostic]
    paper: PaperTable | None = None

    @property
    def ours(self) -> list[Row]:
        return [r for r in self.rows if r.kind == "ours"]


# --------------------------------------------------------------------------------------------------------------
# Building the table


def _sources_for(benchmark: str, source_map: dict[str, str]) -> list[str]:
    return [benchmark] + sorted(s for s, b in source_map.items() if b == benchmark and s != benchmark)


def logged_benchmarks(run: RunLog, opts: Options) -> set[str]:
    pattern = re.compile(rf"^val-core/(.+)/{re.escape(opts.val_var)}/mean@\d+$")
    found = set()
    for name in run.series:
        m = pattern.match(name)
        if m:
            found.add(opts.source_map.get(m.group(1), m.group(1)))
    return found


def resolve_val_series(run: RunLog, benchmark: str, opts: Options, columns=()) -> ValSeries | str:
    """The ``val-core`` series of ``benchmark`` in ``run``, or a note saying why there is none (naming the run's
    data sources that no column of ``columns`` reads, as candidates for ``--map``)."""
    var = opts.val_var
    found: dict[tuple[str, int], str] = {}
    for src in _sources_for(benchmark, opts.source_map):
        pattern = re.compile(rf"^val-core/{re.escape(src)}/{re.escape(var)}/mean@(\d+)$")
        for name in run.series:
            m = pattern.match(name)
            if m:
                found[(src, int(m.group(1)))] = name
    if not found:
        other_vars = set()
        for src in _sources_for(benchmark, opts.source_map):
            for name in run.series:
                m = re.match(rf"^val-core/{re.escape(src)}/([^/]+)/mean@\d+$", name)
                if m:
                    other_vars.add(m.group(1))
        wanted = f"val-core/{benchmark}/{var}/mean@<n>"
        if other_vars:
            alt = sorted(other_vars)[0]
            return f"logs no {wanted} but val-core/{benchmark}/{alt}/mean@<n> (use --val-var {alt})"
        unmatched = sorted(logged_benchmarks(run, opts) - {benchmark} - set(columns))
        hint = f"; its val-core data sources: {', '.join(unmatched)} (map one with --map SRC={benchmark})" \
            if unmatched else ""
        return f"never logged {wanted}{hint}"
    sources = sorted({src for src, _ in found})
    if len(sources) > 1:
        return (f"logs several data sources read as {benchmark}: {', '.join(sources)} (check --map)")
    ns = sorted({n for _, n in found})
    if opts.n is not None:
        if opts.n not in ns:
            return f"logs {', '.join(f'mean@{n}' for n in ns)} for {benchmark}, not mean@{opts.n} (--n)"
        n = opts.n
    elif len(ns) > 1:
        return f"logs several sample counts for {benchmark} ({', '.join(f'mean@{n}' for n in ns)}): choose one with --n"
    else:
        n = ns[0]
    metric = found[(sources[0], n)]
    return ValSeries(metric, n, run.series[metric])


def target_step(run: RunLog, opts: Options) -> int | None:
    return run.last_step if opts.step == "last" else opts.step


def last_and_best(values: dict[int, float], step: int, run_last_step: int | None, best_from: int = 1
                  ) -> tuple[Cell, Cell]:
    """Last = ``values[step]``; Best = max of the finite values at steps ``best_from..step`` (earliest step)."""
    if step in values:
        v = values[step]
        last = Cell(v, step) if math.isfinite(v) else Cell(note=f"the value logged at step {step} is NaN")
    elif run_last_step is not None and step > run_last_step:
        last = Cell(note=f"the run ends at step {run_last_step}, before step {step} (see --step)")
    else:
        before = [s for s in values if s < step]
        after = [s for s in values if s > step]
        nearest = ", ".join(str(s) for s in ([max(before)] if before else []) + ([min(after)] if after else []))
        last = Cell(note=f"no evaluation at step {step}" + (f" (nearest: step {nearest})" if nearest else ""))

    window = {s: v for s, v in values.items() if best_from <= s <= step}
    finite = {s: v for s, v in window.items() if math.isfinite(v)}
    if finite:
        top = max(finite.values())
        best = Cell(top, min(s for s, v in finite.items() if v == top))
        skipped = sorted(set(window) - set(finite))
        if skipped:
            best.note = f"Best skips the NaN evaluations at {steps_phrase(skipped)}"
    elif window:
        best = Cell(note=f"every evaluation at steps {best_from}-{step} is NaN")
    else:
        pre = " (only steps before it)" if any(s < best_from for s in values) else ""
        best = Cell(note=f"no evaluation at steps {best_from}-{step}{pre}")
    return last, best


def choose_columns(runs: list[RunLog], opts: Options) -> tuple[list[str], list[str]]:
    """(columns, default benchmarks left out because no run logged them)."""
    if opts.benchmarks is not None:
        return list(opts.benchmarks), []
    found = set().union(*(logged_benchmarks(r, opts) for r in runs)) if runs else set()
    first: list[str] = list(PAPER_TABLES[opts.compare_paper].benchmarks) if opts.compare_paper else []
    columns = first + [b for b in DEFAULT_BENCHMARKS if b in found and b not in first]
    columns += sorted(found - set(columns))
    dropped = [b for b in DEFAULT_BENCHMARKS if b not in columns]
    return columns, dropped


def apply_marks(rows: list[Row], columns: list[str], digits: int) -> None:
    for b in columns:
        for stat in STATS:
            cells = [r.cells[(b, stat)] for r in rows if r.cells[(b, stat)].value is not None]
            if len(cells) < 2:
                continue
            distinct = sorted({round(c.value, digits) for c in cells}, reverse=True)
            for c in cells:
                shown = round(c.value, digits)
                if shown == distinct[0]:
                    c.mark = "bold"
                elif len(distinct) > 1 and shown == distinct[1]:
                    c.mark = "underline"
                else:
                    c.mark = ""


def match_paper_method(run: RunLog, table: PaperTable) -> str | None:
    """The paper's row for a run: its label, its ``trainer.experiment_name`` or that name's first ``-`` part
    (the launchers name runs ``<method>-<model>-<context>``, e.g. ``dapo-qwen3-4b-8k``), or its RPG loss /
    REINFORCE++ estimator (``method_from_config``), compared case- and punctuation-insensitively."""
    methods = {name_key(m): m for m in table.rows}
    experiment = config_value(run.config, "trainer.experiment_name")
    candidates = [run.label, method_from_config(run.config)]
    if isinstance(experiment, str):
        candidates[1:1] = [experiment, experiment.split("-")[0]]
    for name in candidates:
        if name and name_key(name) in methods:
            return methods[name_key(name)]
    return None


def build_report(runs: list[RunLog], opts: Options) -> Report:
    labels = [r.label for r in runs]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ReportError(f"several runs are labelled {', '.join(duplicates)}: name them with --run LABEL=PATH")
    diagnostics = [d for r in runs for d in r.diagnostics]
    columns, dropped = choose_columns(runs, opts)
    table_notes = []
    if dropped:
        table_notes.append(f"Not shown: {', '.join(BENCHMARK_TITLES.get(b, b) for b in dropped)} "
                           f"(no run logged val-core/<data source>/{opts.val_var}/mean@<n> for them).")
    if not columns:
        other = sorted({m.group(1) for r in runs for name in r.series
                        for m in [re.match(r"^val-core/[^/]+/([^/]+)/mean@\d+$", name)] if m})
        hint = f" (the runs log val-core/<data source>/{other[0]}/mean@<n>: use --val-var {other[0]})" if other else ""
        table_notes.append(f"No run logged any val-core/<data source>/{opts.val_var}/mean@<n> metric{hint}: "
                           "the table has no benchmark columns.")

    rows: list[Row] = []
    val_series: dict[tuple[str, str], ValSeries] = {}
    for run in runs:
        step = target_step(run, opts)
        cells: dict[tuple[str, str], Cell] = {}
        for b in columns:
            if step is None:
                cells[(b, "last")] = Cell(note="the run has no records")
                cells[(b, "best")] = Cell(note="the run has no records")
                continue
            resolved = resolve_val_series(run, b, opts, columns)
            if isinstance(resolved, str):
                cells[(b, "last")] = Cell(note=resolved)
                cells[(b, "best")] = Cell(note=resolved)
                diagnostics.append(Diagnostic(run.label, "missing_metric", f"{BENCHMARK_TITLES.get(b, b)}: {resolved}"))
                continue
            val_series[(run.label, b)] = resolved
            last, best = last_and_best(resolved.values, step, run.last_step, opts.best_from)
            for stat, cell in (("last", last), ("best", best)):
                cell.n, cell.metric = resolved.n, resolved.metric
                cells[(b, stat)] = cell
        rows.append(Row(run.label, "ours", cells, run=run, last_step=step))
    apply_marks(rows, columns, opts.digits)

    paper = PAPER_TABLES[opts.compare_paper] if opts.compare_paper else None
    if paper is not None:
        rows = _with_paper_rows(rows, columns, paper, table_notes)
    return Report(opts, runs, columns, rows, val_series, table_notes, diagnostics, paper)


def _with_paper_rows(rows: list[Row], columns: list[str], paper: PaperTable, table_notes: list[str]) -> list[Row]:
    out: list[Row] = []
    unmatched = []
    for row in rows:
        out.append(row)
        method = match_paper_method(row.run, paper)
        if method is None:
            unmatched.append(row.label)
            continue
        row.paper_method = method
        paper_cells, delta_cells = {}, {}
        for b in columns:
            for i, stat in enumerate(STATS):
                if b not in paper.benchmarks:
                    pc = Cell(note=f"the paper's Table {paper.number} has no {BENCHMARK_TITLES.get(b, b)} column")
                else:
                    issue = paper.known_issues.get((method, b, stat))
                    pc = Cell(paper.rows[method][b][i], 400, 32, note=f"paper: {issue}" if issue else None)
                ours = row.cells[(b, stat)]
                if ours.value is not None and pc.value is not None:
                    dc = Cell(ours.value - pc.value, ours.step, ours.n)
                else:
                    dc = Cell(note="no difference: a value is missing above")
                paper_cells[(b, stat)], delta_cells[(b, stat)] = pc, dc
        out.append(Row(f"{method} (paper, Table {paper.number})", "paper", paper_cells, paper_method=method))
        out.append(Row(f"{method}: ours - paper", "delta", delta_cells, paper_method=method))
    ours_steps = sorted({r.last_step for r in rows if r.kind == "ours" and r.last_step is not None})
    ours_n = sorted({c.n for r in rows if r.kind == "ours" for c in r.cells.values() if c.n is not None})
    if ours_steps != [400] or ours_n != [32]:
        table_notes.append(f"The paper's Last is Mean@32 at step 400; ours is "
                           f"{', '.join(f'Mean@{n}' for n in ours_n) or 'missing'} at "
                           f"step {', '.join(map(str, ours_steps)) or '-'}.")
    if unmatched:
        table_notes.append(
            f"No row in the paper's Table {paper.number} for: {', '.join(unmatched)} (its rows: "
            f"{', '.join(paper.rows)}; a run is matched by its label, its experiment name or the RPG loss in its "
            "config).")
    return out


# --------------------------------------------------------------------------------------------------------------
# Rendering


def _fmt(cell: Cell, kind: str, digits: int) -> str:
    if cell.value is None:
        return "—"
    return f"{cell.value:+.{digits}f}" if kind == "delta" else f"{cell.value:.{digits}f}"


class _Notes:
    """Footnotes (a), (b), ... shared by cells with the same text."""

    def __init__(self):
        self.keys: dict[str, str] = {}

    def ref(self, text: str) -> str:
        if text not in self.keys:
            i = len(self.keys)
            self.keys[text] = (chr(ord("a") + i % 26)) + (str(i // 26) if i >= 26 else "")
        return self.keys[text]


def _note_text(row: Row, cell: Cell) -> str:
    who = {"ours": row.label, "paper": row.paper_method}.get(row.kind, f"{row.paper_method} vs paper")
    return f"{who}: {cell.note}"


def column_title(benchmark: str) -> str:
    return BENCHMARK_TITLES.get(benchmark, benchmark)


def caption(report: Report) -> str:
    opts = report.options
    ns = sorted({c.n for r in report.ours for c in r.cells.values() if c.n is not None})
    metric = f"Mean@{ns[0]}" if len(ns) == 1 else "Mean@n" + (" (n per run: table.csv)" if ns else "")
    at = f"step {opts.step}" if opts.step != "last" else "each run's last logged step"
    last_steps = sorted({r.last_step for r in report.ours if r.last_step is not None})
    if opts.step == "last" and last_steps:
        at += f" ({', '.join(f'{r.label}: {r.last_step}' for r in report.ours if r.last_step is not None)})"
    upto = "N" if opts.step == "last" else str(opts.step)
    text = (f"\"Last\": {metric} accuracy at {at}. \"Best\": the highest {metric} over the evaluations at steps "
            f"{opts.best_from}-{upto}. Bold: highest in the column, underlined: second highest (compared at "
            f"{opts.digits} decimals; ties share a mark).")
    if report.paper is not None:
        text += f" Indented rows: the {report.paper.source}, and our difference to it."
    return text


def render_markdown(report: Report) -> str:
    d = report.options.digits
    notes = _Notes()
    header = ["Method"] + [f"{column_title(b)} {s.capitalize()}" for b in report.columns for s in STATS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for row in report.rows:
        label = row.label if row.kind == "ours" else f"↳ {row.label}"
        cells = []
        for b in report.columns:
            for s in STATS:
                c = row.cells[(b, s)]
                text = _fmt(c, row.kind, d)
                if c.mark == "bold":
                    text = f"**{text}**"
                elif c.mark == "underline":
                    text = f"<u>{text}</u>"
                if c.note:
                    text += f" ({notes.ref(_note_text(row, c))})"
                cells.append(text)
        lines.append("| " + " | ".join([label.replace("|", "\\|")] + cells) + " |")
    out = ["# Results", "", caption(report), ""] + lines + [""]
    if report.paper is not None:
        p = report.paper
        out += [f"Paper rows, from the paper (p. {p.page}; {p.model}, {p.context}): {p.caption}", ""]
    if notes.keys or report.table_notes:
        out += ["Notes:", ""]
        out += [f"- ({k}) {t}" for t, k in notes.keys.items()]
        out += [f"- {t}" for t in report.table_notes]
        out.append("")
    out += ["## Runs", "", "| Label | Path | Log | Segments | Steps | Config |", "|---|---|---|---:|---|---|"]
    for run in report.runs:
        steps = run.steps
        span = f"{steps[0]}-{steps[-1]} ({len(steps)} logged)" if steps else "none"
        out.append(f"| {run.label} | `{run.path}` | {run.source} | {len(run.segments)} | {span} | "
                   f"{f'`{run.config_path}`' if run.config_path else 'none'} |")
    out += ["", "## Log diagnostics", ""]
    out += [f"- {d}" for d in report.diagnostics] or ["None: every log line was read, no gaps, abandoned branches or NaN."]
    out += ["", "## Figures", "",
            "`curves.png`, `curves.pdf`: one panel per benchmark column (Mean@n against step) and the training "
            "curves " + ", ".join(f"{t} (`{m}`)" for m, t in TRAINING_CURVES.items()) + "; one line per run.", ""]
    return "\n".join(out) + "\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "<": r"\textless{}", ">": r"\textgreater{}"}


def tex_escape(text: str) -> str:
    text = "".join(_TEX_ESCAPES.get(ch, ch) for ch in text).replace("—", "--")
    return re.sub(r'"([^"]*)"', r"``\1''", text)  # "Last" -> ``Last''


def _tex_number(text: str) -> str:
    return "--" if text == "—" else re.sub(r"^([+-])", r"$\1$", text)


def render_latex(report: Report) -> str:
    d = report.options.digits
    notes = _Notes()
    out = [
        "% Generated by scripts/make_tables.py. Needs \\usepackage{booktabs}.",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{tex_escape(caption(report))}}}",
        "\\label{tab:rpg-results}",
        "\\begin{tabular}{l" + "cc" * len(report.columns) + "}",
        "\\toprule",
    ]
    if report.columns:
        out.append(" & " + " & ".join(f"\\multicolumn{{2}}{{c}}{{{tex_escape(column_title(b))}}}"
                                      for b in report.columns) + " \\\\")
        out.append(" ".join(f"\\cmidrule(lr){{{2 + 2 * i}-{3 + 2 * i}}}" for i in range(len(report.columns))))
    out.append("Method" + "".join(" & Last & Best" for _ in report.columns) + " \\\\")
    out.append("\\midrule")
    for row in report.rows:
        if row.kind == "ours":
            label = tex_escape(row.label)
        elif row.kind == "paper":
            label = f"\\quad\\textit{{paper (Table {report.paper.number})}}"
        else:
            label = "\\quad\\textit{difference}"
        cells = []
        for b in report.columns:
            for s in STATS:
                c = row.cells[(b, s)]
                text = _tex_number(_fmt(c, row.kind, d))
                if c.mark == "bold":
                    text = f"\\textbf{{{text}}}"
                elif c.mark == "underline":
                    text = f"\\underline{{{text}}}"
                elif row.kind != "ours":
                    text = f"\\textit{{{text}}}"
                if c.note:
                    text += f"\\textsuperscript{{{notes.ref(_note_text(row, c))}}}"
                cells.append(text)
        out.append(" & ".join([label] + cells) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}"]
    extra = [f"({k}) {tex_escape(t)}" for t, k in notes.keys.items()] + [tex_escape(t) for t in report.table_notes]
    if extra:
        out.append("\\par\\smallskip{\\footnotesize\\raggedright " + " \\\\\n".join(extra) + "\\par}")
    out.append("\\end{table}")
    return "\n".join(out) + "\n"


CSV_FIELDS = ("method", "row", "benchmark", "statistic", "value", "step", "n", "metric", "mark", "note", "run_path")


def write_csv(report: Report, path: Path) -> None:
    """Long format: one line per table cell (``value`` at full precision, empty only when ``note`` says why)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for row in report.rows:
            method = row.label if row.kind == "ours" else row.paper_method
            for b in report.columns:
                for s in STATS:
                    c = row.cells[(b, s)]
                    w.writerow(dict(
                        method=method, row=row.kind, benchmark=b, statistic=s,
                        value="" if c.value is None else repr(float(c.value)),
                        step="" if c.step is None else c.step, n="" if c.n is None else c.n,
                        metric=c.metric or (f"paper Table {report.paper.number}" if row.kind == "paper" else ""),
                        mark=c.mark, note=c.note or "",
                        run_path=str(row.run.path) if row.run is not None else ""))


# --------------------------------------------------------------------------------------------------------------
# Figures


def curve_panels(report: Report) -> list[tuple[str, str, dict[str, dict[int, float]]]]:
    """(title, y label, {run label: {step: value}}) for every panel; runs without a finite value are left out."""
    panels = []
    for b in report.columns:
        lines = {}
        for run in report.runs:
            vs = report.val_series.get((run.label, b))
            if vs is not None:
                lines[run.label] = vs.values
        ns = sorted({report.val_series[(r, b)].n for r in lines})
        ylabel = f"Mean@{ns[0]}" if len(ns) == 1 else "Mean@n"
        panels.append((column_title(b), ylabel, lines))
    for metric, title in TRAINING_CURVES.items():
        panels.append((title, metric, {r.label: r.series[metric] for r in report.runs if metric in r.series}))
    return [(t, y, {k: v for k, v in lines.items() if any(math.isfinite(x) for x in v.values())})
            for t, y, lines in panels]


def with_breaks(values: dict[int, float]) -> tuple[list[float], list[float]]:
    """Steps and values in step order, with a NaN point inserted where the spacing of the steps is more than
    1.5 times its median (missing steps or evaluations show as a break in the line, not a straight segment)."""
    steps = sorted(values)
    diffs = sorted(b - a for a, b in zip(steps, steps[1:]))
    if not diffs:
        return [float(s) for s in steps], [values[s] for s in steps]
    limit = 1.5 * diffs[len(diffs) // 2]
    xs, ys = [float(steps[0])], [values[steps[0]]]
    for a, b in zip(steps, steps[1:]):
        if b - a > limit:
            xs.append((a + b) / 2)
            ys.append(math.nan)
        xs.append(float(b))
        ys.append(values[b])
    return xs, ys


def plot_curves(report: Report):
    """The figure (a matplotlib ``Figure``; Agg backend). Panel i's ``Axes`` carries one ``Line2D`` per run
    that has data in it, labelled with the run's label; runs without data are named in the panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = curve_panels(report)
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows + 0.6), squeeze=False)
    cmap = plt.get_cmap("tab10" if len(report.runs) <= 10 else "tab20")
    colors = {run.label: cmap(i % cmap.N) for i, run in enumerate(report.runs)}
    for ax, (title, ylabel, lines) in zip(axes.flat, panels):
        for run in report.runs:
            if run.label in lines:
                steps, values = with_breaks(lines[run.label])
                ax.plot(steps, values, label=run.label, color=colors[run.label],
                        linewidth=1.4, marker="o" if len(lines[run.label]) <= 20 else None, markersize=3)
        missing = [r.label for r in report.runs if r.label not in lines]
        if missing:
            ax.text(0.02, 0.02, "no data: " + ", ".join(missing), transform=ax.transAxes, fontsize=7,
                    color="0.4", va="bottom")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color=colors[r.label], label=r.label) for r in report.runs]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False)
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 1))
    return fig


# --------------------------------------------------------------------------------------------------------------


def write_report(report: Report, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "table.md", out_dir / "table.tex", out_dir / "table.csv",
             out_dir / "curves.png", out_dir / "curves.pdf"]
    paths[0].write_text(render_markdown(report))
    paths[1].write_text(render_latex(report))
    write_csv(report, paths[2])
    import matplotlib.pyplot as plt

    fig = plot_curves(report)
    fig.savefig(paths[3], dpi=150)
    fig.savefig(paths[4])
    plt.close(fig)
    return paths
