"""Reference-policy management: when to refresh a periodic reference, and the in-worker weight copy.

``algorithm.rpg.reference=periodic`` refreshes the reference model from the current policy every K training steps
and/or when a moving average of the logged KL estimate exceeds a target kappa (paper, Section 5, "Iterative
reference updates"). :class:`ReferenceSchedule` is that decision, as plain state that is saved with every
checkpoint and restored on resume, so a resumed run refreshes at the same steps as an uninterrupted one.
:func:`copy_module_weights` copies the actor's weights into the reference model inside the worker that holds both
(no disk round trip): parameter by parameter on the local shards, which is exact for FSDP2 (DTensor shards on the
same mesh) and for Megatron (the same tensor/pipeline layout).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Optional

import torch

#: The actor metric the KL trigger watches: the RPG loss's (or regularizer's) mean k against the reference.
KL_METRIC = "actor/rpg/kl"


@dataclass
class ReferenceSchedule:
    """Refresh decision of a periodic reference.

    ``observe(step, kl)`` is called once per training step, after the actor update of that step, with the step's
    KL estimate; it returns True when the reference must now be set to the current policy.
    """

    every: Optional[int] = None  # K: refresh when K steps have passed since the last refresh
    kl_target: Optional[float] = None  # kappa: refresh when the moving average of the KL estimate exceeds it
    kl_decay: float = 0.9  # avg <- decay * avg + (1 - decay) * kl (the first observation sets avg = kl)
    # state
    refreshes: int = 0
    steps_since_refresh: int = 0
    kl_average: Optional[float] = None
    last_refresh_step: int = 0
    compared_kl_average: float = field(default=0.0, repr=False)  # not state: set by every observe()

    def observe(self, step: int, kl: Optional[float]) -> bool:
        self.steps_since_refresh += 1
        if self.kl_target is not None:
            if kl is None or not math.isfinite(kl):
                raise ValueError(
                    f"step {step}: the KL-target refresh needs the KL estimate {KL_METRIC!r}, got {kl!r} (is the "
                    "policy loss an RPG loss or algorithm.rpg.kl.divergence set?)"
                )
            d = self.kl_decay
            self.kl_average = kl if self.kl_average is None else d * self.kl_average + (1 - d) * kl
        due_every = self.every is not None and self.steps_since_refresh >= self.every
        due_kl = self.kl_target is not None and self.kl_average is not None and self.kl_average > self.kl_target
        self.compared_kl_average = self.kl_average  # what this step compared with the target (logged)
        if due_every or due_kl:
            self.refreshes += 1
            self.steps_since_refresh = 0
            self.kl_average = None  # the KL against the fresh reference starts again from zero
            self.last_refresh_step = step
            return True
        return False

    def metrics(self) -> dict[str, float]:
        out = {
            "actor/rpg/reference_refreshes": float(self.refreshes),
            "actor/rpg/steps_since_reference_refresh": float(self.steps_since_refresh),
        }
        if self.kl_target is not None:
            # the average this step compared with the target (also on a refresh step, where the state resets)
            out["actor/rpg/reference_kl_average"] = self.compared_kl_average
        return out

    _STATE = ("refreshes", "steps_since_refresh", "kl_average", "last_refresh_step")

    def state_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in self._STATE}

    def load_state_dict(self, state: dict) -> None:
        missing = [k for k in self._STATE if k not in state]
        if missing:
            raise ValueError(f"reference-schedule state lacks {missing}: {state!r}")
        for k in self._STATE:
            setattr(self, k, state[k])


def _strip(name: str) -> str:
    # wrappers (DDP / FSDP1 / torch.compile) prefix parameter names; the reference model has its own
    for prefix in ("module.", "_fsdp_wrapped_module.", "_orig_mod."):
        name = name.replace(prefix, "")
    return name


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _weights(modules: Iterable[torch.nn.Module]) -> dict[tuple[int, str], torch.Tensor]:
    """Parameters and floating buffers keyed by (model chunk, name): Megatron's virtual pipeline stages are chunks
    whose local parameter names repeat, so a name alone would address chunk 0 only."""
    out = {}
    for chunk, m in enumerate(modules):
        for name, t in list(m.named_parameters()) + [(n, b) for n, b in m.named_buffers() if b.is_floating_point()]:
            out.setdefault((chunk, _strip(name)), t)
    return out


def _describe(keys) -> list[str]:
    return [f"chunk {c}: {n}" for c, n in sorted(keys)[:5]]


@torch.no_grad()
def copy_module_weights(source: Iterable[torch.nn.Module], target: Iterable[torch.nn.Module]) -> int:
    """Copy every parameter (and floating buffer) of ``source`` into ``target``, shard by shard; returns the count.

    ``source`` and ``target`` are the model chunks of the actor and of the reference model of one worker (one
    module for FSDP, one per virtual pipeline stage for Megatron), with the same architecture and sharding; chunk i
    is copied into chunk i. Raises with the first mismatching name or shape instead of copying anything partially.
    """
    src, dst = _weights(source), _weights(target)
    if src.keys() != dst.keys():
        raise RuntimeError(f"actor and reference models differ: only in actor {_describe(src.keys() - dst.keys())}, "
                           f"only in reference {_describe(dst.keys() - src.keys())}")
    for key, d in dst.items():
        s_local, d_local = _local(src[key]), _local(d)
        if s_local.shape != d_local.shape:
            raise RuntimeError(
                f"cannot refresh the reference in place: chunk {key[0]} {key[1]} has local shape "
                f"{tuple(s_local.shape)} in the actor and {tuple(d_local.shape)} in the reference (different sharding)"
            )
    for key, d in dst.items():
        _local(d).copy_(_local(src[key]))
    return len(dst)


def shard_state(modules: Iterable[torch.nn.Module]) -> dict[str, torch.Tensor]:
    """This rank's local shards of every chunk's state dict, on the CPU, keyed ``"<chunk>/<name>"``."""
    out = {}
    for chunk, m in enumerate(modules):
        for name, t in m.state_dict().items():
            if isinstance(t, torch.Tensor):
                out[f"{chunk}/{name}"] = _local(t).detach().cpu()
    return out


@torch.no_grad()
def load_shard_state(modules: Iterable[torch.nn.Module], state: dict[str, torch.Tensor]) -> int:
    """Inverse of :func:`shard_state`: every chunk's tensors from ``state``; a missing or extra key is an error."""
    targets = {}
    for chunk, m in enumerate(modules):
        for name, t in m.state_dict().items():
            if isinstance(t, torch.Tensor):
                targets[f"{chunk}/{name}"] = t
    if targets.keys() != state.keys():
        missing, extra = sorted(targets.keys() - state.keys())[:5], sorted(state.keys() - targets.keys())[:5]
        raise RuntimeError(f"saved reference weights do not match the model: missing {missing}, unexpected {extra}")
    for key, t in targets.items():
        _local(t).copy_(state[key])
    return len(targets)
