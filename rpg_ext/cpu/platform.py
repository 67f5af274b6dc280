"""verl platform ``cpu``: run verl's workers on the host CPU (gloo collectives, no accelerator).

verl 0.9.1 resolves its platform once per process (``verl.plugin.platform.get_platform``): ``VERL_PLATFORM``
when set, else the first registered platform whose ``is_platform_available`` is true, else ``nvidia``. This
platform is registered under the name ``cpu`` and never claims to be available, so auto-detection never
picks it: it is used only when ``VERL_PLATFORM=cpu`` names it.

verl treats the platform as an accelerator, so a few choices follow from how verl uses it:
  * ``current_device()`` returns the string ``"cpu"``: verl passes ``get_device_id()`` to ``.to(...)`` and
    ``torch.device(...)``, where an integer index would mean ``cuda:<i>``.
  * ``ray_resource_name()`` is ``"GPU"``: verl's resource pools, placement bundles and worker-group checks
    count only Ray ``GPU`` / ``NPU`` resources, so Ray is started with logical GPUs
    (``ray_init.num_gpus``), one per worker; no CUDA is touched.
  * ``device_module`` is a shim over ``torch.cpu`` whose cache / memory / stream calls are no-ops and whose
    RNG state is the CPU generator's.
"""

from __future__ import annotations

import os
import types
from contextlib import contextmanager, nullcontext
from typing import Any, Optional

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

PLATFORM_NAME = "cpu"


def _host_memory() -> tuple[int, int]:
    """(free, total) bytes of host memory, for ``mem_get_info``."""
    try:
        page, total_pages = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_PHYS_PAGES")
        free_pages = os.sysconf("SC_AVPHYS_PAGES")
        return int(free_pages * page), int(total_pages * page)
    except (ValueError, OSError, AttributeError):
        return 0, 0


def _make_device_module() -> types.ModuleType:
    """``torch.cpu`` plus the ``torch.cuda``-style calls verl makes on its device module."""
    mod = types.ModuleType("rpg_ext.cpu.device_module", "torch.cpu with no-op accelerator calls (verl platform cpu)")
    for name in ("current_stream", "stream", "Stream", "Event", "synchronize", "device_count", "is_available"):
        setattr(mod, name, getattr(torch.cpu, name))
    zero = lambda *args, **kwargs: 0  # noqa: E731
    noop = lambda *args, **kwargs: None  # noqa: E731
    mod.current_device = lambda: "cpu"
    mod.set_device = noop
    mod.empty_cache = noop
    mod.ipc_collect = noop
    mod.reset_peak_memory_stats = noop
    mod.set_per_process_memory_fraction = noop
    mod.memory_allocated = mod.memory_reserved = mod.max_memory_allocated = mod.max_memory_reserved = zero
    mod.mem_get_info = lambda *args, **kwargs: _host_memory()
    mod.get_device_name = lambda *args, **kwargs: "cpu"
    mod.get_rng_state = lambda *args, **kwargs: torch.get_rng_state()
    mod.set_rng_state = lambda state, *args, **kwargs: torch.set_rng_state(state)
    mod.manual_seed = mod.manual_seed_all = lambda seed: torch.manual_seed(seed)
    mod.nvtx = types.SimpleNamespace(range=lambda *a, **k: nullcontext(), range_push=noop, range_pop=noop)
    return mod


DEVICE_MODULE = _make_device_module()


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """verl platform for hosts without an accelerator (selected only by ``VERL_PLATFORM=cpu``)."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> types.ModuleType:
        return DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never auto-detected: only an explicit VERL_PLATFORM=cpu selects this platform.
        return False

    def current_device(self) -> str:  # verl uses it as a torch device
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: Optional[int] = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[Optional[int], Optional[int]]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # Ray sets it for actors holding logical GPUs; torch's CPU build ignores it.
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_gpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None
