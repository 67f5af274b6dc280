"""The actor's loss of the recipe: verl's ``ppo_loss`` plus the reference log-probability, the KL regularizer and the
importance weight at the start of each step.

verl's registered policy losses receive ``old_log_prob`` and ``log_prob`` but not ``ref_log_prob``, although
``verl.workers.utils.losses.ppo_loss`` (the one loss path of the FSDP and Megatron engines) already selects
``ref_log_prob`` into its data. The engine workers expose ``set_loss_fn``; the recipe's trainer installs
:func:`rpg_actor_loss` there (``partial(rpg_actor_loss, config=actor_config, settings=...)``) when a reference model
is in use or a KL regularizer is asked for. It

1. makes the batch's ``ref_log_prob`` visible to the RPG policy losses for the duration of verl's own
   ``ppo_loss`` call (``rpg_ext.losses.reference_log_prob``, read by the losses when their argument is absent),
   so the losses apply the spec's general formulas (rho = pi_ref/pi_old, log u = log pi_theta/pi_ref);
2. adds ``beta * k`` of an RPG divergence on top of any policy loss (``algorithm.rpg.kl``), importance-weighted
   with the three log-probs (theta, old, ref), aggregated exactly like the policy loss.

Everything else (policy loss, entropy, aggregation, metrics) is verl's ``ppo_loss`` unchanged. :class:`ActorLoss` is
the object the trainer installs: :func:`rpg_actor_loss` plus, on the first micro-batch of each step (where pi_theta
still equals the policy that trained up to this step), the importance weight w = pi_theta / pi_old: exactly 1 when
pi_old was recomputed by the actor, the rollout-vs-trainer mismatch when pi_old is the rollout's own log-probs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from verl.utils.metric import AggregationType, Metric
from verl.workers.utils.losses import ppo_loss
from verl.workers.utils.padding import no_padding_2_padding

from rpg_ext.config import refuse_double_kl
from rpg_ext.divergences import LOG_RATIO_CLAMP, rpg_kl_term
from rpg_ext.losses import aggregate_loss, reference_log_prob


@dataclass(frozen=True)
class ActorLossSettings:
    """What :func:`rpg_actor_loss` adds to verl's ``ppo_loss``.

    Args:
        use_reference_model: the batch carries ``ref_log_prob`` of a reference model (``algorithm.rpg.reference``
            fixed or periodic); the RPG losses and the regularizer use it. False: the reference is the sampling policy.
        kl_divergence: ``fkl`` / ``rkl`` / ``ufkl`` / ``urkl`` to add ``kl_beta * k`` on top of the policy loss, or None.
        kl_beta: the regularizer's strength.
    """

    use_reference_model: bool = False
    kl_divergence: Optional[str] = None
    kl_beta: float = 0.0


def _padded(data, *keys):
    padded = data.select(*keys).to_padded_tensor()
    return [padded[k] for k in keys]


def rpg_actor_loss(config, model_output, data, dp_group=None, *, settings: ActorLossSettings):
    """verl's ``ppo_loss`` with the reference log-probs passed on and an optional RPG KL regularizer."""
    if settings.kl_divergence:
        refuse_double_kl(config, f"algorithm.rpg.kl.divergence={settings.kl_divergence}")
    ref = None
    if settings.use_reference_model:
        if "ref_log_prob" not in data.keys():
            raise RuntimeError(
                "the actor loss expects ref_log_prob from the reference model (algorithm.rpg.reference is fixed or "
                "periodic), but the batch has none: the trainer did not compute reference log-probs"
            )
        (ref,) = _padded(data, "ref_log_prob")

    with reference_log_prob(ref):
        loss, metrics = ppo_loss(config, model_output, data, dp_group)

    if settings.kl_divergence:
        # beta * k with the three log-probs: theta (differentiable), old (sampling), ref (None: ref = old)
        log_prob = no_padding_2_padding(model_output["log_probs"], data)
        response_mask, old_log_prob = _padded(data, "response_mask", "old_log_probs")
        (weights,) = _padded(data, "rollout_is_weights") if "rollout_is_weights" in data.keys() else (None,)
        mask = response_mask.bool()
        k = rpg_kl_term(settings.kl_divergence, log_prob, ref, old_log_prob)
        # aggregated as the policy loss, with verl's rollout-correction weights when enabled (one rule, one place)
        kl_loss = aggregate_loss(k, mask, config.loss_agg_mode, config, weights)
        loss = loss + settings.kl_beta * kl_loss
        with torch.no_grad():
            kl_mean = torch.where(mask, k, 0.0).sum() / mask.sum().clamp(min=1)
        metrics["actor/rpg/kl"] = Metric(value=kl_mean, aggregation=AggregationType.MEAN)
        metrics["actor/rpg/kl_coef"] = settings.kl_beta

    if ref is not None:
        (response_mask, old_log_prob) = _padded(data, "response_mask", "old_log_probs")
        mask = response_mask.bool()
        with torch.no_grad():
            diff = torch.where(mask, (ref - old_log_prob).abs(), 0.0).sum() / mask.sum().clamp(min=1)
        # how far the reference is from the sampling policy (0 right after a reference refresh)
        metrics["actor/rpg/ref_old_logprob_absdiff"] = Metric(value=diff, aggregation=AggregationType.MEAN)
    return loss, metrics


def step_start_metrics(model_output, data) -> dict:
    """w = pi_theta / pi_old over the response tokens of the step's first micro-batch: ``actor/rpg/step_start_iw_*``."""
    log_prob = no_padding_2_padding(model_output["log_probs"], data)
    response_mask, old_log_prob = _padded(data, "response_mask", "old_log_probs")
    mask = response_mask.bool()
    with torch.no_grad():
        log_w = torch.clamp(log_prob.detach() - old_log_prob, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        w = torch.exp(log_w)[mask]
        if w.numel() == 0:
            return {}
        return {
            "actor/rpg/step_start_iw_mean": Metric(value=w.mean(), aggregation=AggregationType.MEAN),
            "actor/rpg/step_start_iw_max": Metric(value=w.max(), aggregation=AggregationType.MAX),
            "actor/rpg/step_start_iw_min": Metric(value=w.min(), aggregation=AggregationType.MIN),
        }


class ActorLoss:
    """The loss function the recipe's trainer installs in the actor workers (verl's ``set_loss_fn``): called as
    ``loss_fn(model_output=..., data=..., dp_group=...)``; :meth:`new_step` (called by the trainer through the worker
    before each step's update) makes the next call also log :func:`step_start_metrics`."""

    def __init__(self, config, settings: ActorLossSettings):
        self.config, self.settings, self._step_start = config, settings, False

    def new_step(self) -> None:
        self._step_start = True

    def __call__(self, model_output, data, dp_group=None):
        loss, metrics = rpg_actor_loss(self.config, model_output, data, dp_group, settings=self.settings)
        if self._step_start:
            self._step_start = False
            metrics.update(step_start_metrics(model_output, data))
        return loss, metrics
