"""The RPG config contract (typed, validated, on verl's CLI) and numerics for extreme finite inputs."""

import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from verl.utils.config import omega_conf_to_dataclass

from rpg_ext import RPG_LOSS_NAMES, RPG_LOSSES, RPG_REINFORCE_LOSSES
from rpg_ext.config import ALG1_LOSSES, RPGConfig, RPGPolicyLossConfig
from tests.rpg_helpers import call_loss, loss_config


def tiny_batch(dtype=torch.float32):
    lp = torch.tensor([[-0.5, -1.0, -2.0]], dtype=dtype, requires_grad=True)
    olp = torch.tensor([[-0.6, -1.1, -1.5]], dtype=dtype)
    adv = torch.tensor([[1.0, -1.0, 0.5]], dtype=dtype)
    return lp, olp, adv, torch.ones(1, 3, dtype=torch.bool)


# ------------------------------------------------------------------------------------------- bad configs

BAD = [
    (dict(beta=-1e-3), "policy_loss.rpg.beta"),
    (dict(beta=float("nan")), "policy_loss.rpg.beta"),
    (dict(beta="0.1"), "policy_loss.rpg.beta"),
    (dict(clip="hard"), "policy_loss.rpg.clip"),
    (dict(eps_low=0.0), "clip_ratio_low"),
    (dict(eps_low=1.0), "clip_ratio_low"),
    (dict(eps_low=-0.2), "clip_ratio_low"),
    (dict(eps_high=0.0), "clip_ratio_high"),
    (dict(eps_high=-0.1), "clip_ratio_high"),
    (dict(clip_c=1.0), "clip_ratio_c"),
    (dict(clip_c=0.5), "clip_ratio_c"),
]


@pytest.mark.parametrize("name", RPG_LOSS_NAMES)
@pytest.mark.parametrize("bad,key", BAD, ids=[f"{k}:{list(b.values())[0]}" for b, k in BAD])
def test_invalid_values_raise_naming_the_key_and_value(name, bad, key):
    lp, olp, adv, mask = tiny_batch()
    with pytest.raises(ValueError) as err:
        call_loss(name, lp, olp, adv, mask, loss_config(**bad))
    msg = str(err.value)
    assert key in msg and repr(list(bad.values())[0])[:4] in msg, msg


def test_null_clip_ratios_fall_back_to_clip_ratio_and_are_validated():
    lp, olp, adv, mask = tiny_batch()
    cfg = loss_config(eps_low=None, eps_high=None, clip_ratio=1.5)
    with pytest.raises(ValueError, match="clip_ratio_low.*1.5"):
        call_loss("rpg_fkl", lp, olp, adv, mask, cfg)
    # a valid fallback: both bounds become clip_ratio -- checked on a token above 1 + clip_ratio
    lp = torch.tensor([[0.0]], requires_grad=True)
    olp = torch.tensor([[-math.log(1.25)]])  # w = 1.25: inside (0.2, 0.28), outside (0.2, 0.2)
    adv = torch.tensor([[1.0]])
    one = torch.ones(1, 1, dtype=torch.bool)
    _, m_wide = call_loss("rpg_fkl", lp, olp, adv, one, loss_config(beta=0.0, eps_low=0.2, eps_high=0.28))
    _, m_fallback = call_loss("rpg_fkl", lp, olp, adv, one, loss_config(beta=0.0, eps_low=None, eps_high=None))
    assert m_wide["actor/rpg/clipfrac_high"] == 0.0 and m_fallback["actor/rpg/clipfrac_high"] == 1.0


@pytest.mark.parametrize("name", RPG_LOSSES)
def test_truncate_is_rejected_for_fully_differentiable_losses(name):
    lp, olp, adv, mask = tiny_batch()
    with pytest.raises(ValueError, match=r"policy_loss\.rpg\.clip='truncate'.*rpg_reinforce_"):
        call_loss(name, lp, olp, adv, mask, loss_config(clip="truncate"))


@pytest.mark.parametrize("name", [n for n in RPG_LOSS_NAMES if n not in ("rpg_rkl", "rpg_urkl")])
def test_alg1_is_refused_where_it_would_drop_the_kl(name):
    # Algorithm 1 as printed on a forward divergence trains with no KL gradient (test_loss_exactness shows it);
    # on the REINFORCE family it is not defined
    lp, olp, adv, mask = tiny_batch()
    reason = "Algorithm 2" if name.startswith("rpg_reinforce_") else "no KL at all"
    with pytest.raises(ValueError, match=rf"policy_loss\.rpg\.clip='alg1'.*{name}.*{reason}"):
        call_loss(name, lp, olp, adv, mask, loss_config(clip="alg1"))
    with pytest.raises(ValueError, match="alg1"):
        RPGPolicyLossConfig(loss_mode=name, rpg=RPGConfig(clip="alg1"))


