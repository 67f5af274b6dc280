"""rpg_ext.cpu without a trainer: the runtime patches, and that the CPU platform stays inert unless selected
(simulated GPU host, broken plugin). The hf rollout's own tests are in test_hf_rollout.py."""

import os
import subprocess
import sys
import textwrap

import pytest

from rpg_ext.cpu.patches import dedupe_backend

PY = sys.executable


# -- patches ------------------------------------------------------------------------------------------------------


def test_dedupe_backend():
    assert dedupe_backend("cpu:gloo,cpu:gloo") == "cpu:gloo"
    assert dedupe_backend("cpu:gloo,cuda:nccl") == "cpu:gloo,cuda:nccl"
    assert dedupe_backend("gloo") == "gloo" and dedupe_backend(None) is None


# -- platform selection ------------------------------------------------------------------------------------------

_PROBE = textwrap.dedent(
    """
    import json, torch.distributed as dist, verl
    from verl.plugin.platform import PlatformRegistry, get_platform
    from verl.plugin.platform.platform_manager import _detect_platform_name
    import rpg_ext.cpu as cpu
    info = {"device": get_platform().device_name, "active": cpu.is_active(),
            "registered": "cpu" in PlatformRegistry.registered_names(),
            "patched": bool(getattr(dist.init_process_group, "_rpg_cpu_patched", False)),
            "gpu_visible": cpu.gpu_visible()}
    import rpg_ext.cpu.platform  # registered explicitly, it is still never auto-detected
    info["detected_with_cpu_registered"] = _detect_platform_name()
    print(json.dumps(info))
    """
)


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    env.update(extra)
    return env


def _probe(env):
    import json

    r = subprocess.run([PY, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_cpu_platform_is_not_selected_on_a_gpu_host(fake_gpu_path):
    info = _probe(_env(PATH=fake_gpu_path))
    assert info["gpu_visible"] is True
    assert info["device"] == "cuda"  # verl's own choice on a GPU host
    assert not info["active"] and not info["registered"] and not info["patched"]
    assert info["detected_with_cpu_registered"] == "nvidia"


def test_cpu_platform_is_inert_unless_requested_and_active_when_requested(fresh_import_verl):
    info = fresh_import_verl
    assert not info["cpu_active"] and not info["cpu_registered"] and not info["cpu_patched"]
    assert info["detected_with_cpu_registered"] != "cpu"
    info = _probe(_env(VERL_PLATFORM="cpu"))
    assert info["device"] == "cpu" and info["active"] and info["registered"] and info["patched"]


# -- a broken CPU plugin is reported loudly -------------------------------------------------------------------------


@pytest.fixture
def broken_cpu_module(tmp_path):
    """A sitecustomize that makes `rpg_ext.hf_rollout` fail to import (as a broken dependency would)."""
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(
        """
        import sys
        class _Broken:
            def find_spec(self, name, path=None, target=None):
                if name == "rpg_ext.hf_rollout":
                    raise ImportError("simulated broken module rpg_ext.hf_rollout")
        sys.meta_path.insert(0, _Broken())
        """
    ))
    return str(tmp_path)


def _check(*args, env):
    return subprocess.run([PY, "-m", "rpg_ext", "check", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_check_passes_with_the_cpu_platform():
    r = _check("--cpu", env=_env())
    assert r.returncode == 0, r.stderr[-3000:]
    assert "CPU platform" in r.stdout
    assert "rollout backend hf registered" in r.stdout


def test_check_requests_the_cpu_platform_by_flag_or_by_verl_platform(monkeypatch, capsys):
    # which probes `check` runs, in-process (the probes themselves run in fresh processes in the test below)
    from rpg_ext import check

    probed = []

    def fake_run(code, env):
        probed.append(env.get("VERL_PLATFORM"))
        return subprocess.CompletedProcess([], 1, "", "simulated failing import verl")

    monkeypatch.setattr(check, "_run", fake_run)
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    assert check.check() == 1 and probed == [None]  # no CPU platform, no plugin re-import
    probed.clear()
    assert check.check(cpu_platform=True) == 1 and probed == ["cpu", "cpu"]  # the probe, then `import rpg_ext.plugin`
    probed.clear()
    monkeypatch.setenv("VERL_PLATFORM", "CPU ")
    assert check.check() == 1 and probed == ["cpu", "cpu"]
    assert "simulated failing import verl" in capsys.readouterr().err


def test_check_reports_a_broken_cpu_plugin_loudly(broken_cpu_module):
    env = _env(PYTHONPATH=broken_cpu_module + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = _check("--cpu", env=env)  # VERL_PLATFORM=cpu requests the same check: the test above
    assert r.returncode == 1
    assert "CPU platform was requested" in r.stderr
    assert "simulated broken module rpg_ext.hf_rollout" in r.stderr  # the hidden error, shown
    # the losses themselves still load, and without the CPU platform requested the check passes, with a warning
    # that the hf rollout (registered on every platform) is not usable, and why
    r = _check(env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "hf rollout (actor_rollout_ref.rollout.name=hf) is not usable" in r.stderr
    assert "simulated broken module rpg_ext.hf_rollout" in r.stderr
    assert "rollout backend hf registered" not in r.stdout


def test_patches_refuse_another_verl_release(monkeypatch):
    import verl

    from rpg_ext.cpu import patches

    monkeypatch.setattr(verl, "__version__", "0.9.2")
    with pytest.raises(RuntimeError, match=r"written for verl==0\.9\.1, but verl 0\.9\.2 is installed"):
        patches.patch_init_process_group()
    with pytest.raises(RuntimeError, match=r"0\.9\.2"):
        patches.patch_forward_only_offload()
    with pytest.raises(RuntimeError, match=r"0\.9\.2"):
        patches.patch_valuehead_attention()
