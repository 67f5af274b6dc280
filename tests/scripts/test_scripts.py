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
