"""The RPG policy losses, registered in verl's policy-loss registry (``../shared/spec/RPG_SPEC.md`` sections 1-2).

Eight names, each with verl's ``PolicyLossFn`` signature, returning ``(loss, metrics)``:

    rpg_<div>            fully differentiable:  L = dualclip(w, A) + beta * k            (Algorithm 1)
    rpg_reinforce_<div>  REINFORCE-style:       L = -SG(w * A + C) * lp, C = -beta * dk/dlp (Algorithm 2)

for <div> in fkl, rkl, ufkl, urkl (``rpg_ext.divergences``). All tensors are ``(batch, response_len)``.
``ref_log_prob=None`` means the reference is the sampling policy (the paper's iterative reference);
passing it selects the general formulas with rho = pi_ref / pi_old and log u = log pi_theta / pi_ref.
"""

from __future__ import annotations

import contextlib
import math
from contextvars import ContextVar
from typing import Any, Optional

import torch
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, agg_loss, register_policy_loss

from rpg_ext import RPG_LOSS_NAMES
from rpg_ext import config as rpg_config  # module, not names: `import rpg_ext.config` first imports verl, whose
# plugin loading imports this module while rpg_ext.config is still half-initialized
from rpg_ext.divergences import Divergence, get_divergence, log_ratios

Tensor = torch.Tensor
METRIC_PREFIX = "actor/rpg/"

# ref_log_prob of the micro-batch being trained, set by rpg_ext.actor_loss around verl's ppo_loss (which does not
# pass it to policy losses); None means the reference is the sampling policy.
_REFERENCE_LOG_PROB: ContextVar[Optional[Tensor]] = ContextVar("rpg_reference_log_prob", default=None)


@contextlib.contextmanager
def reference_log_prob(ref_log_prob: Optional[Tensor]):
    """Within this context the RPG losses use ``ref_log_prob`` (padded, ``(batch, response_len)``) as the reference
    whenever their own ``ref_log_prob`` argument is None."""
    token = _REFERENCE_LOG_PROB.set(ref_log_prob)
    try:
        yield
    finally:
        _REFERENCE_LOG_PROB.reset(token)


def _compute_dtype(x: Tensor) -> torch.dtype:
    # bf16 / fp16 inputs are computed in float32; float32 and float64 stay as they are.
    return torch.promote_types(x.dtype, torch.float32)


def dual_clip(w: Tensor, adv: Tensor, p: rpg_config.RPGParams) -> tuple[Tensor, dict[str, Tensor]]:
    """verl's PPO dual clip of ``-w * adv``: ``max(-w adv, -clip(w, 1-eps_low, 1+eps_high) adv)``, and
    ``min(., -c adv)`` where ``adv < 0``; with the clipped-token flags (no gradient)."""
    neg = adv < 0
    pg = torch.maximum(-adv * w, -adv * torch.clamp(w, 1 - p.eps_low, 1 + p.eps_high))
    pg = torch.where(neg, torch.minimum(pg, -p.clip_c * adv), pg)
    with torch.no_grad():
        flags = dict(high=(adv > 0) & (w > 1 + p.eps_high), low=neg & (w < 1 - p.eps_low), dual=neg & (w > p.clip_c))
    return pg, flags


