"""Run verl 0.9.1's real trainer on a host without an accelerator.

Selected with ``VERL_PLATFORM=cpu`` (verl's own platform override; the launcher and ``machine=cpu`` set it when
no GPU is visible), and inert otherwise: on a GPU host nothing here is registered or patched, and verl's
platform auto-detection never picks ``cpu`` (the platform reports itself unavailable to auto-detection).

When selected, ``rpg_ext.plugin`` (loaded by ``import verl`` in every process, Ray workers included) calls
:func:`activate`, which registers

  * the verl platform ``cpu`` (``rpg_ext.cpu.platform``),
  * verl's own FSDP engines (``fsdp``/``fsdp2``, language and value models) for device ``cpu``,

and applies the runtime patches of ``rpg_ext.cpu.patches``. The rollout backend ``hf`` (``rpg_ext.hf_rollout``,
which generates on the CPU here) is registered on every platform by the plugin (``rpg_ext.rollouts``);
:func:`activate` imports it eagerly, so that a broken rollout fails the activation loudly. This module imports
nothing heavy itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess

PLATFORM_NAME = "cpu"
#: verl reads this variable to choose its platform (verl/plugin/platform/platform_manager.py).
PLATFORM_ENV = "VERL_PLATFORM"

_active = False


def requested(environ=os.environ) -> bool:
    """True when verl's platform override names the cpu platform."""
    return environ.get(PLATFORM_ENV, "").strip().lower() == PLATFORM_NAME


def gpu_visible() -> bool:
    """True when an accelerator is visible: a working ``nvidia-smi``/``rocm-smi``/``npu-smi``, or torch sees one.

    Used by the launchers: the CPU platform is chosen only when this is False (or when asked explicitly).
    """
    for smi in ("nvidia-smi", "rocm-smi", "npu-smi"):
        path = shutil.which(smi)
        if path is not None:
            try:
                if subprocess.run([path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20).returncode == 0:
                    return True
            except (OSError, subprocess.TimeoutExpired):
                pass
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # a broken torch is reported elsewhere; it does not make a GPU visible
        return False


def is_active() -> bool:
    return _active


def activate() -> None:
    """Register the cpu platform and verl's FSDP engines for device cpu, apply the patches, check the hf rollout.

    Idempotent. Raises (never falls back) when something cannot be registered.
    """
    global _active
    if _active:
        return
    from rpg_ext.cpu import patches

    patches.require_verl_version("the cpu platform, engine and rollout registration")
    # First: verl modules imported below resolve the platform at import time.
    from rpg_ext.cpu import platform as _platform  # noqa: F401  (registers the platform)
    from verl.workers.engine import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    from rpg_ext import hf_rollout, rollouts  # noqa: F401  (imported here: a broken rollout fails loudly)

    patches.apply_all()

    registry = EngineRegistry._engines
    for model_type, engine_cls in (("language_model", FSDPEngineWithLMHead), ("value_model", FSDPEngineWithValueHead)):
        registered = {b: registry.get(model_type, {}).get(b, {}).get(PLATFORM_NAME) for b in ("fsdp", "fsdp2")}
        if all(cls is engine_cls for cls in registered.values()):
            continue
        EngineRegistry.register(model_type=model_type, backend=["fsdp", "fsdp2"], device=PLATFORM_NAME)(engine_cls)

    # the plugin registered it already (on every platform); idempotent, and the rollout modules are imported now
    rollouts.register_hf_rollout()
    _active = True
