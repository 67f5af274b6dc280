"""``python -m rpg_ext check``: prove that a plain ``import verl`` registers the RPG losses.

verl loads ``verl.plugins`` entry points on import but swallows their import errors (debug log only), so a
broken install silently lacks the losses until a Ray worker fails an hour into a run. This check imports
verl in a fresh process, and on failure re-imports the plugin directly to show the underlying error.
Only the standard library is imported here, so the check works even when torch or verl are broken.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

from rpg_ext import RPG_LOSS_NAMES, VERL_VERSION

_PROBE = """
import json, verl
from verl.trainer.ppo import core_algos
print(json.dumps({"verl": verl.__version__, "losses": sorted(core_algos.POLICY_LOSS_REGISTRY),
                  "kl_penalty": core_algos.kl_penalty_forward.__module__}))
"""
_PLUGIN_IMPORT = "import rpg_ext.plugin"

# With VERL_PLATFORM=cpu: which platform verl resolves, and what rpg_ext.cpu registered.
_CPU_PROBE = """
import json, verl
from verl.plugin.platform import get_platform
from verl.workers.engine import EngineRegistry
from verl.workers.rollout.base import _ROLLOUT_REGISTRY
from verl.workers.rollout.replica import RolloutReplicaRegistry
engines = EngineRegistry._engines
print(json.dumps({
    "device": get_platform().device_name,
    "engines": sorted(m for m in ("language_model", "value_model") if "cpu" in engines.get(m, {}).get("fsdp2", {})),
    "rollout": ("hf", "async") in _ROLLOUT_REGISTRY and "hf" in RolloutReplicaRegistry._registry,
}))
"""


def _run(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)


def check_cpu_platform() -> list[str]:
    """Problems of the CPU platform (``rpg_ext.cpu``) in a fresh process with ``VERL_PLATFORM=cpu``; [] when fine.

    verl swallows the plugin's import error, after which ``VERL_PLATFORM=cpu`` names an unknown platform
    (or, worse, an older verl falls back to CUDA): the underlying error is shown here.
    """
    env = dict(os.environ, VERL_PLATFORM="cpu")
    probe = _run(_CPU_PROBE, env)
    info = None
    if probe.returncode == 0:
        info = json.loads(probe.stdout.strip().splitlines()[-1])
        if info["device"] == "cpu" and info["engines"] == ["language_model", "value_model"] and info["rollout"]:
            return []
    msg = ["the CPU platform was requested (VERL_PLATFORM=cpu) but verl cannot use it:"]
    if info is None:
        msg.append("  `import verl` + get_platform() fails in a fresh process:\n" + probe.stderr.rstrip()[-3000:])
    else:
        msg.append(
            f"  verl's device: {info['device']!r} (need 'cpu'); verl FSDP engines registered for cpu: "
            f"{info['engines'] or 'none'} (need language_model, value_model); hf rollout registered: {info['rollout']}"
        )
    direct = _run("import rpg_ext.plugin", env)
    if direct.returncode != 0:
        msg.append("The plugin fails to import (verl hides this error); `import rpg_ext.plugin` gives:")
        msg.append(direct.stderr.rstrip()[-3000:])
    return msg


def check(cpu_platform: bool | None = None) -> int:
    """``cpu_platform``: also check the CPU platform (default: when ``VERL_PLATFORM=cpu`` is set)."""
    out = sys.stdout
    eps = [ep for ep in entry_points(group="verl.plugins") if ep.value.split(":")[0].startswith("rpg_ext")]
    problems = []
    if not eps:
        problems.append(
            "no 'verl.plugins' entry point of rpg_ext is installed: reinstall the package (`pip install -e .`)"
        )
    policy = os.environ.get("VERL_USE_EXTERNAL_PLUGINS", "auto").strip().lower()
    if policy == "none" or (policy != "auto" and not {ep.name for ep in eps} & {p.strip() for p in policy.split(",")}):
        problems.append(f"VERL_USE_EXTERNAL_PLUGINS={policy!r} keeps verl from loading the rpg plugin")

    probe = _run(_PROBE)
    if probe.returncode != 0:
        print("rpg_ext check FAILED: `import verl` itself fails in a fresh process:\n" + probe.stderr, file=sys.stderr)
        return 1
    info = json.loads(probe.stdout.strip().splitlines()[-1])
    missing = [n for n in RPG_LOSS_NAMES if n not in info["losses"]]
    if missing:
        direct = _run(_PLUGIN_IMPORT)
        msg = [f"rpg_ext check FAILED: after `import verl` these RPG losses are not registered: {missing}"]
        msg += [f"  - {p}" for p in problems]
        if direct.returncode != 0:
            msg.append("The plugin fails to import (verl hides this error); `import rpg_ext.plugin` gives:")
            msg.append(direct.stderr.rstrip())
        print("\n".join(msg), file=sys.stderr)
        return 1
    if cpu_platform is None:
        cpu_platform = os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu"
    if cpu_platform:
        cpu_problems = check_cpu_platform()
        if cpu_problems:
            print("rpg_ext check FAILED: " + "\n".join(cpu_problems), file=sys.stderr)
            return 1
    if info["verl"] != VERL_VERSION:
        print(f"warning: rpg_ext was written for verl=={VERL_VERSION}, found verl {info['verl']}", file=sys.stderr)
    if info["kl_penalty"] != "rpg_ext.kl_penalty":
        print("warning: the rpg_* KL penalties (kl_loss_type / algorithm.kl_penalty) are not installed in verl "
              f"(verl {info['verl']}; they patch verl {VERL_VERSION} only); the RPG losses are unaffected", file=sys.stderr)
    print(f"rpg_ext OK: verl {info['verl']}, plugin registers {len(RPG_LOSS_NAMES)} losses: {', '.join(RPG_LOSS_NAMES)}",
          file=out)
    if info["kl_penalty"] == "rpg_ext.kl_penalty":
        print("rpg_ext OK: verl KL penalties rpg_fkl, rpg_rkl, rpg_ufkl, rpg_urkl installed", file=out)
    if cpu_platform:
        print("rpg_ext OK: CPU platform (VERL_PLATFORM=cpu): verl device cpu, FSDP engines and hf rollout registered",
              file=out)
    return 0
