"""The RPG losses inside verl: agreement with verl's `vanilla`, verl's real `ppo_loss` path, aggregation scaling."""

import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.utils.losses import ppo_loss

from rpg_ext import RPG_LOSS_NAMES, RPG_LOSSES
from rpg_ext.config import RPGPolicyLossConfig
from tests.rpg_helpers import call_loss, loss_config

AGG_MODES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "token-sum", "seq-mean-token-sum-norm"]


def random_batch(gen, bsz=6, length=9, spread=0.5, dtype=torch.float64):
    lp = -torch.rand(bsz, length, generator=gen, dtype=dtype) * 3
    olp = lp + spread * torch.randn(bsz, length, generator=gen, dtype=dtype)  # w spans every clip branch
    adv = torch.randn(bsz, 1, generator=gen, dtype=dtype).expand(bsz, length).clone()
    lengths = torch.randint(1, length + 1, (bsz,), generator=gen)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return lp, olp, adv, mask


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("name", RPG_LOSSES)
def test_beta_zero_dual_clip_equals_verl_vanilla(name, agg):
    gen = torch.Generator().manual_seed(7)
    lp0, olp, adv, mask = random_batch(gen)
    cfg = loss_config(beta=0.0, clip="dual", eps_low=0.2, eps_high=0.28, clip_c=3.0)
    cfg.global_batch_info = {"dp_size": 2, "batch_num_tokens": 40, "global_batch_size": 11}
    lp_a, lp_b = lp0.clone().requires_grad_(True), lp0.clone().requires_grad_(True)
    ours, our_metrics = call_loss(name, lp_a, olp, adv, mask, cfg, agg=agg)
    theirs, their_metrics = call_loss("vanilla", lp_b, olp, adv, mask, cfg, agg=agg)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(lp_a.grad, lp_b.grad, rtol=1e-12, atol=1e-14)
    assert lp_a.grad.abs().sum() > 0
    for key in ("actor/pg_clipfrac", "actor/pg_clipfrac_lower", "actor/ppo_kl"):
        # verl divides by (count + 1e-8)
        assert our_metrics[key] == pytest.approx(their_metrics[key], rel=1e-6, abs=1e-12), key
    assert their_metrics["actor/pg_clipfrac"] > 0, "test precondition: some tokens are clipped"


def test_rollout_correction_weights_scale_the_whole_token_loss():
    gen = torch.Generator().manual_seed(3)
    lp0, olp, adv, mask = random_batch(gen)
    is_w = torch.rand(lp0.shape, generator=gen, dtype=lp0.dtype) + 0.5
    cfg = loss_config(beta=0.5, clip="none")
    lp = lp0.clone().requires_grad_(True)
    loss, _ = call_loss("rpg_rkl", lp, olp, adv, mask, cfg, agg="token-sum", rollout_is_weights=is_w)
    (g,) = torch.autograd.grad(loss, lp)
    lp2 = lp0.clone().requires_grad_(True)
    plain, _ = call_loss("rpg_rkl", lp2, olp, adv, mask, cfg, agg="token-sum")
    (g_plain_tok,) = torch.autograd.grad(plain, lp2)  # per-token derivatives (token-sum)
    torch.testing.assert_close(g, g_plain_tok * is_w * mask, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- verl's ppo_loss (the engines' loss path)


def actor_config(loss_mode, agg, beta=0.3, clip="dual"):
    """An actor config built the way verl's workers build it: hydra instantiation of `_target_`s."""
    cfg = OmegaConf.create(
        {
            "_target_": "verl.workers.config.FSDPActorConfig",
            "strategy": "fsdp2",
            "rollout_n": 2,
            "ppo_mini_batch_size": 4,
            "ppo_micro_batch_size_per_gpu": 2,
            "clip_ratio": 0.2,
            "clip_ratio_low": 0.2,
            "clip_ratio_high": 0.28,
            "clip_ratio_c": 10.0,
            "loss_agg_mode": agg,
            "policy_loss": {
                "_target_": "rpg_ext.config.RPGPolicyLossConfig",
                "loss_mode": loss_mode,
                "rpg": {"_target_": "rpg_ext.config.RPGConfig", "beta": beta, "clip": clip},
            },
        }
    )
    return omega_conf_to_dataclass(cfg)


