"""Rollout backends: the lazy registration of ``hf`` in verl, and whether verl's vLLM rollout can run on this host.

Imports only the standard library, so that ``rpg_ext.plugin`` (loaded by ``import verl`` in every process) and the
launcher's pre-flight checks stay light.

Registration of ``actor_rollout_ref.rollout.name=hf`` (:func:`register_hf_rollout`, called by the plugin on every
platform). verl 0.9.1 looks a rollout up in two tables, both in modules that ``import verl`` does not load:

  * ``verl.workers.rollout.base._ROLLOUT_REGISTRY`` (private dict, ``(name, mode)`` -> dotted path of the adapter
    that lives in the actor worker), read by ``get_rollout_class``;
  * ``verl.workers.rollout.replica.RolloutReplicaRegistry`` (public, name -> loader of the replica class).

Both entries are lazy (a dotted path and a loader), and they are written when verl itself imports those modules
(a post-import hook on the two module names), so the plugin imports neither them nor ``rpg_ext.hf_rollout``
(Ray, transformers) at ``import verl`` time. Version guard: the entries are written on any verl (the table
must exist), but ``rpg_ext.hf_rollout`` refuses to import on a verl other than the one it was written for, so
selecting ``hf`` there fails with that message instead of running code written for other internals.
"""

from __future__ import annotations

import importlib.abc
import logging
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Optional

#: ``actor_rollout_ref.rollout.name`` of the Hugging Face rollout.
HF_ROLLOUT = "hf"
#: verl's rollout-class table entry: the adapter in the actor worker (imported by verl when ``hf`` is selected).
HF_ADAPTER_PATH = "rpg_ext.hf_rollout.HFServerAdapter"
#: verl's replica table entry, loaded by dotted path as the adapter is (the heavy module is imported when selected).
HF_REPLICA_PATH = "rpg_ext.hf_rollout.HFReplica"
#: The verl release whose internals the hf rollout was written against.
HF_ROLLOUT_VERL_VERSION = "0.9.1"

_BASE_MODULE = "verl.workers.rollout.base"
_REPLICA_MODULE = "verl.workers.rollout.replica"

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Post-import hooks
# ----------------------------------------------------------------------------------------------------------------


