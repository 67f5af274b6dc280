"""Per-token KL terms of the four RPG divergences (spec table), one definition each.

Notation (all tensors ``(batch, response_len)``):
    lp  = log pi_theta (differentiable), olp = log pi_old (sampling policy), rlp = log pi_ref
    w   = exp(lp - olp)        importance weight pi_theta / pi_old
    log_u = lp - rlp           log pi_theta / pi_ref          (= log w when ref = old)
    rho = exp(rlp - olp)       pi_ref / pi_old, a constant    (= 1 when ref = old)

For every divergence ``k`` satisfies E_old[k] = D and grad E_old[k] = grad D, so ``k`` is both the loss
term of the fully differentiable losses and the logged KL estimate. ``dk_dlp`` is its partial derivative
in lp; the REINFORCE-style losses use it as their KL component C = -beta * dk_dlp.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from rpg_ext import DIVERGENCES

#: Log-ratios are clamped to +-LOG_RATIO_CLAMP before exp, as verl's own losses do (spec section 4).
LOG_RATIO_CLAMP = 20.0

Tensor = torch.Tensor
Scalar = Tensor | float


class Divergence(NamedTuple):
    """A divergence D between pi_ref and pi_theta, estimated per token from samples of pi_old."""

    name: str
    k: Callable[[Tensor, Tensor, Scalar], Tensor]  # (w, log_u, rho) -> per-token KL term
    dk_dlp: Callable[[Tensor, Tensor, Scalar], Tensor]  # (w, log_u, rho) -> d k / d lp


DIVERGENCE_REGISTRY: dict[str, Divergence] = {}


def register_divergence(name: str, k, dk_dlp) -> Divergence:
    if name not in DIVERGENCES:
        raise ValueError(f"{name!r} is not one of rpg_ext.DIVERGENCES {DIVERGENCES}")
    div = Divergence(name, k, dk_dlp)
    DIVERGENCE_REGISTRY[name] = div
    return div


def get_divergence(name: str) -> Divergence:
    if name not in DIVERGENCE_REGISTRY:
        raise ValueError(f"Unknown RPG divergence {name!r}; known: {sorted(DIVERGENCE_REGISTRY)}")
    return DIVERGENCE_REGISTRY[name]


# fkl: KL(pi_ref || pi_theta)          k = rho * (rlp - lp)            dk/dlp = -rho
register_divergence("fkl", lambda w, log_u, rho: -rho * log_u, lambda w, log_u, rho: -rho * torch.ones_like(w))
# rkl: KL(pi_theta || pi_ref)          k = w * log u                   dk/dlp = w * (log u + 1)
register_divergence("rkl", lambda w, log_u, rho: w * log_u, lambda w, log_u, rho: w * (log_u + 1))
# ufkl: UKL(pi_ref || pi_theta)        k = w - rho * log u - rho       dk/dlp = w - rho
register_divergence("ufkl", lambda w, log_u, rho: w - rho * log_u - rho, lambda w, log_u, rho: w - rho)
# urkl: UKL(pi_theta || pi_ref)        k = rho + w * log u - w         dk/dlp = w * log u
register_divergence("urkl", lambda w, log_u, rho: rho + w * log_u - w, lambda w, log_u, rho: w * log_u)
assert tuple(DIVERGENCE_REGISTRY) == DIVERGENCES


def log_ratios(
    log_prob: Tensor, old_log_prob: Tensor, ref_log_prob: Tensor | None = None
) -> tuple[Tensor, Tensor, Scalar]:
    """Clamped ``(log w, log u, rho)``; ``ref_log_prob=None`` means the reference is the sampling policy.

    log w and log u carry the gradient of ``log_prob``; rho is a constant (no gradient).
    """
    log_w = torch.clamp(log_prob - old_log_prob, min=-LOG_RATIO_CLAMP, max=LOG_RATIO_CLAMP)
    if ref_log_prob is None:
        return log_w, log_w, 1.0
    log_u = torch.clamp(log_prob - ref_log_prob, min=-LOG_RATIO_CLAMP, max=LOG_RATIO_CLAMP)
    rho = torch.exp(torch.clamp(ref_log_prob - old_log_prob, min=-LOG_RATIO_CLAMP, max=LOG_RATIO_CLAMP)).detach()
    return log_w, log_u, rho


def rpg_kl_term(div: str, log_prob: Tensor, ref_log_prob: Tensor | None, old_log_prob: Tensor | None = None) -> Tensor:
    """Per-token k of the RPG divergence ``div`` for samples of pi_old.

    - ``old_log_prob`` and ``ref_log_prob`` given: the general form (rho = pi_ref/pi_old, log u = log pi_theta/pi_ref).
    - ``ref_log_prob=None``: the reference is the sampling policy (the "ref = old" column).
    - ``old_log_prob=None``: the samples are taken to be on-policy, pi_old = pi_theta (w = 1 in value, its
      gradient kept: old_log_prob := log_prob.detach()). This is what verl's two-log-prob KL call sites can use.
    """
    if old_log_prob is None:
        old_log_prob = log_prob.detach()
    log_w, log_u, rho = log_ratios(log_prob, old_log_prob, ref_log_prob)
    return get_divergence(div).k(torch.exp(log_w), log_u, rho)
