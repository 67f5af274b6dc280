"""The periodic reference in verl's real trainer on the CPU (FSDP2): refresh, checkpoint and resume.

``scripts/check_reference_refresh.py --launch --resume`` runs ``METHOD=rpg_urkl REFERENCE=periodic
REFERENCE_EVERY=2 STEPS=4`` through the launcher, then a second run resumed from the first one's step-2
checkpoint. The evidence is verl's file-logger log: the mean |ref_log_prob - old_log_prob| the actor loss logs
(``actor/rpg/ref_old_logprob_absdiff``; the reference model and the actor score the same batch in separate engines)
and the refresh count. The negative control resumes with the reference weights left out of the restore.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "check_reference_refresh.py"
EQUAL = 1e-4  # fp32 on the CPU: the reference and the actor agree exactly when they hold the same weights
LAGS = 1e-3  # after one update at lr 5e-4 the tiny model's log-probs move by ~0.03 on average


def training_rows(run_dir: Path) -> dict[int, dict]:
    (log,) = sorted((run_dir / "logs").glob("*.jsonl"))
    rows = {}
    for line in log.read_text().splitlines():
        row = json.loads(line)
        if "training/global_step" in row["data"]:
            rows[row["step"]] = row["data"]
    return rows


def clean_env() -> dict:
    """This test's Python for the launcher; no forced platform (the launcher picks the CPU one itself)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_PLATFORM", "VIRTUAL_ENV", "CONDA_PREFIX")}
    return dict(env, RPG_RUN_PYTHON=sys.executable)


def run_script(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=clean_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def refresh_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    proc = run_script("--launch", "--resume", "--run-dir", str(root), "--every", "2", "--steps", "4")
    return root, proc


@pytest.mark.slow
def test_reference_equals_the_actor_right_after_each_refresh(refresh_runs):
    root, proc = refresh_runs
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "[check] OK" in proc.stdout
    rows = training_rows(root / "uninterrupted")
    assert sorted(rows) == [1, 2, 3, 4]
    absdiff = {s: r["actor/rpg/ref_old_logprob_absdiff"] for s, r in rows.items()}
    assert absdiff[1] < EQUAL and absdiff[3] < EQUAL, absdiff  # the initial model; refreshed after step 2
    assert absdiff[2] > LAGS and absdiff[4] > LAGS, absdiff  # one update behind
    assert [rows[s]["actor/rpg/reference_refreshes"] for s in (1, 2, 3, 4)] == [0, 1, 1, 2]
    assert [rows[s]["actor/rpg/steps_since_reference_refresh"] for s in (1, 2, 3, 4)] == [1, 0, 1, 0]
    assert all("timing_s/reference_refresh" in rows[s] for s in (2, 4))
    assert not any("timing_s/reference_refresh" in rows[s] for s in (1, 3))
    # the checkpoint holds the schedule and the refreshed reference weights
    saved = root / "uninterrupted" / "checkpoints" / "global_step_2" / "rpg_reference"
    assert json.loads((saved / "schedule.json").read_text())["refreshes"] == 1
    assert (saved / "weights" / "rank_0.pt").stat().st_size > 0


@pytest.mark.slow
def test_a_resumed_run_refreshes_at_the_same_steps_with_the_restored_reference(refresh_runs):
    root, proc = refresh_runs
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = training_rows(root / "resumed")
    assert sorted(rows) == [3, 4]
    # step 3 scores with the step-2 reference restored from the checkpoint (the initial model would lag: the
    # negative control below)
    assert rows[3]["actor/rpg/ref_old_logprob_absdiff"] < EQUAL
    assert rows[4]["actor/rpg/ref_old_logprob_absdiff"] > LAGS
    uninterrupted = training_rows(root / "uninterrupted")
    for s in (3, 4):
        for key in ("actor/rpg/reference_refreshes", "actor/rpg/steps_since_reference_refresh"):
            assert rows[s][key] == uninterrupted[s][key], (s, key)


@pytest.mark.slow
def test_a_resume_without_the_reference_weights_is_detected(refresh_runs, tmp_path):
    """Negative control: the step-2 checkpoint with a schedule that claims no refresh, so the resume keeps the
    initial model as reference. Step 3 must then show the lag, and the check must fail."""
    root, proc = refresh_runs
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    run_dir = tmp_path / "no-reference-restore"
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from check_reference_refresh import launch, resume_from
    finally:
        sys.path.remove(str(SCRIPT.parent))
    resume_from(root / "uninterrupted", run_dir, 2)
    schedule = run_dir / "checkpoints" / "global_step_2" / "rpg_reference" / "schedule.json"
    state = json.loads(schedule.read_text())
    schedule.write_text(json.dumps({**state, "refreshes": 0}))
    launch(run_dir, 2, 3, [], env=clean_env())
    rows = training_rows(run_dir)
    assert rows[3]["actor/rpg/ref_old_logprob_absdiff"] > LAGS
    check = run_script("--log", str(run_dir), "--every", "2", timeout=120)
    assert check.returncode == 1 and "but the reference was just set to the actor's weights" in check.stdout


def _write_log(path: Path, rows: dict[int, tuple[float, float]]) -> Path:
    (path / "logs").mkdir(parents=True)
    lines = [json.dumps({"step": s, "data": {"training/global_step": s, "actor/rpg/ref_old_logprob_absdiff": a,
                                             "actor/rpg/reference_refreshes": r}}) for s, (a, r) in rows.items()]
    (path / "logs" / "a.jsonl").write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("rows, every, ok", [
    ({1: (0.0, 0), 2: (0.05, 1), 3: (0.0, 1), 4: (0.02, 2)}, 2, True),
    ({1: (0.0, 0), 2: (0.05, 0), 3: (0.06, 1)}, 3, True),
    ({1: (0.0, 0), 2: (0.05, 1), 3: (0.03, 1), 4: (0.02, 2)}, 2, False),  # no refresh effect at step 3
    ({1: (0.0, 0), 2: (0.0, 1), 3: (0.0, 1), 4: (0.0, 2)}, 2, False),  # the actor never moves
    ({1: (0.0, 0), 2: (0.05, 0), 3: (0.0, 0)}, 2, False),  # refresh count not logged as a refresh
])
def test_the_refresh_check_itself(tmp_path, rows, every, ok):
    proc = run_script("--log", str(_write_log(tmp_path / "run", rows)), "--every", str(every), timeout=120)
    assert proc.returncode == (0 if ok else 1), proc.stdout + proc.stderr