class _HookedLoader(importlib.abc.Loader):
    """Runs the original loader, then the hooks of the module (the module keeps the original loader)."""

    def __init__(self, loader, on_loaded: Callable):
        self._loader = loader
        self._on_loaded = on_loaded

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        self._on_loaded(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` entry that finds nothing itself: for the hooked module names it wraps the loader that
    the other finders return, so that the hooks run right after the module has executed. It removes itself once
    every hook has run."""

    def __init__(self):
        self.hooks: dict[str, list[Callable]] = {}
        self._lock = threading.RLock()

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.hooks:
            return None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _HookedLoader(spec.loader, self._run)
        return spec

    def _run(self, module):
        with self._lock:
            hooks = self.hooks.pop(module.__name__, [])
            if not self.hooks and self in sys.meta_path:
                sys.meta_path.remove(self)
        for hook in hooks:
            try:
                hook(module)
            except Exception:  # never break verl's own import because of a registration
                logger.exception("rpg_ext: post-import hook on %s failed", module.__name__)


_finder: Optional[_PostImportFinder] = None


def when_imported(module_name: str, hook: Callable) -> None:
    """Call ``hook(module)`` once ``module_name`` has been imported: now if it already is, else right after the
    import that executes it (in this process)."""
    global _finder
    module = sys.modules.get(module_name)
    if module is not None and getattr(module, "__spec__", None) is not None and not _initializing(module):
        hook(module)
        return
    if _finder is None or _finder not in sys.meta_path:
        _finder = _PostImportFinder()
        sys.meta_path.insert(0, _finder)
    with _finder._lock:
        _finder.hooks.setdefault(module_name, []).append(hook)


def _initializing(module) -> bool:
    return bool(getattr(module.__spec__, "_initializing", False))


# ----------------------------------------------------------------------------------------------------------------
# Registration of the hf rollout
# ----------------------------------------------------------------------------------------------------------------


def verl_version_problem() -> Optional[str]:
    """Why the hf rollout refuses this verl (None when it is the release it was written for)."""
    import verl  # already imported (or being imported) wherever this runs

    version = getattr(verl, "__version__", None)
    if version == HF_ROLLOUT_VERL_VERSION:
        return None
    return (
        f"rpg_ext: the hf rollout (actor_rollout_ref.rollout.name=hf) was written for verl=={HF_ROLLOUT_VERL_VERSION} "
        f"(it implements verl's private rollout-server protocol), but verl {version} is installed. Install "
        f"verl=={HF_ROLLOUT_VERL_VERSION} (as pyproject.toml pins it), or use verl's own rollout "
        "(actor_rollout_ref.rollout.name=vllm)."
    )


def require_verl_version() -> None:
    """Raise the message of :func:`verl_version_problem` on another verl."""
    problem = verl_version_problem()
    if problem is not None:
        raise RuntimeError(problem)


def _load_hf_replica():
    import importlib

    module, name = HF_REPLICA_PATH.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)  # the module refuses another verl with a clear message


def _register_adapter(base_module) -> None:
    table = getattr(base_module, "_ROLLOUT_REGISTRY", None)
    if not isinstance(table, dict):  # another verl without verl 0.9.1's table: nothing to write into
        logger.warning("rpg_ext: verl.workers.rollout.base has no _ROLLOUT_REGISTRY dict; rollout 'hf' not registered")
        return
    table[(HF_ROLLOUT, "async")] = HF_ADAPTER_PATH


def _register_replica(replica_module) -> None:
    replica_module.RolloutReplicaRegistry.register(HF_ROLLOUT, _load_hf_replica)


def register_hf_rollout() -> None:
    """Register the ``hf`` rollout in verl's two rollout tables, lazily (see the module docstring). Idempotent;
    imports nothing beyond what is already imported."""
    when_imported(_BASE_MODULE, _register_adapter)
    when_imported(_REPLICA_MODULE, _register_replica)


def hf_rollout_registered() -> bool:
    """Both of verl's tables hold the hf rollout (imports verl's rollout modules)."""
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    return _ROLLOUT_REGISTRY.get((HF_ROLLOUT, "async")) == HF_ADAPTER_PATH and (
        RolloutReplicaRegistry._registry.get(HF_ROLLOUT) is _load_hf_replica
    )


# ----------------------------------------------------------------------------------------------------------------
# Can verl's vLLM rollout run here?
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VllmStatus:
    """Whether ``import vllm`` works with this interpreter: ``version`` when it does, ``error`` when not."""

    importable: bool
    version: Optional[str] = None
    error: Optional[str] = None


def vllm_status(python: str = sys.executable, timeout: float = 600) -> VllmStatus:
    """Import vLLM in a fresh process (a broken CUDA build can crash or hang an import; the caller is spared)."""
    import importlib.util

    if python == sys.executable and importlib.util.find_spec("vllm") is None:
        return VllmStatus(False, error="vllm is not installed")
    code = "import vllm; print(vllm.__version__)"
    try:
        r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return VllmStatus(False, error=f"`import vllm` did not finish within {timeout:.0f} s")
    if r.returncode != 0:
        lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
        return VllmStatus(False, error=lines[-1] if lines else f"`import vllm` exited with {r.returncode}")
    out = r.stdout.strip().splitlines()
    return VllmStatus(True, version=out[-1] if out else None)


def gpu_without_vllm_message(status: VllmStatus) -> str:
    """The one paragraph for a GPU host on which vLLM cannot be imported."""
    return (
        f"verl's vLLM rollout (actor_rollout_ref.rollout.name=vllm) cannot run on this host: a GPU is visible but "
        f"vLLM cannot be imported ({status.error}). Either use the hf rollout of rpg-verl, which generates with the "
        "Hugging Face transformers model on the same GPU as the trainer (batched, with a KV cache, slower than "
        "vLLM; one process per replica, text only): add actor_rollout_ref.rollout.name=hf "
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1 to the command line, or set ROLLOUT=hf for the "
        "launchers. Or install vLLM in this environment with the CUDA build verl pins: pip install -e '.[vllm]' "
        "(verl[vllm]==0.9.1); check with: python -c 'import vllm'."
    )


def vllm_rollout_check(gpu_visible: bool, status: Optional[VllmStatus] = None) -> tuple[bool, Optional[str]]:
    """``(usable, message)``: whether verl's vLLM rollout can be used on this host (a GPU is visible and vLLM
    imports), and for a GPU host without a working vLLM the paragraph of :func:`gpu_without_vllm_message`
    (None otherwise: a host without a GPU runs the CPU path, which never uses vLLM).

    ``gpu_visible``: ``rpg_ext.cpu.gpu_visible()`` at the caller; ``status`` defaults to :func:`vllm_status` (a
    subprocess).
    """
    if not gpu_visible:
        return False, None
    if status is None:
        status = vllm_status()
    if status.importable:
        return True, None
    return False, gpu_without_vllm_message(status)
