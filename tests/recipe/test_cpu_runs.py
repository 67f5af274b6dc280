"""verl's real v1 trainer on the CPU through a preset, as a user types it on a machine without a GPU, with pi_old taken
from the rollout (``PI_OLD=rollout``: no old-log-prob forward pass).

``STEPS=2 PI_OLD=rollout bash scripts/run_rpg_urkl.sh`` runs the embedded CPU config (``machine=cpu``): Ray, verl's
FSDP2 engine over gloo, the agent loop with the hf rollout in fp32, TransferQueue, validation, verl's file logger,
then the table of the run. The recompute path (and weight sync, the reference, a resume and their negative control)
is run by tests/scripts/test_gpu_check.py.
"""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 600
RPG_METRICS = ["kl", "iw_mean", "iw_max", "iw_ess", "clipfrac_high", "clipfrac_low", "clipfrac_dual"]

pytestmark = pytest.mark.slow


def run_launcher(run_dir: Path, preset: str, steps: int, *overrides: str, **variables) -> subprocess.CompletedProcess:
    """``STEPS=N RUN_DIR=... bash scripts/<preset> overrides...`` as a user types it on a machine without a GPU."""
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_PLATFORM", "VIRTUAL_ENV", "CONDA_PREFIX")}
    env.update(RPG_RUN_PYTHON=sys.executable, STEPS=str(steps), RUN_DIR=str(run_dir), **variables)
    cmd = ["bash", f"scripts/{preset}", *overrides]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and the Ray processes it started
        out, _ = proc.communicate()
        pytest.fail(f"{cmd} did not finish in {RUN_TIMEOUT_S} s; output tail:\n{out[-5000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def read_log(run_dir: Path) -> dict[int, dict]:
    """verl's file-logger JSONL of the run's single launch, as {step: metrics} (validation merged in)."""
    logs = sorted((run_dir / "logs").glob("*.jsonl"))
    assert len(logs) == 1, logs
    steps: dict[int, dict] = {}
    for line in logs[0].read_text().splitlines():
        row = json.loads(line)
        steps.setdefault(row["step"], {}).update(row["data"])
    return steps


@pytest.fixture(scope="module")
def rollout_pi_old_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pi-old-rollout")
    # no lr warm-up: verl's warm-up starts at lr 0, and step 1 must change the actor's weights
    proc = run_launcher(run_dir, "run_rpg_urkl.sh", 2, "trainer.test_freq=2",
                        "actor_rollout_ref.actor.optim.lr_warmup_steps=0", PI_OLD="rollout")
    return run_dir, proc


def test_a_preset_trains_on_the_cpu_with_pi_old_from_the_rollout(rollout_pi_old_run):
    run_dir, proc = rollout_pi_old_run
    assert proc.returncode == 0, proc.stdout[-5000:]
    cfg = yaml.safe_load((run_dir / "resolved_config.yaml").read_text())
    assert cfg["actor_rollout_ref"]["actor"]["policy_loss"]["loss_mode"] == "rpg_urkl"
    assert cfg["actor_rollout_ref"]["rollout"]["name"] == "hf" and cfg["trainer"]["device"] == "cpu"
    assert cfg["algorithm"]["rollout_correction"]["bypass_mode"] is True
    log = read_log(run_dir)
    rows = [log[s] for s in sorted(log) if "training/global_step" in log[s]]
    assert [r["training/global_step"] for r in rows] == [1, 2]
    for r in rows:
        for name in RPG_METRICS:
            assert math.isfinite(r[f"actor/rpg/{name}"]), name
        assert 0 < r["actor/rpg/iw_ess"] <= 1 + 1e-6
        # no old-log-prob forward pass: verl's timing of that stage is the TransferQueue copy only, and the metrics
        # only the recompute computes (entropy, rollout-vs-actor probabilities) are absent
        assert r["timing_s/old_log_prob"] < 0.3 and "actor/entropy" not in r
        assert "training/rollout_probs_diff_max" not in r
        # pi_old is the rollout's fp32 log-probs: at the step's first micro-batch w = pi_theta / pi_old is 1
        assert abs(r["actor/rpg/step_start_iw_max"] - 1) < 1e-3 and abs(r["actor/rpg/step_start_iw_min"] - 1) < 1e-3
    assert rows[0]["actor/grad_norm"] > 0 and rows[0]["actor/lr"] > 0
    # verl's validation ran before training and at the last step
    assert {0, 2} <= {s for s, m in log.items() if any(k.startswith("val-core/") for k in m)}
    # the launcher said what it did, printed a line per step and wrote the table of the run
    assert "No GPU is visible" in proc.stdout and f"[launch] table and figures in {run_dir / 'report'}" in proc.stdout
    assert "[launch] step    2/2" in proc.stdout and "held-out math_dapo" in proc.stdout
    assert "rpg_urkl-cpu" in (run_dir / "report" / "table.md").read_text()
    record = json.loads(next((run_dir / "logs").glob("*.launch.json")).read_text())
    assert record["resumed_from_step"] is None
