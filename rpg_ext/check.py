"""``python -m rpg_ext check``: prove that a plain ``import verl`` registers the RPG losses (and the hf rollout).

verl loads ``verl.plugins`` entry points on import but swallows their import errors (debug log only), so a
broken install silently lacks the losses until a Ray worker fails an hour into a run. This check imports
verl in a fresh process, and on failure imports the plugin directly there to show the underlying error.
Only the standard library is imported here, so the check works even when torch or verl are broken.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

from rpg_ext import RPG_LOSS_NAMES, VERL_VERSION

#: One fresh process reports everything: the losses, the KL dispatch, the hf rollout and (with VERL_PLATFORM=cpu)
#: the platform verl resolves and the engines rpg_ext.cpu registered.
_PROBE = """
import json, os, verl
from verl.trainer.ppo import core_algos
info = {"verl": verl.__version__, "losses": sorted(core_algos.POLICY_LOSS_REGISTRY),
        "kl_penalty": core_algos.kl_penalty_forward.__module__}
hf = info["hf_rollout"] = {}
try:  # the plugin registers the hf rollout when verl imports its rollout tables
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY
    from verl.workers.rollout.replica import RolloutReplicaRegistry
    hf["adapter"] = _ROLLOUT_REGISTRY.get(("hf", "async"))
    replica = RolloutReplicaRegistry.get("hf")
    hf["replica"] = replica.__module__ + "." + replica.__qualname__
except Exception as e:
    hf["error"] = f"{type(e).__name__}: {e}"
if os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu":
    from verl.plugin.platform import get_platform
    from verl.workers.engine import EngineRegistry
    engines = EngineRegistry._engines
    info["cpu"] = {"device": get_platform().device_name, "engines": sorted(
        m for m in ("language_model", "value_model") if "cpu" in engines.get(m, {}).get("fsdp2", {}))}
try:  # a no-op where verl loaded the plugin; where verl hid why it could not, the same import raises it here
    import rpg_ext.plugin
except BaseException:
    import traceback
    info["plugin_error"] = traceback.format_exc()
