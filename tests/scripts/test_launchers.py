"""The real shell launchers, as a user runs them (a few subprocess runs; every combination runs in-process in
tests/recipe/test_config.py, the launcher's logic in tests/recipe/test_launch.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from omegaconf import OmegaConf

from tests.recipe.test_config import PRESETS, assert_values, paper_values

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    """Each preset is one visible command, the launcher with its method config; no other run_*.sh exists."""
    scripts = sorted(f for f in os.listdir(os.path.join(REPO, "scripts")) if re.fullmatch(r"run_.*\.sh", f))
    assert scripts == sorted(PRESETS)
    for script, method in PRESETS.items():
        text = open(os.path.join(REPO, "scripts", script)).read()
        code = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        assert code == [f'exec bash "$(dirname "${{BASH_SOURCE[0]}}")/launch.sh" method={method} "$@"'], script
        assert os.path.isfile(os.path.join(REPO, "recipe", "rpg", "config", "method", f"{method}.yaml"))


def test_dry_run_from_a_fresh_checkout_dumps_the_paper_config(tmp_path):
    dump = tmp_path / "resolved.yaml"
    proc = run(["bash", "scripts/run_rpg_rkl.sh", "--dry-run", "--skip-data-check", "--dump-config", str(dump)],
               fresh=True)
    assert proc.returncode == 0, proc.stderr
    assert "recipe dry run OK: rpg_rkl-qwen3-4b-8k" in proc.stdout
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
    assert "reference     yes" in proc.stdout and "recipe dry run OK: grpo-vanilla-qwen3-4b-2k-megatron" in proc.stdout
    cfg = OmegaConf.load(dump)
    expected = paper_values("grpo", "2k")
    expected.update({"actor_rollout_ref.actor.clip_ratio_low": 0.1, "actor_rollout_ref.actor.clip_ratio_high": 0.1,
                     "actor_rollout_ref.actor.strategy": "megatron"})
    assert_values(cfg, expected)


def test_launcher_errors_exit_nonzero():
    # through bash, as typed: exit status 2 and the message on stderr (every other message is checked in-process in
    # tests/recipe/test_config.py and tests/recipe/test_launch.py)
    proc = run(["bash", "scripts/run_rpg_reinforce_urkl.sh", "--dry-run", "--skip-data-check",
                "algorithm.policy_loss=rpg_reinforce_xkl"])
    assert proc.returncode == 2
    assert "unknown algorithm.policy_loss='rpg_reinforce_xkl'; registered policy losses:" in proc.stderr