def rpg_token_loss(
    div: Divergence, log_prob, old_log_prob, advantages, p: rpg_config.RPGParams, ref_log_prob=None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token loss of ``rpg_<div>`` (spec section 1) and the tensors its metrics need."""
    log_w, log_u, rho = log_ratios(log_prob, old_log_prob, ref_log_prob)
    w = torch.exp(log_w)
    A = advantages
    k = div.k(w, log_u, rho)
    flags = dict(high=None, low=None, dual=None)
    if p.clip == "none":
        loss = -w * A + p.beta * k  # L = -w A + beta * k
    elif p.clip == "dual":
        pg, flags = dual_clip(w, A, p)
        loss = pg + p.beta * k  # L = dualclip(w, A) + beta * k: the KL part is never clipped (released code)
    else:  # "alg1": Algorithm 1 as printed, the dual clip on A_hat = A + C / w (gradient through w and A_hat)
        A_hat = A - p.beta * div.dk_dlp(w, log_u, rho) / w
        loss, flags = dual_clip(w, A_hat, p)  # L = dualclip(w, A_hat): the KL part inside the clip
    parts = dict(k=k.detach(), w=w.detach(), log_w=log_w.detach(), **flags)
    return loss, parts


def rpg_reinforce_token_loss(
    div: Divergence, log_prob, old_log_prob, advantages, p: rpg_config.RPGParams, ref_log_prob=None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token loss of ``rpg_reinforce_<div>`` (spec section 2) and the tensors its metrics need."""
    A = advantages
    with torch.no_grad():
        log_w, log_u, rho = log_ratios(log_prob, old_log_prob, ref_log_prob)
        w = torch.exp(log_w)
        C = -p.beta * div.dk_dlp(w, log_u, rho)  # KL component C = -beta * dk/dlp (constant)
        k = div.k(w, log_u, rho)
        high = low = dual = None
        if p.clip == "none":
            w_eff = w
        elif p.clip == "truncate":
            # Remark F.2: w -> w_bar and log w -> log w_bar inside SG, in C too (log u -> log w_bar - log rho)
            log_w_bar = torch.clamp(log_w, math.log(1 - p.eps_low), math.log(1 + p.eps_high))
            w_eff = torch.exp(log_w_bar)
            log_u_bar = log_w_bar if ref_log_prob is None else log_w_bar - torch.log(rho)
            C = -p.beta * div.dk_dlp(w_eff, log_u_bar, rho)  # C(w_bar)
            high, low = w > 1 + p.eps_high, w < 1 - p.eps_low
        else:  # RPG-Style Clip: branch on the sign of A' = A + C / w, i.e. of w * A + C (w > 0)
            pos = w * A + C >= 0
            high = pos & (w >= 1 + p.eps_high)
            low = ~pos & (w <= 1 - p.eps_low)
            dual = ~pos & (w >= p.clip_c)
            # clipped branches use the bound as weight and carry no gradient (constants in theta)
            w_eff = torch.where(high, 1 + p.eps_high, torch.where(low, 1 - p.eps_low, torch.where(dual, p.clip_c, w)))
        coef = w_eff * A + C
    if p.clip == "dual":
        keep = ~(high | low | dual)
        log_prob = torch.where(keep, log_prob, log_prob.detach())
    loss = -coef * log_prob  # L = -SG(w A + C) * lp
    kept = keep if p.clip == "dual" else None
    return loss, dict(k=k, w=w, log_w=log_w, high=high, low=low, dual=dual, kept=kept)


def _masked_metrics(reinforce: bool, mask: Tensor, t: dict[str, Optional[Tensor]]) -> dict[str, float]:
    """Spec section 5 diagnostics over unmasked tokens, as floats (one device sync)."""
    with torch.no_grad():
        w = torch.where(mask, t["w"], 0.0)  # masked tokens never count (w > 0 elsewhere, so max is unaffected)
        n = mask.sum()
        n_safe = n.clamp(min=1).to(w.dtype)
        sw, sw2 = w.sum(), torch.dot(w.flatten(), w.flatten())

        def frac(b):
            return torch.zeros_like(sw) if b is None else (b & mask).sum() / n_safe

        v = {
            METRIC_PREFIX + "kl": torch.where(mask, t["k"], 0.0).sum() / n_safe,  # the variant's KL estimate
            METRIC_PREFIX + "iw_mean": sw / n_safe,
            METRIC_PREFIX + "iw_max": w.max() if w.numel() else torch.zeros_like(sw),
            METRIC_PREFIX + "iw_ess": sw * sw / (n * sw2).clamp(min=torch.finfo(w.dtype).tiny),  # (sum w)^2/(n sum w^2)
            METRIC_PREFIX + "clipfrac_high": frac(t["high"]),
            METRIC_PREFIX + "clipfrac_low": frac(t["low"]),
            METRIC_PREFIX + "clipfrac_dual": frac(t["dual"]),
        }
        if reinforce:
            v[METRIC_PREFIX + "kept_frac"] = frac(t["kept"]) if t.get("kept") is not None else n / n_safe
        # verl's standard names as well, so RPG runs compare directly with vanilla / GRPO runs on a dashboard
        v["actor/ppo_kl"] = -torch.where(mask, t["log_w"], 0.0).sum() / n_safe
        v["actor/pg_clipfrac"] = v[METRIC_PREFIX + "clipfrac_high"] + v[METRIC_PREFIX + "clipfrac_low"]
        v["actor/pg_clipfrac_lower"] = v[METRIC_PREFIX + "clipfrac_dual"]
        floats = torch.stack([x.to(torch.float64) for x in v.values()]).tolist()
    return dict(zip(v.keys(), floats, strict=True))


def aggregate_loss(
    loss_mat: Tensor, mask: Tensor, loss_agg_mode: str, config: Any, rollout_is_weights: Tensor | None = None
) -> Tensor:
    """verl's ``agg_loss`` with the config's global batch info (dp size, global token / sequence counts).

    The one rule for verl's rollout correction: its weights ``rollout_is_weights`` (pi_old / pi_rollout, when
    enabled) multiply every per-token term that estimates an expectation under pi_old, here, before aggregation:
    the RPG losses and the KL regularizer (``rpg_ext.actor_loss``) both aggregate through this function.
    Without global info (a direct call on one micro-batch), an all-masked micro-batch gives 0, not 0/0.
    """
    if rollout_is_weights is not None:
        loss_mat = loss_mat * rollout_is_weights.to(loss_mat.dtype)
    info = dict(rpg_config._get(config, "global_batch_info", None) or {})
    if (info.get("dp_size") or 1) <= 1:
        if loss_agg_mode == "token-mean" and info.get("batch_num_tokens") is None:
            info["batch_num_tokens"] = mask.sum().clamp(min=1)
        elif loss_agg_mode.startswith("seq-mean") and info.get("global_batch_size") is None:
            info["global_batch_size"] = (mask.sum(-1) > 0).sum().clamp(min=1)
    return agg_loss(loss_mat=loss_mat, loss_mask=mask, loss_agg_mode=loss_agg_mode, **info)


def rpg_policy_loss(
    name: str,
    old_log_prob: Tensor,
    log_prob: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: Tensor | None = None,
    ref_log_prob: Tensor | None = None,
) -> tuple[Tensor, dict[str, Any]]:
    """The RPG loss ``name`` (one of ``rpg_ext.RPG_LOSS_NAMES``) on one micro-batch."""
    p = rpg_config.resolve_params(config, name)
    reinforce = name.startswith("rpg_reinforce_")
    div = get_divergence(name.rsplit("_", 1)[1])
    if ref_log_prob is None:
        ref_log_prob = _REFERENCE_LOG_PROB.get()
    dtype = _compute_dtype(log_prob)
    mask = response_mask.bool()
    lp, olp, A = log_prob.to(dtype), old_log_prob.to(dtype), advantages.to(dtype)
    rlp = None if ref_log_prob is None else ref_log_prob.to(dtype)
    token_loss = rpg_reinforce_token_loss if reinforce else rpg_token_loss
    loss_mat, parts = token_loss(div, lp, olp, A, p, rlp)
    loss = aggregate_loss(loss_mat, mask, loss_agg_mode, config, rollout_is_weights)
    return loss, _masked_metrics(reinforce, mask, parts)


# ---------------------------------------------------------------------------------------------------------------
# The eight names, each registered in verl's policy-loss registry where it is defined (verl's PolicyLossFn signature).


def _register(name: str):
    """verl's ``register_policy_loss``, refusing to replace a different function already registered under ``name``."""

    def decorator(fn):
        existing = POLICY_LOSS_REGISTRY.get(name)
        if existing is not None and getattr(existing, "rpg_loss_name", None) != name:
            raise RuntimeError(f"verl's policy-loss registry already holds a different {name!r}: {existing!r}")
        fn.rpg_loss_name = name
        return register_policy_loss(name)(fn)

    return decorator


@_register("rpg_fkl")
def compute_policy_loss_rpg_fkl(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
                                config=None, rollout_is_weights=None, ref_log_prob=None):
    """RPG-FKL, KL(pi_ref || pi_theta): L = dualclip(w, A) - beta * rho * log u  (ref = old: -w A - beta * delta)."""
    return rpg_policy_loss("rpg_fkl", old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
                           rollout_is_weights, ref_log_prob)


@_register("rpg_rkl")
def compute_policy_loss_rpg_rkl(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
                                config=None, rollout_is_weights=None, ref_log_prob=None):
    """RPG-RKL, KL(pi_theta || pi_ref): L = dualclip(w, A) + beta * w * log u  (ref = old: -w A + beta * w * delta)."""
    return rpg_policy_loss("rpg_rkl", old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
                           rollout_is_weights, ref_log_prob)


@_register("rpg_ufkl")
def compute_policy_loss_rpg_ufkl(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
                                 config=None, rollout_is_weights=None, ref_log_prob=None):
    """RPG-UFKL, UKL(pi_ref || pi_theta): L = dualclip(w, A) + beta * (w - rho * log u - rho)."""
    return rpg_policy_loss("rpg_ufkl", old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
                           rollout_is_weights, ref_log_prob)


@_register("rpg_urkl")
def compute_policy_loss_rpg_urkl(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
                                 config=None, rollout_is_weights=None, ref_log_prob=None):
    """RPG-URKL, UKL(pi_theta || pi_ref): L = dualclip(w, A) + beta * (rho + w * log u - w)."""
    return rpg_policy_loss("rpg_urkl", old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
                           rollout_is_weights, ref_log_prob)


@_register("rpg_reinforce_fkl")
def compute_policy_loss_rpg_reinforce_fkl(old_log_prob, log_prob, advantages, response_mask,
                                          loss_agg_mode="token-mean", config=None, rollout_is_weights=None,
                                          ref_log_prob=None):
    """RPG-REINFORCE-FKL: L = -SG(w A + C) * lp with C = beta * rho."""
    return rpg_policy_loss("rpg_reinforce_fkl", old_log_prob, log_prob, advantages, response_mask, loss_agg_mode,
                           config, rollout_is_weights, ref_log_prob)


@_register("rpg_reinforce_rkl")
def compute_policy_loss_rpg_reinforce_rkl(old_log_prob, log_prob, advantages, response_mask,
                                          loss_agg_mode="token-mean", config=None, rollout_is_weights=None,
                                          ref_log_prob=None):
    """RPG-REINFORCE-RKL: L = -SG(w A + C) * lp with C = -beta * w * (log u + 1)."""
    return rpg_policy_loss("rpg_reinforce_rkl", old_log_prob, log_prob, advantages, response_mask, loss_agg_mode,
                           config, rollout_is_weights, ref_log_prob)


@_register("rpg_reinforce_ufkl")
def compute_policy_loss_rpg_reinforce_ufkl(old_log_prob, log_prob, advantages, response_mask,
                                           loss_agg_mode="token-mean", config=None, rollout_is_weights=None,
                                           ref_log_prob=None):
    """RPG-REINFORCE-UFKL: L = -SG(w A + C) * lp with C = beta * (rho - w)."""
    return rpg_policy_loss("rpg_reinforce_ufkl", old_log_prob, log_prob, advantages, response_mask, loss_agg_mode,
                           config, rollout_is_weights, ref_log_prob)


@_register("rpg_reinforce_urkl")
def compute_policy_loss_rpg_reinforce_urkl(old_log_prob, log_prob, advantages, response_mask,
                                           loss_agg_mode="token-mean", config=None, rollout_is_weights=None,
                                           ref_log_prob=None):
    """RPG-REINFORCE-URKL: L = -SG(w A + C) * lp with C = -beta * w * log u."""
    return rpg_policy_loss("rpg_reinforce_urkl", old_log_prob, log_prob, advantages, response_mask, loss_agg_mode,
                           config, rollout_is_weights, ref_log_prob)


#: name -> registered function, the objects verl's registry holds.
LOSS_FNS = {name: POLICY_LOSS_REGISTRY[name] for name in RPG_LOSS_NAMES}


def register() -> None:
    """(Re-)register the eight losses in verl's policy-loss registry (idempotent; importing this module did it)."""
    for name, fn in LOSS_FNS.items():
        _register(name)(fn)