@pytest.mark.parametrize("name", RPG_LOSS_NAMES)
def test_use_kl_loss_would_count_the_kl_twice(name):
    lp, olp, adv, mask = tiny_batch()
    with pytest.raises(ValueError, match="use_kl_loss.*twice"):
        call_loss(name, lp, olp, adv, mask, loss_config(use_kl_loss=True))


def test_defaults_when_the_rpg_block_is_absent():
    # verl's own actor config without our block: beta = 1e-4 and dual clip (the paper's defaults)
    lp, olp, adv, mask = tiny_batch(torch.float64)
    base = loss_config()
    del base.policy_loss["rpg"]
    explicit = loss_config(beta=1e-4, clip="dual")
    for name in RPG_LOSS_NAMES:
        a, _ = call_loss(name, lp, olp, adv, mask, base)
        b, _ = call_loss(name, lp, olp, adv, mask, explicit)
        assert a.item() == b.item()


def test_config_is_required():
    lp, olp, adv, mask = tiny_batch()
    with pytest.raises(ValueError, match="config"):
        call_loss("rpg_fkl", lp, olp, adv, mask, None)


def test_dataclasses_validate_on_construction():
    assert RPGConfig().beta == 1e-4 and RPGConfig().clip == "dual"
    with pytest.raises(ValueError, match="policy_loss.rpg.beta"):
        RPGConfig(beta=-1.0)
    with pytest.raises(ValueError, match="policy_loss.rpg.clip"):
        RPGConfig(clip="soft")
    with pytest.raises(ValueError, match="truncate"):
        RPGPolicyLossConfig(loss_mode="rpg_urkl", rpg=RPGConfig(clip="truncate"))
    assert RPGPolicyLossConfig(loss_mode="rpg_reinforce_urkl", rpg=RPGConfig(clip="truncate")).rpg.clip == "truncate"
    with pytest.raises(ValueError, match="unknown keys"):
        RPGPolicyLossConfig(rpg={"beta": 0.1, "betta": 0.2})
    assert RPGPolicyLossConfig(rpg={"beta": 0.1}).rpg == RPGConfig(beta=0.1)


def test_selectable_on_verls_own_cli():
    """verl's ppo_trainer.yaml + CLI overrides -> the actor config verl's workers build (hydra `_target_`s)."""
    import verl

    config_dir = str(__import__("pathlib").Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(
            config_name="ppo_trainer",
            overrides=[
                "actor_rollout_ref.actor.policy_loss._target_=rpg_ext.config.RPGPolicyLossConfig",
                "actor_rollout_ref.actor.policy_loss.loss_mode=rpg_reinforce_urkl",
                "+actor_rollout_ref.actor.policy_loss.rpg.beta=0.002",
                "+actor_rollout_ref.actor.policy_loss.rpg.clip=truncate",
                "actor_rollout_ref.actor.clip_ratio_c=10.0",
                "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
            ],
        )
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert isinstance(actor.policy_loss, RPGPolicyLossConfig)
    assert actor.policy_loss.loss_mode == "rpg_reinforce_urkl"
    assert actor.policy_loss.rpg == RPGConfig(beta=0.002, clip="truncate")


# ------------------------------------------------------------------------------------------------ numerics


def extreme_batch(dtype):
    # log-ratios of +-80 (clamped to +-20 inside), advantages of +-1e4, a fully masked row, masked garbage
    lp = torch.tensor([[-0.1, -80.0, -1.0, -5.0], [-3.0, -0.01, -2.0, -1.0], [1e4, -1e4, 7.0, 0.0]], dtype=dtype)
    olp = torch.tensor([[-80.1, -0.1, -1.0, -85.0], [-3.0, -80.0, -2.0, -1.0], [-1e4, 1e4, 0.0, 0.0]], dtype=dtype)
    adv = torch.tensor([[1e4, -1e4, 0.0, -1e4], [-1e4, 1e4, 1e4, 1e-4], [1e4, -1e4, 1e4, 1e4]], dtype=dtype)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 1], [0, 0, 0, 0]], dtype=torch.bool)
    return lp, olp, adv, mask


def assert_finite(name, lp0, olp, adv, mask, cfg, agg="token-mean", **kw):
    lp = lp0.clone().requires_grad_(True)
    loss, metrics = call_loss(name, lp, olp, adv, mask, cfg, agg=agg, **kw)
    loss.backward()
    assert torch.isfinite(loss).all(), (name, loss)
    assert torch.isfinite(lp.grad).all(), (name, lp.grad)
    assert (lp.grad[~mask] == 0).all()
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    return loss, metrics


