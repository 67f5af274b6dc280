"""scripts/gpu_check.py: the recipe's GPU check, run on the CPU (``--device cpu``): verl's real trainer, the periodic
reference refreshed after every step, a checkpoint, a resume; and its negative control.

The evidence is verl's file-logger log of each run: the rollout-vs-actor probability difference (weight sync), the
RPG metrics, the mean |ref_log_prob - old_log_prob| the actor loss logs (``actor/rpg/ref_old_logprob_absdiff``; the
reference model and the actor score the same batch in separate engines) and the refresh count.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import gpu_check  # noqa: E402

sys.path.remove(str(REPO / "scripts"))

EQUAL = 1e-4  # fp32 on the CPU: the reference and the actor agree exactly when they hold the same weights
LAGS = 1e-3  # after one update at lr 5e-4 the tiny model's log-probs move by ~0.03 on average


def clean_env() -> dict:
    """This test's Python for the launcher; no forced platform (the launcher picks the CPU one itself)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_PLATFORM", "VIRTUAL_ENV", "CONDA_PREFIX")}
    return dict(env, RPG_RUN_PYTHON=sys.executable)


@pytest.fixture(scope="module")
def check_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_check")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "cpu", "--run-dir",
                           str(root)], cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=1200)
    return root, proc


@pytest.mark.slow
def test_the_gpu_check_passes_on_the_cpu(check_runs):
    root, proc = check_runs
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert "[check] OK on cpu" in proc.stdout
    rows = gpu_check.training_rows(root / "uninterrupted")
    assert sorted(rows) == [1, 2]
    assert [rows[s]["actor/rpg/reference_refreshes"] for s in (1, 2)] == [1, 2]
    assert all(rows[s]["actor/rpg/ref_old_logprob_absdiff"] < EQUAL for s in (1, 2))  # initial; refreshed after 1
    assert all(rows[s]["training/rollout_probs_diff_max"] < 1e-3 for s in (1, 2))
    assert rows[1]["actor/grad_norm"] > 0 and rows[1]["actor/lr"] > 0  # the actor moved: step 2's equality counts
    for s in (1, 2):
        rpg = {k: v for k, v in rows[s].items() if k.startswith("actor/rpg/")}
        for name in ("kl", "iw_mean", "iw_max", "iw_ess", "clipfrac_high", "clipfrac_low", "clipfrac_dual",
                     "kept_frac", "step_start_iw_mean"):
            assert math.isfinite(rpg[f"actor/rpg/{name}"]), name
        assert 0 < rpg["actor/rpg/iw_ess"] <= 1 + 1e-6
        assert "timing_s/reference_refresh" in rows[s]
    # the checkpoint holds the schedule and the refreshed reference weights, and the resume restored them
    saved = root / "uninterrupted" / "checkpoints" / "global_step_1" / "rpg_reference"
    assert json.loads((saved / "schedule.json").read_text())["refreshes"] == 1
    assert (saved / "weights" / "rank_0.pt").stat().st_size > 0
    resumed = gpu_check.training_rows(root / "resumed")
    assert sorted(resumed) == [2] and resumed[2]["actor/rpg/reference_refreshes"] == 2
    assert resumed[2]["actor/rpg/ref_old_logprob_absdiff"] < EQUAL


@pytest.mark.slow
def test_the_check_fails_without_the_restored_reference_or_the_weight_push(check_runs, tmp_path):
    """Negative control, one resumed run that breaks both things the check relies on: the step-1 checkpoint with a
    schedule that claims no refresh (so the resume keeps the initial model as reference), and a rollout that drops
    every weight push and starts from the checkpoint's initial model. Step 2 must show both, and the check fail."""
    root, proc = check_runs
    assert proc.returncode == 0, proc.stdout[-5000:]
    run_dir = tmp_path / "broken-resume"
    gpu_check.resume_from(root / "uninterrupted", run_dir, 1)
    schedule = run_dir / "checkpoints" / "global_step_1" / "rpg_reference" / "schedule.json"
    schedule.write_text(json.dumps({**json.loads(schedule.read_text()), "refreshes": 0}))
    gpu_check.launch(run_dir, "cpu", ["actor_rollout_ref.rollout.load_format=auto",
                                      "++actor_rollout_ref.rollout.engine_kwargs.hf.freeze_weights=true"], clean_env())
    rows = gpu_check.training_rows(run_dir)
    assert rows[2]["actor/rpg/ref_old_logprob_absdiff"] > LAGS  # the reference lags: the initial model
    assert rows[2]["training/rollout_probs_diff_max"] > 0.01  # the rollout serves stale weights
    failures = gpu_check.check_run("broken", rows, [2], 1e-3, EQUAL)
    assert any("did not generate with the actor's weights" in f for f in failures), failures
    assert any("does not hold the actor's weights right after a refresh" in f for f in failures), failures
    assert any("reference_refreshes=1" in f for f in failures), failures


def _row(sync=1e-6, absdiff=0.0, refreshes=1, grad=1.0):
    return {"training/rollout_probs_diff_max": sync, "training/rollout_probs_diff_valid": 1,
            "actor/rpg/ref_old_logprob_absdiff": absdiff, "actor/rpg/reference_refreshes": refreshes,
            "actor/rpg/kl": 0.0, "actor/grad_norm": grad}


@pytest.mark.parametrize("rows, fails", [
    ({1: _row(), 2: _row(refreshes=2)}, []),
    ({1: _row(), 2: _row(refreshes=2, sync=0.3)}, ["did not generate with the actor's weights"]),
    ({1: _row(), 2: _row(refreshes=2, absdiff=0.05)}, ["does not hold the actor's weights"]),
    ({1: _row(), 2: _row(refreshes=1)}, ["reference_refreshes=1, expected 2"]),
    ({1: _row(grad=0.0), 2: _row(refreshes=2)}, ["the actor did not change"]),
    ({1: _row()}, ["logged training steps [1], expected [1, 2]"]),
    ({1: {**_row(), "actor/rpg/kl": math.nan}, 2: _row(refreshes=2)}, ["not finite"]),
])
def test_the_check_itself(rows, fails):
    failures = gpu_check.check_run("run", rows, [1, 2], 1e-3, EQUAL)
    assert len(failures) == len(fails) and all(f in msg for f, msg in zip(fails, failures)), failures
