"""scripts/gpu_check.py: the recipe's GPU check, run on the CPU (``--device cpu``): verl's real trainer through the
launcher, the periodic reference refreshed after every step, a checkpoint, a resume with pi_old taken from the rollout
(``pi_old=rollout``, no old-log-prob forward pass); and its negative control. These are the suite's real training runs.

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


def _resolved(run_dir: Path) -> dict:
    import yaml

    return yaml.safe_load((run_dir / "resolved_config.yaml").read_text())


def _validated_steps(run_dir: Path) -> set[int]:
    series = gpu_check.load_run("run", run_dir).series
    return {s for k, v in series.items() if k.startswith("val-core/") for s in v}


@pytest.mark.slow
def test_the_gpu_check_passes_on_the_cpu(check_runs):
    root, proc = check_runs
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert "[check] OK on cpu" in proc.stdout
    first, resumed = root / "uninterrupted", root / "resumed"
    # through the launcher: the embedded CPU config, a line per step, validation, the table of the run
    cfg = _resolved(first)
    assert cfg["actor_rollout_ref"]["actor"]["policy_loss"]["loss_mode"] == "rpg_reinforce_urkl"
    assert cfg["actor_rollout_ref"]["rollout"]["name"] == "hf" and cfg["trainer"]["device"] == "cpu"
    assert "No GPU is visible" in proc.stdout  # the launcher says it hands over to the embedded CPU run
    assert "[launch] step    2/2" in proc.stdout and "held-out math_dapo" in proc.stdout
    assert "Platform override" not in proc.stdout + proc.stderr  # verl's INFO line for the launcher's own setting
    assert f"[launch] table and figures in {first / 'report'}" in proc.stdout
    assert f"{cfg['trainer']['experiment_name']}: 2" in (first / "report" / "table.md").read_text()  # its last step
    assert {0, 2} <= _validated_steps(first)
    assert all(len(list((d / "logs").glob("*.jsonl"))) == 1 for d in (first, resumed))  # one launch, one log each
    records = [json.loads(next((d / "logs").glob("*.launch.json")).read_text()) for d in (first, resumed)]
    assert [r["resumed_from_step"] for r in records] == [None, 1]

    rows = gpu_check.training_rows(first)
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
    saved = first / "checkpoints" / "global_step_1" / "rpg_reference"
    assert json.loads((saved / "schedule.json").read_text())["refreshes"] == 1
    assert (saved / "weights" / "rank_0.pt").stat().st_size > 0
    again = gpu_check.training_rows(resumed)
    assert sorted(again) == [2, 3] and [again[s]["actor/rpg/reference_refreshes"] for s in (2, 3)] == [2, 3]
    assert all(again[s]["actor/rpg/ref_old_logprob_absdiff"] < EQUAL for s in (2, 3))


@pytest.mark.slow
def test_the_resumed_run_takes_pi_old_from_the_rollout_without_a_recompute(check_runs):
    # the two training steps of the resumed run have PI_OLD=rollout: verl's bypass mode of the v1 trainer
    root, proc = check_runs
    assert proc.returncode == 0, proc.stdout[-5000:]
    run_dir = root / "resumed"
    assert _resolved(run_dir)["algorithm"]["rollout_correction"]["bypass_mode"] is True
    rows = gpu_check.training_rows(run_dir)
    for s in (2, 3):
        r = rows[s]
        # no old-log-prob forward pass: verl's v1 trainer logs actor/entropy (and the rollout-vs-actor probabilities)
        # only from the actor's compute_log_prob call for pi_old, which bypass mode skips (timings: bench_pi_old.py)
        assert "actor/entropy" not in r and "training/rollout_probs_diff_max" not in r
        # pi_old is the rollout's fp32 log-probs: at the step's first micro-batch w = pi_theta / pi_old is 1
        assert abs(r["actor/rpg/step_start_iw_max"] - 1) < 1e-3 and abs(r["actor/rpg/step_start_iw_min"] - 1) < 1e-3
        assert all(math.isfinite(v) for k, v in r.items() if k.startswith("actor/rpg/"))
    first = gpu_check.training_rows(root / "uninterrupted")
    assert all("actor/entropy" in first[s] for s in (1, 2))  # recomputed there: the evidence above can fail


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
    gpu_check.launch(run_dir, "cpu", ["trainer.total_training_steps=2", "trainer.val_before_train=False",
                                      "actor_rollout_ref.rollout.load_format=auto",
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


def _iw(iw_min=1.0, iw_max=1.0, **kw):
    row = {k: v for k, v in _row(**kw).items() if not k.startswith("training/rollout_probs_diff")}
    return {**row, "actor/rpg/step_start_iw_min": iw_min, "actor/rpg/step_start_iw_max": iw_max}


@pytest.mark.parametrize("rows, fails", [
    ({1: _row(), 2: _row(refreshes=2)}, []),
    ({1: _row(), 2: _row(refreshes=2, sync=0.3)}, ["did not generate with the actor's weights"]),
    ({1: _row(), 2: _row(refreshes=2, absdiff=0.05)}, ["does not hold the actor's weights"]),
    ({1: _row(), 2: _row(refreshes=1)}, ["reference_refreshes=1, expected 2"]),
    ({1: _row(grad=0.0), 2: _row(refreshes=2)}, ["the actor did not change"]),
    ({1: _row()}, ["logged training steps [1], expected [1, 2]"]),
    ({1: _iw(), 2: _iw(refreshes=2)}, []),  # pi_old from the rollout: the step-start importance weight is the sync check
    ({1: _iw(), 2: _iw(refreshes=2, iw_max=1.3)}, ["did not generate with the actor's weights"]),
    ({1: {**_row(), "actor/rpg/kl": math.nan}, 2: _row(refreshes=2)}, ["not finite"]),
])
def test_the_check_itself(rows, fails):
    failures = gpu_check.check_run("run", rows, [1, 2], 1e-3, EQUAL)
    assert len(failures) == len(fails) and all(f in msg for f, msg in zip(fails, failures)), failures