def ppo_loss_batch(lp_resp, olp, adv, mask, prompt_lens, global_tokens, global_seqs):
    """TensorDict + nested model output in the no-padding layout verl's engines hand to ppo_loss."""
    bsz, resp_len = olp.shape
    resp_lens = mask.sum(-1)
    flat, prompts, responses = [], [], []
    for i in range(bsz):
        p, r = int(prompt_lens[i]), int(resp_lens[i])
        seq = torch.zeros(p + r, dtype=lp_resp.dtype)
        # model output is left-shifted by one: response token j's log-prob sits at position p - 1 + j
        seq = torch.cat([seq[: p - 1], lp_resp[i, :r], seq[p - 1 + r :]])
        flat.append(seq)
        prompts.append(torch.ones(p, dtype=torch.long))
        responses.append(torch.ones(r, dtype=torch.long))
    log_probs = torch.nested.as_nested_tensor(flat, layout=torch.jagged)
    td = TensorDict(
        {
            "prompts": torch.nested.as_nested_tensor(prompts, layout=torch.jagged),
            "responses": torch.nested.as_nested_tensor(responses, layout=torch.jagged),
            "response_mask": mask.float(),
            "old_log_probs": olp,
            "advantages": adv,
        },
        batch_size=[bsz],
    )
    tu.assign_non_tensor(td, dp_size=1, batch_num_tokens=global_tokens, global_batch_size=global_seqs)
    tu.assign_non_tensor(td, max_response_len=resp_len)
    return log_probs, td


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
@pytest.mark.parametrize("name", RPG_LOSS_NAMES)
def test_ppo_loss_path_matches_direct_call_and_micro_batching(name, agg):
    gen = torch.Generator().manual_seed(11)
    lp0, olp, adv, mask = random_batch(gen, bsz=4, length=7, spread=0.3, dtype=torch.float32)
    prompt_lens = torch.randint(1, 5, (4,), generator=gen)
    tokens, seqs = int(mask.sum()), int(mask.shape[0])
    config = actor_config(name, agg)
    assert isinstance(config.policy_loss, RPGPolicyLossConfig) and config.policy_loss.rpg.beta == 0.3

    # the whole mini-batch through verl's ppo_loss
    lp_full = lp0.clone().requires_grad_(True)
    log_probs, td = ppo_loss_batch(lp_full, olp, adv, mask, prompt_lens, tokens, seqs)
    loss_full, metrics = ppo_loss(config, {"log_probs": log_probs}, td)
    loss_full.backward()
    assert "actor/rpg/kl" in metrics and "actor/pg_loss" in metrics

    # the same mini-batch in two micro-batches (gradient accumulation) gives the same loss and gradient
    lp_micro = lp0.clone().requires_grad_(True)
    total = 0.0
    for rows in (slice(0, 1), slice(1, 4)):
        lps, tdi = ppo_loss_batch(lp_micro[rows], olp[rows], adv[rows], mask[rows], prompt_lens[rows], tokens, seqs)
        loss_i, _ = ppo_loss(config, {"log_probs": lps}, tdi)
        loss_i.backward()
        total = total + loss_i.detach()
    torch.testing.assert_close(total, loss_full.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(lp_micro.grad, lp_full.grad, rtol=1e-5, atol=1e-7)

    # a direct call of the registered function with the same global batch info
    lp_direct = lp0.clone().requires_grad_(True)
    cfg = loss_config(beta=0.3, clip="dual", eps_low=0.2, eps_high=0.28, clip_c=10.0)
    cfg.global_batch_info = {"dp_size": 1, "batch_num_tokens": tokens, "global_batch_size": seqs}
    loss_direct, _ = get_policy_loss_fn(name)(olp, lp_direct, adv, mask.bool(), agg, cfg)
    loss_direct.backward()
    torch.testing.assert_close(loss_direct.detach(), loss_full.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(lp_direct.grad, lp_full.grad, rtol=1e-5, atol=1e-7)
    assert lp_full.grad.abs().sum() > 0 and (lp_full.grad[~mask] == 0).all()


def test_data_parallel_scaling_like_vanilla():
    # dp_size = 2 ranks, each holding half of the batch: verl scales each rank's loss by dp_size and averages the
    # ranks' gradients; the RPG loss must reproduce vanilla's scaling exactly (beta = 0 makes them equal).
    gen = torch.Generator().manual_seed(5)
    lp0, olp, adv, mask = random_batch(gen, bsz=4)
    info = {"dp_size": 2, "batch_num_tokens": int(mask.sum()), "global_batch_size": 4}
    for agg in AGG_MODES:
        grads = {}
        for name in ("vanilla", "rpg_urkl"):
            cfg = loss_config(beta=0.0, clip="dual")
            cfg.global_batch_info = info
            lp = lp0.clone().requires_grad_(True)
            rank_losses = [call_loss(name, lp[r], olp[r], adv[r], mask[r], cfg, agg=agg)[0] for r in (slice(0, 2), slice(2, 4))]
            (sum(rank_losses) / 2).backward()  # all-reduce mean of the two ranks' gradients
            grads[name] = lp.grad
        torch.testing.assert_close(grads["rpg_urkl"], grads["vanilla"], rtol=1e-12, atol=1e-14)