print(json.dumps(info))
"""
#: What the probe finds when the hf rollout is registered and importable.
_HF_EXPECTED = {"adapter": "rpg_ext.hf_rollout.HFServerAdapter", "replica": "rpg_ext.hf_rollout.HFReplica"}
_CPU_EXPECTED = {"device": "cpu", "engines": ["language_model", "value_model"]}


def _run(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)


def plugin_disabled_reason(environ=os.environ) -> str | None:
    """Why verl's processes would not load the rpg plugin, or None: verl loads the ``verl.plugins`` entry points that
    ``VERL_USE_EXTERNAL_PLUGINS`` allows (``auto``: all; ``none``; or a comma-separated list of names)."""
    eps = [ep for ep in entry_points(group="verl.plugins") if ep.value.split(":")[0].startswith("rpg_ext")]
    if not eps:
        return "no 'verl.plugins' entry point of rpg_ext is installed: reinstall the package (`pip install -e .`)"
    policy = environ.get("VERL_USE_EXTERNAL_PLUGINS", "auto").strip().lower()
    if policy == "none" or (policy != "auto" and not {ep.name for ep in eps} & {p.strip() for p in policy.split(",")}):
        return (f"VERL_USE_EXTERNAL_PLUGINS={policy!r} keeps verl from loading the rpg plugin (entry point "
                f"{eps[0].name!r}): its processes would know no rpg_* loss, no hf rollout and no cpu platform; unset it "
                f"or include {eps[0].name!r}")
    return None


def _plugin_error(env: dict, info: dict | None = None) -> list[str]:
    """Why the plugin does not import: from the probe's own ``import rpg_ext.plugin`` (``info``), or, where the probe
    itself failed, from a fresh process that imports only the plugin."""
    if info is not None:
        error = info.get("plugin_error")
    else:
        direct = _run("import rpg_ext.plugin", env)
        error = direct.stderr if direct.returncode != 0 else None
    if not error:
        return []
    return ["The plugin fails to import (verl hides this error); `import rpg_ext.plugin` gives:", error.rstrip()[-3000:]]


def check(cpu_platform: bool | None = None) -> int:
    """``cpu_platform``: also check the CPU platform (default: when ``VERL_PLATFORM=cpu`` is set)."""
    if cpu_platform is None:
        cpu_platform = os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu"
    env = dict(os.environ, **({"VERL_PLATFORM": "cpu"} if cpu_platform else {}))
    probe = _run(_PROBE, env)
    if probe.returncode != 0:
        missing = "No module named" in probe.stderr
        print("rpg_ext check FAILED: `import verl` fails in a fresh process of this Python "
              f"({sys.executable}):\n{probe.stderr.rstrip()[-3000:]}"
              + ("\nThis Python lacks the project's environment: run `bash scripts/setup.sh`, then "
                 "`.venv/bin/python -m rpg_ext check`" if missing else "")
              + ("\n" + "\n".join(_plugin_error(env)) if cpu_platform else ""), file=sys.stderr)
        return 1
    info = json.loads(probe.stdout.strip().splitlines()[-1])
    missing = [n for n in RPG_LOSS_NAMES if n not in info["losses"]]
    cpu = info.get("cpu")
    if missing or (cpu_platform and cpu != _CPU_EXPECTED):
        msg = ["rpg_ext check FAILED:"]
        if missing:
            msg.append(f"  after `import verl` these RPG losses are not registered: {missing}")
            reason = plugin_disabled_reason(env)
            msg += [f"  - {reason}"] if reason else []
        if cpu_platform and cpu != _CPU_EXPECTED:
            msg.append(f"  the CPU platform was requested (VERL_PLATFORM=cpu) but verl cannot use it: verl's device "
                       f"{cpu and cpu['device']!r} (need 'cpu'); verl FSDP engines registered for cpu: "
                       f"{(cpu and cpu['engines']) or 'none'} (need language_model, value_model)")
        print("\n".join(msg + _plugin_error(env, info)), file=sys.stderr)
        return 1
    hf_ok = info.get("hf_rollout") == _HF_EXPECTED
    if cpu_platform and not hf_ok:
        hf = info.get("hf_rollout", {})
        print("rpg_ext check FAILED: the CPU platform needs the hf rollout, which is not usable: "
              + (hf.get("error") or f"verl's rollout tables hold {hf}, expected {_HF_EXPECTED}") + "\n"
              + "\n".join(_plugin_error(env, info)), file=sys.stderr)
        return 1
    if info["verl"] != VERL_VERSION:
        print(f"warning: rpg_ext was written for verl=={VERL_VERSION}, found verl {info['verl']}", file=sys.stderr)
    if not hf_ok:
        hf = info.get("hf_rollout", {})
        print("warning: the hf rollout (actor_rollout_ref.rollout.name=hf) is not usable: "
              + (hf.get("error") or f"verl's rollout tables hold {hf}, expected {_HF_EXPECTED}"), file=sys.stderr)
    if info["kl_penalty"] != "rpg_ext.kl_penalty":
        print("warning: the rpg_* KL penalties (kl_loss_type / algorithm.kl_penalty) are not installed in verl "
              f"(verl {info['verl']}; they patch verl {VERL_VERSION} only); the RPG losses are unaffected", file=sys.stderr)
    out = sys.stdout
    print(f"rpg_ext OK: verl {info['verl']}, plugin registers {len(RPG_LOSS_NAMES)} losses: {', '.join(RPG_LOSS_NAMES)}",
          file=out)
    if info["kl_penalty"] == "rpg_ext.kl_penalty":
        print("rpg_ext OK: verl KL penalties rpg_fkl, rpg_rkl, rpg_ufkl, rpg_urkl installed", file=out)
    if hf_ok:
        print("rpg_ext OK: rollout backend hf registered "
              "(actor_rollout_ref.rollout.name=hf, rpg_ext.hf_rollout.HFReplica)", file=out)
    if cpu_platform:
        print("rpg_ext OK: CPU platform (VERL_PLATFORM=cpu): verl device cpu, FSDP engines and hf rollout registered",
              file=out)
    return 0