NAME_CLIP = [(n, c) for n in RPG_LOSS_NAMES for c in ("dual", "none", "truncate") if c != "truncate" or n in RPG_REINFORCE_LOSSES]
NAME_CLIP += [(n, "alg1") for n in ALG1_LOSSES]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name,clip", NAME_CLIP)
def test_extreme_inputs_give_finite_loss_and_gradient(name, clip, dtype):
    lp, olp, adv, mask = extreme_batch(dtype)
    for agg in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"):
        assert_finite(name, lp, olp, adv, mask, loss_config(beta=1e-4, clip=clip), agg=agg)
        assert_finite(name, lp, olp, adv, mask, loss_config(beta=10.0, clip=clip), agg=agg, ref_log_prob=lp.detach() + 60)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", RPG_LOSS_NAMES)
def test_all_masked_micro_batch_is_a_finite_zero(name, dtype):
    lp, olp, adv, _ = extreme_batch(dtype)
    mask = torch.zeros_like(lp, dtype=torch.bool)
    for agg in ("token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum"):
        loss, metrics = assert_finite(name, lp, olp, adv, mask, loss_config(), agg=agg)
        assert loss.item() == 0.0
        assert all(v == 0.0 for v in metrics.values()), metrics


@pytest.mark.parametrize("name", RPG_LOSS_NAMES)
def test_masked_tokens_never_count(name):
    gen = torch.Generator().manual_seed(0)
    lp0 = -torch.rand(3, 5, generator=gen, dtype=torch.float64)
    olp = lp0 + 0.4 * torch.randn(3, 5, generator=gen, dtype=torch.float64)
    adv = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    mask = torch.rand(3, 5, generator=gen) > 0.4
    cfg = loss_config(beta=0.5)
    results = []
    for garbage in (0.0, 1.0):
        # change every masked entry (finite values) -- loss, gradient and metrics must not move
        g_lp = torch.where(mask, lp0, lp0 + 37.0 * garbage)
        g_olp = torch.where(mask, olp, olp - 55.0 * garbage)
        g_adv = torch.where(mask, adv, adv + 1e3 * garbage)
        lp = g_lp.clone().requires_grad_(True)
        loss, metrics = call_loss(name, lp, g_olp, g_adv, mask, cfg)
        loss.backward()
        results.append((loss.item(), lp.grad[mask], metrics))
    assert results[0][0] == results[1][0]
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=0)
    assert results[0][2] == results[1][2]


def test_metrics_against_independent_computation():
    lp = torch.tensor([[-1.0, -2.0, -0.5, -3.0]], dtype=torch.float64)
    w = torch.tensor([0.5, 1.1, 2.0, 7.0], dtype=torch.float64)
    olp = lp - w.log()
    adv = torch.tensor([[-1.0, 1.0, 1.0, -1.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)  # w = 7 is masked: never counts
    _, m = call_loss("rpg_rkl", lp, olp, adv, mask, loss_config(beta=0.1, eps_low=0.2, eps_high=0.28, clip_c=3.0))
    wv = [0.5, 1.1, 2.0]
    assert m["actor/rpg/iw_mean"] == pytest.approx(sum(wv) / 3)
    assert m["actor/rpg/iw_max"] == pytest.approx(2.0)
    assert m["actor/rpg/iw_ess"] == pytest.approx(sum(wv) ** 2 / (3 * sum(x * x for x in wv)))
    assert m["actor/rpg/kl"] == pytest.approx(sum(x * math.log(x) for x in wv) / 3)  # rkl, ref = old: w log w
    assert m["actor/rpg/clipfrac_low"] == pytest.approx(1 / 3)  # w = 0.5, A < 0
    assert m["actor/rpg/clipfrac_high"] == pytest.approx(1 / 3)  # w = 2.0, A > 0
    assert m["actor/rpg/clipfrac_dual"] == 0.0  # the w = 7, A < 0 token is masked
    assert m["actor/ppo_kl"] == pytest.approx(-sum(math.log(x) for x in wv) / 3)


finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(RPG_LOSS_NAMES),
    clip=st.sampled_from(["dual", "none", "truncate", "alg1"]),
    beta=st.floats(min_value=0.0, max_value=100.0),
    values=st.lists(st.tuples(finite, finite, finite, finite, st.booleans()), min_size=1, max_size=8),
    bf16=st.booleans(),
    with_ref=st.booleans(),
)
def test_property_finite_for_any_finite_input(name, clip, beta, values, bf16, with_ref):
    if (clip == "truncate" and name not in RPG_REINFORCE_LOSSES) or (clip == "alg1" and name not in ALG1_LOSSES):
        clip = "none"
    dtype = torch.bfloat16 if bf16 else torch.float32
    lp, olp, adv, rlp, mask = (torch.tensor([list(col)], dtype=dtype) for col in zip(*values, strict=True))
    kw = {"ref_log_prob": rlp} if with_ref else {}
    assert_finite(name, lp, olp, adv, mask.bool(), loss_config(beta=beta, clip=clip), **kw)
