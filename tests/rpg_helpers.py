"""Shared helpers of the loss tests: configs as verl hands them to a policy loss, and call shortcuts."""

from omegaconf import OmegaConf
from verl.trainer.ppo.core_algos import get_policy_loss_fn

import rpg_ext.plugin  # noqa: F401  (registers the losses even if the entry point were missing)


def loss_config(beta=1e-4, clip="dual", eps_low=0.2, eps_high=0.28, clip_c=10.0, clip_ratio=0.2, **extra):
    """A plain DictConfig with only the keys the RPG contract names (what tests and tools may pass)."""
    cfg = dict(
        clip_ratio=clip_ratio,
        clip_ratio_low=eps_low,
        clip_ratio_high=eps_high,
        clip_ratio_c=clip_c,
        policy_loss=dict(rpg=dict(beta=beta, clip=clip)),
        global_batch_info={},
        use_kl_loss=False,
    )
    cfg.update(extra)
    return OmegaConf.create(cfg)


def call_loss(name, log_prob, old_log_prob, advantages, mask, config, agg="token-mean", **kw):
    return get_policy_loss_fn(name)(
        old_log_prob=old_log_prob,
        log_prob=log_prob,
        advantages=advantages,
        response_mask=mask,
        loss_agg_mode=agg,
        config=config,
        **kw,
    )
