"""The real shell launchers, as a user runs them (a few subprocess runs; every combination runs in-process in
test_recipe_config.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
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


def test_without_gpu_a_launch_hands_its_algorithm_to_the_cpu_trainer(tmp_path, monkeypatch, capsys):
    """No GPU: no data files are required, and verl's trainer on the CPU (rpg_ext.cpu.demo) gets the preset's
    algorithm as base overrides, STEPS, the run directory, and the command line's overrides last; make_tables.py
    follows. (The real runs through the launcher are in test_cpu_trainer.py.)"""
    from recipe.rpg import launch

    calls = []
    monkeypatch.setattr(launch, "gpu_count", lambda: 0)
    monkeypatch.setattr("subprocess.call", lambda cmd, **kw: calls.append(cmd) or 0)
    run_dir = tmp_path / "run"
    env = {"METHOD": "grpo", "KL": "ufkl", "KL_BETA": "0.01", "CLIP": "0.1,0.1", "REFERENCE": "periodic",
           "REFERENCE_EVERY": "2", "STEPS": "3", "LR": "1e-5", "MODEL": "/nowhere/model", "RUN_DIR": str(run_dir),
           "DATA_DIR": str(tmp_path / "no-data-here")}
    assert launch.main(["algorithm.rpg.kl.beta=0.02"], env=env) == 0
    demo, tables = calls
    assert demo[1:3] == ["-m", "rpg_ext.cpu.demo"]
    opts = dict(zip(demo[3:13:2], demo[4:13:2]))
    assert opts["--steps"] == "3" and opts["--run-dir"] == str(run_dir) and opts["--config"] == "recipe"
    assert opts["--log-path"].startswith(str(run_dir / "logs") + "/")
    base = [a.partition("=")[2] for a in demo if a.startswith("--base-override=")]
    assert base == ["method=grpo", "algorithm.rpg.kl.divergence=ufkl", "actor_rollout_ref.actor.use_kl_loss=False",
                    "algorithm.rpg.kl.beta=0.01", "algorithm.rpg.reference=periodic",
                    "algorithm.rpg.reference_every=2", "actor_rollout_ref.actor.clip_ratio_low=0.1",
                    "actor_rollout_ref.actor.clip_ratio_high=0.1"]  # not the model, lr, data or context
    assert demo[demo.index("--") + 1:] == ["algorithm.rpg.kl.beta=0.02"]
    assert tables[1].endswith("scripts/make_tables.py") and f"cpu-grpo-ufkl={run_dir}" in tables
    out = capsys.readouterr().out
    assert "No GPU is visible: running verl's real trainer on this CPU instead" in out
    assert "The real run of grpo needs 1 node(s) x 8 NVIDIA GPUs" in out and "/nowhere/model" in out
    assert f"table and figures           {run_dir / 'report'}" in out


def test_without_gpu_a_bad_override_is_refused_before_the_cpu_run(monkeypatch, capsys):
    from recipe.rpg import launch

    monkeypatch.setattr(launch, "gpu_count", lambda: 0)
    monkeypatch.setattr("subprocess.call", lambda cmd, **kw: pytest.fail(f"started {cmd}"))
    assert launch.main(["algorithm.rpg.beta=-1"], env={"METHOD": "rpg_rkl"}) == 2
    assert "algorithm.rpg.beta must be a finite float >= 0" in capsys.readouterr().err


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
