"""verl's real v1 trainer on the CPU: short runs on the embedded default task.

The RPG runs go through the presets (``bash scripts/run_rpg_urkl.sh`` on a machine without a GPU hands over to
``rpg_ext.cpu.demo``), the vanilla control through ``python -m rpg_ext.cpu.demo``. Each run is a subprocess (Ray,
FSDP2 over gloo, agent loop with the hf rollout, TransferQueue); its evidence is what verl itself logged with its
file logger. The rollout-vs-actor probability difference is verl's metric (training/rollout_probs_diff_max:
|p_rollout - p_actor| over response tokens, the actor's side computed by verl's FSDP engine); a run whose weight
push is dropped is the negative control of that check.
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

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 420  # a 2-step run takes about a minute here; CI machines may be slower
SYNCED_PROB_DIFF = 1e-3  # max |p_rollout - p_actor|: ~1e-6 when synced (fp32); ~0.3 after one missed update

RPG_METRICS = ["kl", "iw_mean", "iw_max", "iw_ess", "clipfrac_high", "clipfrac_low", "clipfrac_dual"]

pytestmark = pytest.mark.slow


def run_demo(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    return _communicate([sys.executable, "-m", "rpg_ext.cpu.demo", "--run-dir", str(run_dir), *args], env)


def _communicate(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and the Ray processes it started
        out, _ = proc.communicate()
        pytest.fail(f"{cmd} did not finish in {RUN_TIMEOUT_S} s; output tail:\n{out[-5000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def run_launcher(run_dir: Path, preset: str, steps: int, *overrides: str) -> subprocess.CompletedProcess:
    """``STEPS=N RUN_DIR=... bash scripts/<preset> overrides...`` as a user types it on a machine without a GPU."""
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_PLATFORM", "VIRTUAL_ENV", "CONDA_PREFIX")}
    env.update(RPG_RUN_PYTHON=sys.executable, STEPS=str(steps), RUN_DIR=str(run_dir))
    return _communicate(["bash", f"scripts/{preset}", *overrides], env)


def read_log(run_dir: Path) -> dict[int, dict]:
    """verl's file-logger JSONL of the run's single launch, as {step: metrics} (validation merged in)."""
    logs = sorted((run_dir / "logs").glob("*.jsonl"))
    assert len(logs) == 1, logs
    steps: dict[int, dict] = {}
    for line in logs[0].read_text().splitlines():
        row = json.loads(line)
        steps.setdefault(row["step"], {}).update(row["data"])
    return steps


def training_steps(log: dict[int, dict]) -> list[dict]:
    return [log[s] for s in sorted(log) if "training/global_step" in log[s]]


def weights_synced(log: dict[int, dict]) -> bool:
    """The rollout generated with the actor's weights at every step (verl's own rollout-vs-actor metric)."""
    rows = training_steps(log)
    assert rows and all(r["training/rollout_probs_diff_valid"] == 1 for r in rows)
    return all(r["training/rollout_probs_diff_max"] < SYNCED_PROB_DIFF for r in rows)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One 2-step run per loss (validation before training and at step 2), started lazily and shared."""
    done: dict[str, tuple[Path, subprocess.CompletedProcess]] = {}

    def get(loss: str) -> tuple[Path, subprocess.CompletedProcess]:
        if loss not in done:
            run_dir = tmp_path_factory.mktemp(f"cpu-{loss}")
            # no lr warm-up: verl's warm-up starts at lr 0, and step 1 must change the actor's weights
            overrides = ("trainer.test_freq=2", "actor_rollout_ref.actor.optim.lr_warmup_steps=0")
            if loss.startswith("rpg_"):  # the RPG presets through the launcher, as on a machine without a GPU
                done[loss] = run_dir, run_launcher(run_dir, f"run_{loss}.sh", 2, *overrides)
            else:  # verl's vanilla loss (the control) on the recipe's config
                done[loss] = run_dir, run_demo(run_dir, "--loss", loss, "--steps", "2", *overrides)
        return done[loss]

    return get


@pytest.mark.parametrize("loss", ["rpg_urkl", "rpg_reinforce_urkl", "vanilla"])
def test_two_step_run_trains_with_the_loss_and_synced_weights(runs, loss):
    run_dir, proc = runs(loss)
    assert proc.returncode == 0, proc.stdout[-5000:]
    cfg = yaml.safe_load((run_dir / "resolved_config.yaml").read_text())
    assert cfg["actor_rollout_ref"]["actor"]["policy_loss"]["loss_mode"] == loss
    assert cfg["actor_rollout_ref"]["rollout"]["name"] == "hf" and cfg["trainer"]["device"] == "cpu"

    log = read_log(run_dir)
    rows = training_steps(log)
    assert [r["training/global_step"] for r in rows] == [1, 2]
    rpg_keys = sorted(k for r in rows for k in r if k.startswith("actor/rpg/"))
    if loss.startswith("rpg_"):
        expected = RPG_METRICS + (["kept_frac"] if loss.startswith("rpg_reinforce_") else [])
        for r in rows:
            for name in expected:
                value = r[f"actor/rpg/{name}"]
                assert math.isfinite(value), (name, value)
            assert 0 < r["actor/rpg/iw_ess"] <= 1 + 1e-6
    else:
        assert rpg_keys == []  # the control: verl's vanilla loss logs no RPG metric
    # the actor was updated at step 1, so step 2's agreement shows that the update reached the rollout
    assert rows[0]["actor/grad_norm"] > 0 and rows[0]["actor/lr"] > 0
    assert weights_synced(log), [r["training/rollout_probs_diff_max"] for r in rows]
    # verl's validation ran before training and at the last step
    assert {0, 2} <= {s for s, m in log.items() if any(k.startswith("val-core/") for k in m)}
    if loss.startswith("rpg_"):  # the launcher said what it did and wrote the table of the run
        assert "No GPU is visible: running verl's real trainer on this CPU instead" in proc.stdout
        assert f"table and figures           {run_dir / 'report'}" in proc.stdout
        assert f"cpu-{loss}" in (run_dir / "report" / "table.md").read_text()


def test_dropped_weight_push_is_detected(tmp_path):
    """Negative control: the same 2-step run, but the rollout drops every weight push and starts from the
    checkpoint. Step 1 agrees (both sides hold the initial weights); after step 1's update the same check must
    fail, which is what makes step 2's agreement in the runs above evidence of the sync."""
    run_dir = tmp_path / "frozen"
    proc = run_demo(run_dir, "--loss", "vanilla", "--steps", "2", "--test-freq", "-1",
                    "actor_rollout_ref.actor.optim.lr_warmup_steps=0",
                    "actor_rollout_ref.rollout.load_format=auto",
                    "++actor_rollout_ref.rollout.engine_kwargs.hf.freeze_weights=true")
    assert proc.returncode == 0, proc.stdout[-5000:]
    log = read_log(run_dir)
    rows = training_steps(log)
    assert rows[0]["training/rollout_probs_diff_max"] < SYNCED_PROB_DIFF
    assert rows[0]["actor/grad_norm"] > 0 and rows[0]["actor/lr"] > 0
    assert not weights_synced(log)


def test_make_tables_reads_the_cpu_run(runs, tmp_path):
    run_dir, proc = runs("rpg_urkl")
    assert proc.returncode == 0, proc.stdout[-5000:]
    out = tmp_path / "report"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "make_tables.py"), "--run", f"RPG-UKL={run_dir}",
                        "--out", str(out), "--step", "last"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    table = (out / "table.md").read_text()
    assert "RPG-UKL" in table
