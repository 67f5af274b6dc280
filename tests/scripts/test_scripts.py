"""The command-line scripts with a Python that lacks the project's environment: they find the project's own
(as the launchers do) or say which Python to use, instead of a bare import error."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(python: list[str], script: str, *args: str, **env) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("RPG_SCRIPT_REEXEC", "PYTHONPATH")}
    full_env.update(env)
    return subprocess.run([*python, str(REPO / "scripts" / script), *args], cwd="/", env=full_env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script", ["prepare_data.py", "make_tables.py", "bench_losses.py"])
def test_a_bare_python_reruns_the_script_with_the_project_environment(script):
    # `python -S`: no site-packages, so nothing of the environment imports; the script re-runs itself with RPG_VENV's
    proc = run([sys.executable, "-S"], script, "--help", RPG_VENV=sys.prefix)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


@pytest.mark.parametrize("script", ["prepare_data.py", "make_tables.py"])
def test_without_a_project_environment_the_script_says_which_python_to_use(script, tmp_path):
    proc = run([sys.executable, "-S"], script, "--help", RPG_VENV=str(tmp_path / "no-venv"))
    assert proc.returncode == 1
    assert f"{script}: this Python ({sys.executable}) lacks" in proc.stderr
    assert "bash scripts/setup.sh" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_pi_old_compares_medians_after_the_first_step(monkeypatch, capsys):
    """The benchmark's table from two fake runs (its launches replaced): medians over steps 2.., the actor compute a
    sum of the three actor stages, ratios rollout / recompute, and no ratio for a stage neither run timed."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import bench_pi_old
    finally:
        sys.path.remove(str(REPO / "scripts"))

    def fake_run(run_dir, pi_old, args):
        old = {"recompute": 1.0, "rollout": 0.05}[pi_old]
        warmup = {"timing_s/step": 100.0, "timing_s/old_log_prob": 50.0}  # step 1: left out
        rows = {s: {"timing_s/gen": 3.0, "timing_s/old_log_prob": old * s, "timing_s/update_actor": 2.0,
                    "timing_s/step": 5.0 + old * s} for s in (2, 3, 4)}
        return {1: warmup, **rows}

    monkeypatch.setattr(bench_pi_old, "run", fake_run)
    assert bench_pi_old.main(["--steps", "4"]) == 0
    table = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:]}
    assert table["timing_s/old_log_prob"] == ["3.000", "0.150", "0.050"]  # medians of 2,3,4 and of 0.1,0.15,0.2
    assert table["actor"] == ["compute", "5.000", "2.150", "0.430"]  # 3 + 2 and 0.15 + 2
    assert table["timing_s/step"] == ["8.000", "5.150", "0.644"]
    assert table["timing_s/ref"] == ["0.000", "0.000", "-"]
