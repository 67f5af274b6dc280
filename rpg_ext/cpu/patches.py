"""The runtime patches verl 0.9.1 needs to run on the ``cpu`` platform, each with the upstream fix that removes it.

They are applied by ``rpg_ext.cpu.activate()`` only, i.e. only in processes where ``VERL_PLATFORM=cpu``, and
each refuses to apply to a verl release other than the one it was written for (the patched code may have
changed): upgrade rpg-verl or pin ``verl==0.9.1``.

1. ``init_process_group`` backend string (every worker).
   ``verl/utils/distributed.py`` builds ``f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"``, which on the
   cpu platform is ``"cpu:gloo,cpu:gloo"``; torch rejects a device type named twice. The patch drops repeated
   ``device:backend`` entries before calling torch.
   Upstream fix: ``backend = "cpu:gloo" if get_device_name() == "cpu" else f"cpu:gloo,{...}"``.
2. Pinned-memory offload of forward-only engines (reference model).
   ``FSDPEngine._build_fsdp_module`` forces ``CPUOffloadPolicy(pin_memory=True)`` for forward-only engines
   (and for ``offload_policy=True``); pinning host memory needs an accelerator. The patch builds the policy
   with ``pin_memory=False``.
   Upstream fix: ``CPUOffloadPolicy(pin_memory=get_device_name() != "cpu")``.
3. Value-head model attention (critic).
   ``verl.utils.model.load_valuehead_model`` hard-codes ``attn_implementation="flash_attention_2"``. The patch
   loads the token-classification value model with the attention implementation of the model config
   (``model.override_config.attn_implementation``, e.g. ``sdpa``).
   Upstream fix: ``attn_implementation=getattr(model_config, "_attn_implementation", "flash_attention_2")``.
"""

from __future__ import annotations

import functools

#: The verl release every patch below was written against.
PATCHED_VERL_VERSION = "0.9.1"

_applied: list[str] = []


def require_verl_version(what: str) -> None:
    """Refuse to touch verl internals written against another verl release."""
    import verl

    if verl.__version__ != PATCHED_VERL_VERSION:
        raise RuntimeError(
            f"rpg_ext.cpu: {what} was written for verl=={PATCHED_VERL_VERSION}, but verl "
            f"{verl.__version__} is installed. The patched code may differ: install verl=={PATCHED_VERL_VERSION} "
            "(as pyproject.toml pins it) or an rpg-verl release written for this verl. The cpu platform is "
            "only used with VERL_PLATFORM=cpu; unset it to run on an accelerator."
        )


def dedupe_backend(backend: str | None) -> str | None:
    """``"cpu:gloo,cpu:gloo"`` -> ``"cpu:gloo"``: keep the first ``device:backend`` entry per device type."""
    if not isinstance(backend, str) or "," not in backend:
        return backend
    seen, kept = set(), []
    for entry in (e.strip() for e in backend.split(",")):
        device = entry.split(":", 1)[0] if ":" in entry else None
        if device is not None and device in seen:
            continue
        seen.add(device)
        kept.append(entry)
    return ",".join(kept)


def patch_init_process_group() -> None:
    require_verl_version("the runtime patch of the init_process_group backend string")
    import torch.distributed as dist

    original = dist.init_process_group
    if getattr(original, "_rpg_cpu_patched", False):
        return

    @functools.wraps(original)
    def init_process_group(*args, **kwargs):
        if "backend" in kwargs:
            kwargs["backend"] = dedupe_backend(kwargs["backend"])
        elif args:
            args = (dedupe_backend(args[0]),) + tuple(args[1:])
        return original(*args, **kwargs)

    init_process_group._rpg_cpu_patched = True
    dist.init_process_group = init_process_group
    _applied.append("init_process_group")


def patch_forward_only_offload() -> None:
    require_verl_version("the runtime patch of the forward-only engine's pinned-memory offload")
    from torch.distributed.fsdp import CPUOffloadPolicy

    from verl.workers.engine.fsdp import transformer_impl

    if getattr(transformer_impl.CPUOffloadPolicy, "_rpg_cpu_patched", False):
        return

    def unpinned_cpu_offload_policy(*args, pin_memory: bool = True, **kwargs):
        return CPUOffloadPolicy(*args, pin_memory=False, **kwargs)

    unpinned_cpu_offload_policy._rpg_cpu_patched = True
    transformer_impl.CPUOffloadPolicy = unpinned_cpu_offload_policy
    _applied.append("forward_only_offload")


def patch_valuehead_attention() -> None:
    require_verl_version("the runtime patch of the value-head model's attention")
    from verl.utils import model as verl_model

    if getattr(verl_model.load_valuehead_model, "_rpg_cpu_patched", False):
        return

    def load_valuehead_model(local_path, torch_dtype, model_config, trust_remote_code):
        from transformers import AutoModelForTokenClassification

        attn = getattr(model_config, "_attn_implementation", None) or "sdpa"
        return AutoModelForTokenClassification.from_pretrained(
            pretrained_model_name_or_path=local_path,
            torch_dtype=torch_dtype,
            config=model_config,
            attn_implementation=attn,
            trust_remote_code=trust_remote_code,
        )

    load_valuehead_model._rpg_cpu_patched = True
    verl_model.load_valuehead_model = load_valuehead_model
    _applied.append("valuehead_attention")


def apply_all() -> list[str]:
    """Apply every patch (idempotent); returns the names applied in this process."""
    patch_init_process_group()
    patch_forward_only_offload()
    patch_valuehead_attention()
    return list(_applied)
