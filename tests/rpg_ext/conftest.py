"""A plain ``import verl`` in a fresh process, probed once per test session: several test files check what it shows
(the losses, the KL dispatch, the lazy hf rollout registration, the inert cpu platform, idempotent registration)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

FRESH_IMPORT_PROBE = textwrap.dedent(
    """
    import json, sys
    import torch.distributed as dist
    import verl
    from verl.trainer.ppo import core_algos
    info = {"losses": sorted(core_algos.POLICY_LOSS_REGISTRY), "kl_penalty": core_algos.kl_penalty_forward.__module__}
    info["imported_by_import_verl"] = {m: m in sys.modules for m in (
        "verl.workers.rollout", "verl.workers.rollout.base", "verl.workers.rollout.replica", "rpg_ext.hf_rollout")}
    import rpg_ext.cpu as cpu
    from verl.plugin.platform import PlatformRegistry, get_platform
    from verl.plugin.platform.platform_manager import _detect_platform_name
    info.update(device=get_platform().device_name, cpu_active=cpu.is_active(),
                cpu_registered="cpu" in PlatformRegistry.registered_names(),
                cpu_patched=bool(getattr(dist.init_process_group, "_rpg_cpu_patched", False)),
                gpu_visible=cpu.gpu_visible())
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY, get_rollout_class
    from verl.workers.rollout.replica import get_rollout_replica_class
    replica, adapter = get_rollout_replica_class("hf"), get_rollout_class("hf", "async")
    info.update(hf_table=_ROLLOUT_REGISTRY.get(("hf", "async")), hf_replica=replica.__module__ + "." + replica.__name__,
                hf_adapter=adapter.__module__ + "." + adapter.__name__)
    # registration is idempotent, and refuses someone else's function under an RPG name
    from rpg_ext.losses import register
    before = {k: id(v) for k, v in core_algos.POLICY_LOSS_REGISTRY.items()}
    register(); register()
    info["reregistration_changed"] = before != {k: id(v) for k, v in core_algos.POLICY_LOSS_REGISTRY.items()}
    core_algos.POLICY_LOSS_REGISTRY["rpg_fkl"] = lambda *a, **k: None
    try:
        register()
        info["foreign_refused"] = None
    except RuntimeError as e:
        info["foreign_refused"] = str(e)
    import rpg_ext.cpu.platform  # registered explicitly, it is still never auto-detected
    info["detected_with_cpu_registered"] = _detect_platform_name()
    print(json.dumps(info))
    """
)


def fresh_probe(env_extra=None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_PLATFORM", "PYTHONPATH")}
    env.update(env_extra or {})  # the installed package, not the test tree, must provide the plugin
    r = subprocess.run([sys.executable, "-c", FRESH_IMPORT_PROBE], capture_output=True, text=True, env=env,
                       timeout=300, cwd="/")
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def fresh_import_verl(tmp_path_factory, worker_id) -> dict:
    """What a plain ``import verl`` (no VERL_PLATFORM) registers, in a fresh process: one probe per test run, shared
    by the pytest-xdist workers through their common temporary directory."""
    if worker_id == "master":  # not distributed
        return fresh_probe()
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent / "fresh_import_verl.json"
    with FileLock(f"{shared}.lock"):
        if not shared.is_file():
            shared.write_text(json.dumps(fresh_probe()))
        return json.loads(shared.read_text())
