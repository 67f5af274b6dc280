"""The real shell launchers, as a user runs them (a few subprocess runs; every combination runs in-process in
test_recipe_config.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from omegaconf import OmegaConf

from tests.test_recipe_config import PRESETS, assert_values, paper_values

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd: list[str], extra_env: dict | None = None, fresh: bool = False, timeout: int = 300):
    """Run a launcher. ``fresh``: no RPG_RUN_PYTHON and no active env, as in a new clone (the launcher calls
    scripts/setup.sh, a no-op once .venv is set up, and runs .venv's Python)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RPG_RUN_PYTHON", "VIRTUAL_ENV", "CONDA_PREFIX")}
    if not fresh:
        env["RPG_RUN_PYTHON"] = sys.executable
    env.update(extra_env or {})
    t = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    print(f"{' '.join(cmd)}: rc={proc.returncode} in {time.time() - t:.1f}s")
    return proc


def test_presets_are_thin_and_complete():
    """Each preset only names its METHOD and hands over to the one launcher; no other run_*.sh exists."""
    scripts = sorted(f for f in os.listdir(os.path.join(REPO, "scripts")) if re.fullmatch(r"run_.*\.sh", f))
    assert scripts == sorted(PRESETS)
    for script, method in PRESETS.items():
        text = open(os.path.join(REPO, "scripts", script)).read()
        code = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        assert code == [
            f"export METHOD={method}",
            f'export RPG_PRESET_SCRIPT="scripts/{script}"',
            'exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" "$@"',
        ], script


def test_dry_run_from_a_fresh_checkout_dumps_the_paper_config(tmp_path):
    dump = tmp_path / "resolved.yaml"
    proc = run(["bash", "scripts/run_rpg_rkl.sh", "--dry-run", "--skip-data-check", "--dump-config", str(dump)],
               fresh=True)
    assert proc.returncode == 0, proc.stderr
    assert "recipe dry run OK: rpg_rkl" in proc.stdout
    assert "reference     none" in proc.stdout
    cfg = OmegaConf.load(dump)
    assert_values(cfg, paper_values("rpg_rkl", "8k"))
    assert cfg.actor_rollout_ref.actor.policy_loss._target_ == "rpg_ext.config.RPGPolicyLossConfig"
    assert cfg.algorithm._target_ == "rpg_ext.config.RPGAlgoConfig"
    assert not OmegaConf.to_yaml(cfg).count("${"), "the dump must be fully resolved"


def test_megatron_grpo_with_appendix_h_clip(tmp_path):
    dump = tmp_path / "grpo.yaml"
    proc = run(["bash", "scripts/run_grpo.sh", "--dry-run", "--skip-data-check", "--dump-config", str(dump)],
               {"BACKEND": "megatron", "CONTEXT": "2k", "CLIP": "0.1,0.1"})
    assert proc.returncode == 0, proc.stderr
    assert "reference     yes" in proc.stdout and "backend megatron" in proc.stdout
    cfg = OmegaConf.load(dump)
    expected = paper_values("grpo", "2k")
    expected.update({"actor_rollout_ref.actor.clip_ratio_low": 0.1, "actor_rollout_ref.actor.clip_ratio_high": 0.1,
                     "actor_rollout_ref.actor.strategy": "megatron"})
    assert_values(cfg, expected)


def test_launcher_errors_exit_nonzero():
    proc = run(["bash", "scripts/run_rpg_reinforce_urkl.sh", "--dry-run", "--skip-data-check",
                "algorithm.policy_loss=rpg_reinforce_xkl"])
    assert proc.returncode == 2
    assert "unknown algorithm.policy_loss='rpg_reinforce_xkl'; registered policy losses:" in proc.stderr
    proc = run(["bash", "scripts/run_dapo.sh", "--dry-run", "--skip-data-check", "trainer.n_gpus_per_nod=8"])
    assert proc.returncode == 2 and "unknown config key 'trainer.n_gpus_per_nod'" in proc.stderr
    proc = run(["bash", "scripts/run_dapo.sh", "--dryrun"])
    assert proc.returncode == 2 and "unknown argument '--dryrun'" in proc.stderr


def test_without_gpu_a_real_launch_stops_before_ray(tmp_path):
    run_dir = tmp_path / "run"
    proc = run(["bash", "scripts/run_rpg_urkl.sh", "--skip-data-check"], {"RUN_DIR": str(run_dir)})
    assert proc.returncode == 3, proc.stderr
    assert "No GPU is visible on this machine, so nothing was started (no Ray, no download)." in proc.stderr
    assert "bash scripts/run_rpg_urkl.sh --dry-run" in proc.stderr
    assert "ray init" not in proc.stdout + proc.stderr
    assert not run_dir.exists()


def test_main_rpg_takes_algorithm_policy_loss_without_plus():
    """``python -m recipe.rpg.main_rpg algorithm.policy_loss=rpg_fkl``, as typed (Hydra's --cfg job prints the
    composed job config and exits before the task runs)."""
    proc = run([sys.executable, "-m", "recipe.rpg.main_rpg", "algorithm.policy_loss=rpg_fkl", "algorithm.rpg.beta=0.01",
                "--cfg", "job", "--resolve"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    cfg = OmegaConf.create(proc.stdout)
    assert cfg.actor_rollout_ref.actor.policy_loss.loss_mode == "rpg_fkl"
    assert cfg.actor_rollout_ref.actor.policy_loss.rpg.beta == 0.01
    assert cfg.actor_rollout_ref.actor.use_kl_loss is False and cfg.algorithm.use_kl_in_reward is False


def test_main_rpg_refuses_a_bad_config_before_ray():
    proc = run([sys.executable, "-m", "recipe.rpg.main_rpg", "--config-name", "rpg_megatron_trainer",
                "algorithm.rpg.beta=-1"], timeout=120)
    assert proc.returncode == 2
    assert "algorithm.rpg.beta must be a finite float >= 0" in proc.stderr
    assert "ray init" not in proc.stdout


def test_a_launch_writes_the_run_dir_and_hands_main_rpg_the_same_config(tmp_path, monkeypatch):
    """The GPU path up to the hand-over: run directory, per-launch log path, and a main_rpg command line that
    composes exactly the config the launcher checked and saved (run here with Hydra's --cfg job)."""
    from recipe.rpg import launch

    for name in (launch.DEFAULT_TRAIN_FILE, *launch.DEFAULT_VAL_FILES):
        (tmp_path / name).write_bytes(b"")
    run_dir = tmp_path / "my run's dir"  # a space and a quote must survive the Hydra command line
    calls = []
    monkeypatch.setattr(launch, "gpu_count", lambda: 8)
    monkeypatch.setattr(launch.os, "execv", lambda exe, argv: calls.append(argv))
    for var in ("VERL_FILE_LOGGER_PATH", "TENSORBOARD_DIR"):  # restored after the test
        monkeypatch.setenv(var, "unset")
    env = {"METHOD": "rpg_ufkl", "CONTEXT": "2k", "DATA_DIR": str(tmp_path), "RUN_DIR": str(run_dir),
           "LOGGERS": "tensorboard"}
    assert launch.main(["algorithm.rpg.beta=0.002"], env=env) == 0
    (argv,) = calls
    saved = OmegaConf.load(run_dir / "resolved_config.yaml")
    log_file = saved.ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH
    assert re.fullmatch(re.escape(str(run_dir / "logs")) + r"/\d{8}T\d{6}Z\.jsonl", log_file)
    assert (run_dir / "logs").is_dir() and (run_dir / "checkpoints").is_dir() and (run_dir / "tensorboard").is_dir()
    assert launch.os.environ["VERL_FILE_LOGGER_PATH"] == log_file
    assert saved.trainer.default_local_dir == str(run_dir / "checkpoints")
    assert saved.algorithm.rpg.beta == 0.002 and saved.data.max_response_length == 2048

    assert argv[1:4] == ["-m", "recipe.rpg.main_rpg", "--config-name"]
    proc = run([sys.executable, *argv[1:], "--cfg", "job", "--resolve"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert OmegaConf.create(proc.stdout) == saved
