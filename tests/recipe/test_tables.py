"""recipe/rpg/tables (scripts/make_tables.py): Last/Best tables, marks, paper comparison and figures from synthetic run logs.

The logs are written here in verl's file-logger format (``{"step": N, "data": {...}}`` per line) and as real
TensorBoard event files; every expected number below is worked out by hand from the values written.
"""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recipe.rpg.tables.paper_results import PAPER_BOLD, PAPER_TABLES, PAPER_UNDERLINED
from recipe.rpg.tables.report import Options, Row, apply_marks, build_report, plot_curves, with_breaks
from recipe.rpg.tables.runlogs import load_run

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "make_tables.py"
NAN = math.nan


from recipe.rpg.tables import cli as make_tables  # noqa: E402  (scripts/make_tables.py is its command line)


def write_jsonl(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for line in lines:
            f.write(line if isinstance(line, str) else json.dumps(line))
            f.write("\n")


def val(step_values: dict[str, dict[int, float]], step: int, n: int = 32) -> dict:
    out = {}
    for source, values in step_values.items():
        if step in values:
            v = values[step]
            out[f"val-core/{source}/acc/mean@{n}"] = None if isinstance(v, float) and math.isnan(v) else v
    return out


def train(step: int, offset: float) -> dict:
    """Training metrics with verl 0.9.1's names; the values are simple functions of the step."""
    return {"critic/score/mean": offset + step / 100, "actor/entropy": 1.0 - step / 100,
            "response_length/mean": 500.0 + step, "actor/pg_loss": 0.1}


# --- run A: "RPG-UFKL", a run directory with two launch segments (resumed at step 20) ----------------------
A_VAL = {
    "aime2024": {0: 0.10, 10: 0.30, 20: 0.55, 30: 0.50, 40: 0.45},
    "aime2025": {0: 0.05, 10: 0.20, 20: 0.25, 30: NAN, 40: 0.35},
    "amc23": {0: 0.60, 10: 0.70, 20: 0.80, 30: 0.85, 40: 0.90},
}
A_SEG1_VAL_AT_20 = {"aime2024": {20: 0.52}, "aime2025": {20: 0.21}, "amc23": {20: 0.81}}  # replaced by segment 2

# --- run B: "DAPO", one JSONL file: steps out of order, an unparsable line, an evaluation missing at 40 --------
B_VAL = {
    "aime2024": {0: 0.90, 10: 0.40, 20: 0.60, 30: 0.40, 35: 0.62},
    "aime2025": {10: 0.30, 20: 0.30, 30: 0.20, 35: 0.25, 40: 0.30},
}

# --- run C: "my-grpo", TensorBoard events, training steps 31-33 missing -------------------------------------
C_VAL = {
    "aime2024": {0: 0.20, 20: 0.55004, 40: 0.50},
    "aime2025": {20: 0.40, 40: 0.40},
    "amc23": {20: 0.80, 40: 0.95},
}
C_TRAIN_STEPS = [s for s in range(1, 41) if s not in (31, 32, 33)]


def make_run_a(root: Path) -> Path:
    run = root / "rpg_ufkl"
    seg1 = [{"step": 0, "data": val(A_VAL, 0)}]
    for s in range(1, 26):
        data = train(s, 0.0)
        data.update(val({**A_VAL, **A_SEG1_VAL_AT_20} if s == 20 else A_VAL, s))
        seg1.append({"step": s, "data": data})
    # segment 2: verl re-validates the step-20 checkpoint on resume, then trains steps 21-40
    seg2 = [{"step": 20, "data": val(A_VAL, 20)}]
    seg2 += [{"step": s, "data": {**train(s, 0.0), **val(A_VAL, s)}} for s in range(21, 41)]
    write_jsonl(run / "logs" / "20260101T000000Z.jsonl", seg1)
    write_jsonl(run / "logs" / "20260102T093000Z.jsonl", seg2)
    (run / "resolved_config.yaml").write_text(
        "trainer:\n  experiment_name: rpg_ufkl\n  project_name: rpg\n"
        "actor_rollout_ref:\n  actor:\n    policy_loss:\n      loss_mode: rpg_ufkl\n"
        "algorithm:\n  adv_estimator: grpo\n")
    return run


def make_run_b(root: Path) -> Path:
    path = root / "dapo.jsonl"
    order = list(range(0, 16)) + list(range(30, 41)) + list(range(16, 30))  # non-monotonic
    lines = []
    for s in order:
        data = {**(train(s, 0.5) if s else {}), **val(B_VAL, s)}
        if s == 12:
            data["actor/entropy"] = None  # orjson writes NaN as null
        lines.append({"step": s, "data": data})
        if s == 5:
            lines.append('{"step": 6, "data": {"actor/entropy": 0.9')  # truncated line
    write_jsonl(path, lines)
    return path


def make_run_c(root: Path) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    tb = root / "grpo_tb"
    writer = SummaryWriter(str(tb))
    for s in sorted({0, *C_TRAIN_STEPS}):
        data = {**(train(s, 1.0) if s else {}), **val(C_VAL, s)}
        for key, value in data.items():
            writer.add_scalar(key, value, s)
    writer.close()
    return tb


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return make_run_a(root), make_run_b(root), make_run_c(root)


@pytest.fixture(scope="module")
def produced(runs, tmp_path_factory):
    a, b, c = runs
    out = tmp_path_factory.mktemp("report")
    rc = make_tables.main(["--run", str(a), "--run", f"DAPO={b}", "--run", f"my-grpo={c}", "--step", "40",
                           "--out", str(out)])
    return rc, out


# Hand-computed table, step N = 40, Best over steps 1-40.  (value, step) or (None, note substring); then the mark.
EXPECTED = {
    ("RPG-UFKL", "aime2024", "last"): ((0.45, 40), "underline"),
    ("RPG-UFKL", "aime2024", "best"): ((0.55, 20), "underline"),  # the resumed segment's 0.55 beats 0.52
    ("RPG-UFKL", "aime2025", "last"): ((0.35, 40), "underline"),
    ("RPG-UFKL", "aime2025", "best"): ((0.35, 40), "underline"),  # NaN at step 30 skipped, with a note
    ("RPG-UFKL", "amc23", "last"): ((0.90, 40), "underline"),
    ("RPG-UFKL", "amc23", "best"): ((0.90, 40), "underline"),
    ("DAPO", "aime2024", "last"): ((None, "no evaluation at step 40 (nearest: step 35)"), ""),
    ("DAPO", "aime2024", "best"): ((0.62, 35), "bold"),  # step 0's 0.90 is before training
    ("DAPO", "aime2025", "last"): ((0.30, 40), ""),
    ("DAPO", "aime2025", "best"): ((0.30, 10), ""),  # earliest step reaching the maximum
    ("DAPO", "amc23", "last"): ((None, "never logged val-core/amc23/acc/mean@<n>"), ""),
    ("DAPO", "amc23", "best"): ((None, "never logged val-core/amc23/acc/mean@<n>"), ""),
    ("my-grpo", "aime2024", "last"): ((0.50, 40), "bold"),
    ("my-grpo", "aime2024", "best"): ((0.55004, 20), "underline"),  # 0.5500 at 4 decimals: ties with RPG-UFKL
    ("my-grpo", "aime2025", "last"): ((0.40, 40), "bold"),
    ("my-grpo", "aime2025", "best"): ((0.40, 20), "bold"),
    ("my-grpo", "amc23", "last"): ((0.95, 40), "bold"),
    ("my-grpo", "amc23", "best"): ((0.95, 40), "bold"),
}
EXPECTED_NOTES = {("RPG-UFKL", "aime2025", "best"): "Best skips the NaN evaluations at step 30"}
METHODS = ["RPG-UFKL", "DAPO", "my-grpo"]
BENCHES = {"AIME24": "aime2024", "AIME25": "aime2025", "AMC23": "amc23"}

CELL_RE = re.compile(r"^(\*\*|<u>)?([+-]?\d+\.\d{4}|—)(\*\*|</u>)?(?: \(([a-z]\d*)\))?$")


def parse_markdown_table(text: str):
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    rows = {}
    end = next(i for i, ln in enumerate(text.splitlines()) if ln.startswith("## Runs"))
    table_lines = [ln for ln in text.splitlines()[:end] if ln.startswith("| ")][1:]
    for ln in table_lines:
        parts = [p.strip() for p in ln.strip().strip("|").split(" | ")]
        rows[parts[0]] = dict(zip(header[1:], parts[1:]))
    notes = dict(re.findall(r"^- \(([a-z]\d*)\) (.*)$", text, flags=re.M))
    return header, rows, notes


def test_markdown_every_cell_and_mark(produced):
    rc, out = produced
    assert rc == 0
    header, rows, notes = parse_markdown_table((out / "table.md").read_text())
    assert header == ["Method"] + [f"{t} {s}" for t in BENCHES for s in ("Last", "Best")]
    assert list(rows) == METHODS  # the order given on the command line
    for method in METHODS:
        for title, bench in BENCHES.items():
            for stat in ("last", "best"):
                (value, extra), mark = EXPECTED[(method, bench, stat)]
                m = CELL_RE.match(rows[method][f"{title} {stat.capitalize()}"])
                assert m, rows[method][f"{title} {stat.capitalize()}"]
                opening, number, closing, note_ref = m.groups()
                assert {"**": "bold", "<u>": "underline", None: ""}[opening] == mark, (method, bench, stat)
                assert closing == {"bold": "**", "underline": "</u>", "": None}[mark]
                if value is None:
                    assert number == "—" and note_ref is not None
                    assert notes[note_ref] == f"{method}: {extra}" or extra in notes[note_ref]
                    assert notes[note_ref].startswith(f"{method}: ")
                else:
                    assert number == f"{value:.4f}"
                    expected_note = EXPECTED_NOTES.get((method, bench, stat))
                    assert (note_ref is not None) == (expected_note is not None)
                    if expected_note:
                        assert notes[note_ref] == f"{method}: {expected_note}"
    # Minerva and OlympiadBench are left out (no run logged them), and the table says so.
    assert "Not shown: Minerva-Math, OlympiadBench" in (out / "table.md").read_text()


def test_csv_every_cell(produced):
    _, out = produced
    with open(out / "table.csv") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == len(EXPECTED)
    seen = set()
    for line in lines:
        key = (line["method"], line["benchmark"], line["statistic"])
        seen.add(key)
        (value, extra), mark = EXPECTED[key]
        assert line["row"] == "ours" and line["mark"] == mark
        if value is None:
            assert line["value"] == "" and line["step"] == "" and extra in line["note"]
        else:
            assert float(line["value"]) == pytest.approx(value, rel=1e-6)  # TensorBoard stores float32
            assert int(line["step"]) == extra and line["n"] == "32"
            assert line["metric"] == f"val-core/{key[1]}/acc/mean@32"
            assert line["note"] == EXPECTED_NOTES.get(key, "")
    assert seen == set(EXPECTED)


def test_latex_booktabs(produced):
    _, out = produced
    tex = (out / "table.tex").read_text()
    for needle in ("\\toprule", "\\midrule", "\\bottomrule", "\\multicolumn{2}{c}{AIME24}", "\\cmidrule(lr){2-3}",
                   "\\textbf{0.6200}", "\\underline{0.5500}", "my-grpo"):
        assert needle in tex, needle
    body = tex[tex.index("\\midrule"):tex.index("\\bottomrule")]
    data_rows = [ln for ln in body.splitlines() if ln.endswith("\\\\")]
    assert [ln.split(" & ")[0] for ln in data_rows] == METHODS
    assert all(ln.count(" & ") == 6 for ln in data_rows)
    assert tex.count("\\textbf{") == 6 and tex.count("\\underline{") == 7  # the marks of EXPECTED


def test_diagnostics_name_run_and_problem(runs):
    a, b, c = runs
    ra, rb, rc = load_run(None, a), load_run("DAPO", b), load_run("my-grpo", c)
    assert ra.label == "RPG-UFKL"  # from trainer.experiment_name, in the paper's spelling
    kinds = lambda run: {d.kind: d.message for d in run.diagnostics}  # noqa: E731
    ka, kb, kc = kinds(ra), kinds(rb), kinds(rc)
    assert ka["abandoned"] == ("20260101T000000Z.jsonl: steps 21-25 dropped, a branch abandoned when "
                               "20260102T093000Z.jsonl took over at step 21")
    assert "20260102T093000Z.jsonl re-logs step 20 of 20260101T000000Z.jsonl" in ka["overlap"]
    assert "aime2025/acc/mean@32 is null at step 30" in ka["non_finite"]
    assert "gap" not in ka and "unparsable" not in ka
    assert "dapo.jsonl: 1 line(s) skipped: line 7" in kb["unparsable"]
    assert "step 16 after step 40" in kb["backwards_step"]
    assert "actor/entropy is null at step 12" in kb["non_finite"]
    assert kc["gap"].startswith("steps 31-33 (3 in all) have no training metrics")
    # the merge kept the later segment's values and the out-of-order steps
    assert ra.series["val-core/aime2024/acc/mean@32"][20] == 0.55
    assert ra.series["critic/score/mean"] == {s: s / 100 for s in range(1, 41)}
    assert sorted(rb.series["response_length/mean"]) == list(range(1, 41))
    assert math.isnan(rb.series["actor/entropy"][12])
    assert sorted(rc.series["actor/entropy"]) == C_TRAIN_STEPS


def test_tensorboard_resumed_run_later_file_wins(tmp_path):
    """A resumed run with TensorBoard: one event file per launch in the same directory, merged by step."""
    from torch.utils.tensorboard import SummaryWriter

    for steps, value in ((range(0, 6), 0.1), (range(5, 9), 0.2)):
        writer = SummaryWriter(str(tmp_path / "tb"))
        for s in steps:
            writer.add_scalar("val-core/aime2024/acc/mean@32", value + s / 100, s)
        writer.close()
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 2
    run = load_run("R", tmp_path / "tb")
    assert run.source == "tensorboard" and len(run.segments) == 2
    assert run.series["val-core/aime2024/acc/mean@32"] == pytest.approx(
        {s: (0.1 if s < 5 else 0.2) + s / 100 for s in range(9)})
    assert [d.kind for d in run.diagnostics] == ["abandoned"] and "step 5 dropped" in run.diagnostics[0].message


def test_figure_lines_per_panel(runs, produced):
    _, out = produced
    for name, magic in (("curves.png", b"\x89PNG"), ("curves.pdf", b"%PDF")):
        data = (out / name).read_bytes()
        assert data.startswith(magic) and len(data) > 10_000
    a, b, c = runs
    report = build_report([load_run(None, a), load_run("DAPO", b), load_run("my-grpo", c)], Options(step=40))
    fig = plot_curves(report)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["AIME24", "AIME25", "AMC23", "Reward (critic score)", "Entropy",
                                                "Response length"]
    expected_lines = {
        "AIME24": {"RPG-UFKL": A_VAL["aime2024"], "DAPO": B_VAL["aime2024"], "my-grpo": C_VAL["aime2024"]},
        "AIME25": {"RPG-UFKL": A_VAL["aime2025"], "DAPO": B_VAL["aime2025"], "my-grpo": C_VAL["aime2025"]},
        "AMC23": {"RPG-UFKL": A_VAL["amc23"], "my-grpo": C_VAL["amc23"]},
        "Entropy": {"RPG-UFKL": {s: 1 - s / 100 for s in range(1, 41)},
                    "DAPO": {s: 1 - s / 100 for s in range(1, 41) if s != 12},
                    "my-grpo": {s: 1 - s / 100 for s in C_TRAIN_STEPS}},
    }
    for ax in panels:
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        assert len(lines) == 3 if ax.get_title() != "AMC23" else len(lines) == 2
        for label, values in expected_lines.get(ax.get_title(), {}).items():
            xs, ys = lines[label].get_xdata(), lines[label].get_ydata()
            got = {int(x): y for x, y in zip(xs, ys) if not math.isnan(y)}
            finite = {s: v for s, v in values.items() if not math.isnan(v)}  # NaN: a break in the line
            assert set(got) == set(finite), (ax.get_title(), label)
            for s, v in finite.items():
                assert got[s] == pytest.approx(v, rel=1e-6)
    amc_texts = [t.get_text() for t in panels[2].texts]
    assert amc_texts == ["no data: DAPO"]
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_with_breaks_splits_at_missing_steps():
    xs, ys = with_breaks({1: 1.0, 2: 2.0, 3: 3.0, 7: 7.0, 8: 8.0})
    assert xs[:3] == [1, 2, 3] and xs[4:] == [7, 8] and math.isnan(ys[3]) and ys[4:] == [7.0, 8.0]
    xs, ys = with_breaks({0: 0.1, 10: 0.2, 20: 0.3})
    assert xs == [0, 10, 20] and ys == [0.1, 0.2, 0.3]


def test_compare_paper_table_3(runs, tmp_path):
    a, b, c = runs
    rc = make_tables.main(["--run", str(a), "--run", f"DAPO={b}", "--run", f"my-grpo={c}", "--step", "40",
                           "--compare-paper", "3", "--out", str(tmp_path)])
    assert rc == 0
    md = (tmp_path / "table.md").read_text()
    _, rows, notes = parse_markdown_table(md)
    assert list(rows) == ["RPG-UFKL", "↳ RPG-UFKL (paper, Table 3)", "↳ RPG-UFKL: ours - paper",
                          "DAPO", "↳ DAPO (paper, Table 3)", "↳ DAPO: ours - paper", "my-grpo"]
    paper_ufkl = rows["↳ RPG-UFKL (paper, Table 3)"]
    # the paper's printed numbers (Table 3, page 9)
    assert [paper_ufkl[k] for k in ("AIME24 Last", "AIME24 Best", "AMC23 Last")] == ["0.5938", "0.6177", "0.9492"]
    first = rows["↳ RPG-UFKL: ours - paper"]
    assert first["AIME24 Last"] == f"{0.45 - 0.5938:+.4f}" == "-0.1438"
    assert first["AIME24 Best"] == f"{0.55 - 0.6177:+.4f}" == "-0.0677"
    assert "No row in the paper's Table 3 for: my-grpo" in md
    # DAPO's missing Last has no difference either, and says why
    ref = CELL_RE.match(rows["↳ DAPO: ours - paper"]["AIME24 Last"]).group(4)
    assert notes[ref] == "DAPO vs paper: no difference: a value is missing above"
    with open(tmp_path / "table.csv") as f:
        paper_lines = [ln for ln in csv.DictReader(f) if ln["row"] == "paper"]
    assert {(ln["method"], ln["benchmark"], ln["statistic"]): float(ln["value"]) for ln in paper_lines} == {
        (m, bench, stat): PAPER_TABLES[3].rows[m][bench][i]
        for m in ("RPG-UFKL", "DAPO") for bench in BENCHES.values() for i, stat in enumerate(("last", "best"))}


def test_short_run_step_last_and_label_from_loss(tmp_path):
    """A CPU demo-like run: 2 steps, label from the RPG loss (no experiment name), --step last, via the CLI."""
    run = tmp_path / "demo"
    write_jsonl(run / "logs" / "20260101T000000Z.jsonl", [
        {"step": 0, "data": {"val-core/arith/acc/mean@4": 0.25}},
        {"step": 1, "data": train(1, 0.0)},
        {"step": 2, "data": {**train(2, 0.0), "val-core/arith/acc/mean@4": 0.375}},
    ])
    (run / "resolved_config.yaml").write_text(
        "actor_rollout_ref:\n  actor:\n    policy_loss:\n      loss_mode: rpg_reinforce_urkl\n")
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--run", str(run), "--step", "last", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    header, rows, _ = parse_markdown_table((out / "table.md").read_text())
    assert header == ["Method", "arith Last", "arith Best"]
    assert rows == {"RPG-REINFORCE-URKL": {"arith Last": "0.3750", "arith Best": "0.3750"}}  # one run: no marks
    assert "at each run's last logged step (RPG-REINFORCE-URKL: 2)" in (out / "table.md").read_text()
    # the default --step 400 explains instead of guessing
    rc = make_tables.main(["--run", str(run), "--out", str(tmp_path / "r400")])
    assert rc == 0
    _, rows, notes = parse_markdown_table((tmp_path / "r400" / "table.md").read_text())
    ref = CELL_RE.match(rows["RPG-REINFORCE-URKL"]["arith Last"]).group(4)
    assert notes[ref] == "RPG-REINFORCE-URKL: the run ends at step 2, before step 400 (see --step)"


def test_compare_paper_matches_launcher_experiment_names(tmp_path):
    """Launchers name runs <method>-<model>-<context>; RPG runs also match by their loss."""
    logs = [{"step": 400, "data": {"val-core/aime2024/acc/mean@32": 0.5}}]
    runs = []
    for exp, loss in (("dapo-qwen3-4b-8k", "vanilla"), ("reinforce_pp_baseline-qwen3-4b-4k", "vanilla"),
                      ("my-run", "rpg_reinforce_urkl"), ("grpo2-qwen3-4b-8k", "vanilla")):
        write_jsonl(tmp_path / exp / "logs" / "t.jsonl", logs)
        (tmp_path / exp / "resolved_config.yaml").write_text(
            f"trainer:\n  experiment_name: {exp}\nactor_rollout_ref:\n  actor:\n    policy_loss:\n"
            f"      loss_mode: {loss}\n")
        runs.append(load_run(None, tmp_path / exp))
    report = build_report(runs, Options(compare_paper=5))
    assert [(r.label, r.paper_method) for r in report.ours] == [
        ("dapo-qwen3-4b-8k", "DAPO"), ("reinforce_pp_baseline-qwen3-4b-4k", "REINFORCE++-Baseline"),
        ("my-run", "RPG-REINFORCE-URKL"), ("grpo2-qwen3-4b-8k", None)]
    assert report.rows[1].cells[("aime2024", "last")].value == 0.4063  # Table 5, DAPO's row (p. 28)
    assert report.rows[4].cells[("aime2024", "best")].value == 0.4302  # REINFORCE++-Baseline


def _report_for(tmp_path, data_by_step: dict[int, dict], **options):
    write_jsonl(tmp_path / "r.jsonl", [{"step": s, "data": d} for s, d in data_by_step.items()])
    return build_report([load_run("R", tmp_path / "r.jsonl")], Options(**options))


def test_map_val_var_and_sample_count_notes(tmp_path):
    logs = {0: {"val-core/math_dapo/acc/mean@1": 0.2}, 10: {"val-core/math_dapo/acc/mean@1": 0.3}}
    cell = _report_for(tmp_path, logs, step=10, benchmarks=("aime2024",)).rows[0].cells[("aime2024", "last")]
    assert cell.value is None and "math_dapo (map one with --map SRC=aime2024)" in cell.note
    report = _report_for(tmp_path, logs, step=10, source_map={"math_dapo": "aime2024"})
    assert report.columns == ["aime2024"]
    assert report.rows[0].cells[("aime2024", "last")].value == 0.3
    assert report.rows[0].cells[("aime2024", "last")].n == 1

    reward_only = {10: {"val-core/aime2024/reward/mean@32": 0.4}}
    cell = _report_for(tmp_path, reward_only, step=10, benchmarks=("aime2024",)).rows[0].cells[("aime2024", "best")]
    assert "use --val-var reward" in cell.note
    report = _report_for(tmp_path, reward_only, step=10, val_var="reward")
    assert report.rows[0].cells[("aime2024", "best")].value == 0.4

    no_acc = _report_for(tmp_path, reward_only, step=10)
    assert no_acc.columns == [] and "use --val-var reward" in no_acc.table_notes[-1]

    two_n = {10: {"val-core/aime2024/acc/mean@16": 0.4}, 20: {"val-core/aime2024/acc/mean@32": 0.5}}
    cell = _report_for(tmp_path, two_n, step=20).rows[0].cells[("aime2024", "last")]
    assert cell.value is None and "mean@16, mean@32): choose one with --n" in cell.note
    assert _report_for(tmp_path, two_n, step=20, n=32).rows[0].cells[("aime2024", "last")].value == 0.5

    all_nan = {10: {"val-core/aime2024/acc/mean@32": None}, 20: {"val-core/aime2024/acc/mean@32": float("nan")}}
    row = _report_for(tmp_path, all_nan, step=20).rows[0]
    assert row.cells[("aime2024", "last")].note == "the value logged at step 20 is NaN"
    assert row.cells[("aime2024", "best")].note == "every evaluation at steps 1-20 is NaN"


def test_best_from_zero_includes_the_initial_evaluation(runs):
    _, b, _ = runs
    report = build_report([load_run("DAPO", b)], Options(step=40, best_from=0))
    best = report.rows[0].cells[("aime2024", "best")]
    assert (best.value, best.step) == (0.90, 0)


def test_cli_errors_are_actionable(tmp_path, capsys, runs):
    a, _, _ = runs
    assert make_tables.main(["--run", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert f"{tmp_path / 'nope'}: no such file or directory" in capsys.readouterr().err
    empty = tmp_path / "empty" / "logs" / "20260101T000000Z.jsonl"
    write_jsonl(empty, [])
    assert make_tables.main(["--run", f"E={empty.parent.parent}", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "[E] empty: 20260101T000000Z.jsonl: no records" in err and "no run has any logged metric" in err
    assert make_tables.main(["--run", f"X={a}", "--run", f"X={a}", "--out", str(tmp_path / "o")]) == 2
    assert "several runs are labelled X" in capsys.readouterr().err
    bare = tmp_path / "bare.jsonl"
    write_jsonl(bare, [{"step": 1, "data": {"actor/entropy": 1.0}}])
    assert make_tables.main(["--run", str(bare), "--out", str(tmp_path / "o")]) == 2
    assert f"use --run LABEL={bare}" in capsys.readouterr().err
    assert make_tables.main(["--run", f"A={a}", "--map", "oops", "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(SystemExit):
        make_tables.main(["--run", f"A={a}", "--step", "soon", "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit):
        make_tables.main(["--run", f"A={a}", "--compare-paper", "4", "--out", str(tmp_path / "o")])
    # --strict turns reported log problems into exit status 1
    assert make_tables.main(["--run", f"A={a}", "--step", "40", "--strict", "--out", str(tmp_path / "o")]) == 1


# --- the paper's numbers, typed in from the PDF -----------------------------------------------------------


def test_paper_tables_are_complete_and_in_range():
    assert sorted(PAPER_TABLES) == [3, 5, 6, 7, 8]
    sizes = {3: (6, 3), 5: (8, 3), 6: (6, 2), 7: (8, 2), 8: (12, 3)}  # (rows, benchmarks) as printed
    for number, table in PAPER_TABLES.items():
        assert (len(table.rows), len(table.benchmarks)) == sizes[number]
        assert table.caption.startswith(f"Table {number}: Combined performance metrics")
        for method, cells in table.rows.items():
            assert set(cells) == set(table.benchmarks)
            for last, best in cells.values():
                for v in (last, best):
                    assert 0 < v < 1 and round(v, 4) == v


def test_paper_best_is_at_least_last_except_the_known_misprint():
    violations = {(n, m, b, "last") for n, t in PAPER_TABLES.items() for m, cells in t.rows.items()
                  for b, (last, best) in cells.items() if best < last}
    known = {(n, *key) for n, t in PAPER_TABLES.items() for key in t.known_issues}
    assert violations == known == {(3, "RPG-URKL", "aime2025", "last")}


def test_paper_marks_match_the_ranks_of_the_typed_numbers():
    """Our marking rule on the typed numbers reproduces the bold/underline the PDF prints, except in the one
    column holding the known misprint (Table 3, AIME25 Last)."""
    for number, table in PAPER_TABLES.items():
        rows = [Row(m, "ours", {(b, s): _cell(cells[b][i]) for b in table.benchmarks
                                for i, s in enumerate(("last", "best"))}) for m, cells in table.rows.items()]
        apply_marks(rows, list(table.benchmarks), digits=4)
        skip = {(b, s) for (_, b, s) in table.known_issues}
        marked = lambda mark: {(r.label, b, s) for r in rows for (b, s), c in r.cells.items()  # noqa: E731
                               if c.mark == mark and (b, s) not in skip}
        bold, under = marked("bold"), marked("underline")
        assert bold == {k for k in PAPER_BOLD[number] if k[1:] not in skip}, number
        assert under == {k for k in PAPER_UNDERLINED[number] if k[1:] not in skip}, number
    # in the misprinted column the paper bolds 0.5073 (RPG-REINFORCE-URKL) although 0.5261 is printed higher
    assert ("RPG-REINFORCE-URKL", "aime2025", "last") in PAPER_BOLD[3]


def _cell(value):
    from recipe.rpg.tables.report import Cell

    return Cell(value, 400, 32)


def test_paper_numbers_quoted_in_the_text():
    """Appendix I.1 quotes numbers and ranks from Tables 5 and 6; the typed tables must agree with the prose."""
    t5, t6, t3 = PAPER_TABLES[5].rows, PAPER_TABLES[6].rows, PAPER_TABLES[3].rows

    def ranked(table, bench, stat):
        i = ("last", "best").index(stat)
        return sorted(table, key=lambda m: -table[m][bench][i])

    assert ranked(t5, "aime2024", "best")[0] == "RPG-REINFORCE-URKL"
    assert t5["RPG-REINFORCE-URKL"]["aime2024"][1] == 0.4531
    assert ranked(t5, "aime2024", "last")[:2] == ["RPG-REINFORCE-URKL", "RPG-REINFORCE-UFKL"]
    assert t5["RPG-REINFORCE-URKL"]["aime2024"][0] == 0.4458 and t5["RPG-REINFORCE-UFKL"]["aime2024"][0] == 0.4281
    assert ranked(t5, "aime2025", "best")[:2] == ["RPG-REINFORCE-URKL", "RPG-REINFORCE-UFKL"]
    assert t5["RPG-REINFORCE-URKL"]["aime2025"] == (0.4125, 0.4313)
    assert ranked(t6, "aime2024", "best")[0] == ranked(t6, "aime2025", "best")[0] == "RPG-REINFORCE-UFKL"
    assert (t6["RPG-REINFORCE-UFKL"]["aime2024"][1], t6["RPG-REINFORCE-UFKL"]["aime2025"][1]) == (0.3625, 0.3083)
    assert ranked(t6, "aime2025", "last")[:2] == ["RPG-REINFORCE-UFKL", "RPG-UFKL"]
    assert t6["RPG-REINFORCE-UFKL"]["aime2025"][0] == 0.2927 and t6["RPG-UFKL"]["aime2025"][0] == 0.2833
    assert ranked(t6, "aime2024", "last")[0] == "RPG-UFKL" and t6["RPG-UFKL"]["aime2024"][0] == 0.3427
    # Section 5: "RPG-REINFORCE achieves 52% accuracy on AIME25" with 8k context (Table 3)
    assert round(max(t3[m]["aime2025"][1] for m in t3 if m.startswith("RPG-REINFORCE")), 2) == 0.52


# --- segments: order by content, abandoned branches, new series, gaps per kind of metric ---------------------------


def _segment(path: Path, steps, value: float, record: dict | None = None, validate=()) -> None:
    rows = [{"step": s, "data": {"critic/score/mean": value, **({"val-core/aime2024/acc/mean@32": value}
                                                               if s in validate else {})}} for s in steps]
    write_jsonl(path, rows)
    if record is not None:
        path.with_suffix(".launch.json").write_text(json.dumps({"log": path.name, **record}))


def test_a_resumed_segment_cuts_the_abandoned_branch_even_when_it_ends_earlier(tmp_path):
    # the first launch ran to step 60, the resumed one restarted from step 20 and ended at 40: steps 41-60 of the
    # first launch are an abandoned branch (Best and Last must not come from it)
    logs = tmp_path / "run" / "logs"
    _segment(logs / "20260101T000000Z.jsonl", range(0, 61), 0.9, {"started": "2026-01-01T00:00:00+00:00",
                                                                   "resumed_from_step": None}, validate=(60,))
    _segment(logs / "20260102T000000Z.jsonl", range(21, 41), 0.1, {"started": "2026-01-02T00:00:00+00:00",
                                                                    "resumed_from_step": 20}, validate=(40,))
    run = load_run("R", tmp_path / "run")
    assert sorted(run.series["critic/score/mean"]) == list(range(0, 41))
    assert run.series["critic/score/mean"][40] == 0.1 and run.series["critic/score/mean"][20] == 0.9
    assert run.series["val-core/aime2024/acc/mean@32"] == {40: 0.1}
    (d,) = [d for d in run.diagnostics if d.kind == "abandoned"]
    assert "steps 21-60 dropped" in d.message and "20260102T000000Z.jsonl took over at step 21" in d.message


def test_segments_are_ordered_by_their_content_not_their_file_names(tmp_path):
    logs = tmp_path / "run" / "logs"
    _segment(logs / "b.jsonl", range(0, 26), 0.9)  # the first launch, by content
    _segment(logs / "a.jsonl", range(20, 31), 0.1)  # resumed at step 20, named so that it sorts first
    run = load_run("R", tmp_path / "run")
    assert run.series["critic/score/mean"][22] == 0.1 and run.series["critic/score/mean"][5] == 0.9


def test_a_fresh_relaunch_starts_a_new_series(tmp_path):
    # a 2-step re-run into the directory of a 60-step run that saved no checkpoint: not a resume, not merged
    logs = tmp_path / "run" / "logs"
    _segment(logs / "20260101T000000Z.jsonl", range(0, 61), 0.9, {"started": "2026-01-01T00:00:00+00:00",
                                                                   "resumed_from_step": None}, validate=(0, 60))
    _segment(logs / "20260102T000000Z.jsonl", range(0, 3), 0.1, {"started": "2026-01-02T00:00:00+00:00",
                                                                  "resumed_from_step": None}, validate=(0, 2))
    run = load_run("R", tmp_path / "run")
    assert run.series["val-core/aime2024/acc/mean@32"] == {0: 0.1, 2: 0.1}
    assert run.last_step == 2
    (d,) = [d for d in run.diagnostics if d.kind == "new_series"]
    assert "20260102T000000Z.jsonl started a new series" in d.message and "20260101T000000Z.jsonl" in d.message


def test_training_metrics_lost_in_a_crash_after_a_checkpoint_are_a_gap(tmp_path):
    # verl saves step 20's checkpoint, validates, then logs: killed in between, step 20 has only the resumed run's
    # validation; its training metrics are lost and must be reported
    logs = tmp_path / "run" / "logs"
    _segment(logs / "1.jsonl", range(0, 20), 0.5)
    write_jsonl(logs / "2.jsonl", [{"step": 20, "data": {"val-core/aime2024/acc/mean@32": 0.4}}]
                + [{"step": s, "data": {"critic/score/mean": 0.5}} for s in range(21, 30)])
    run = load_run("R", tmp_path / "run")
    gaps = [d.message for d in run.diagnostics if d.kind == "gap"]
    assert gaps == ["step 20 (1 in all) have no training metrics in any log segment"]
    assert make_tables.main(["--run", f"R={tmp_path / 'run'}", "--step", "last", "--out", str(tmp_path / "o"),
                             "--strict"]) == 1


def test_without_matplotlib_nothing_is_written_and_the_error_says_why(runs, tmp_path, monkeypatch, capsys):
    a, _, _ = runs
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    out = tmp_path / "report"
    assert make_tables.main(["--run", str(a), "--out", str(out)]) == 2
    assert "the figures need matplotlib" in capsys.readouterr().err and not out.exists()
