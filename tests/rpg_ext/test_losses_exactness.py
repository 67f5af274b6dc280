"""Exactness by enumeration: the pi_old-expected surrogate gradient of every RPG loss equals -grad J.

A small categorical policy over V tokens; the batch holds every token exactly as often as pi_old says
(integer counts), so a token-mean loss over the batch *is* the pi_old expectation. The reference side is
the closed-form objective J(theta) = E_theta[A] - beta * D(pi_ref, pi_theta), D computed exactly from the
two distributions, differentiated by autograd. Nothing of rpg_ext is used on the reference side.
"""

import math

import pytest
import torch

from rpg_ext import RPG_LOSS_NAMES, RPG_LOSSES, RPG_REINFORCE_LOSSES
from tests.rpg_helpers import call_loss, loss_config

F64 = torch.float64

COUNTS = torch.tensor([1, 2, 3, 4, 6])  # pi_old = COUNTS / 16, exactly representable
N = int(COUNTS.sum())
TOKENS = torch.repeat_interleave(torch.arange(len(COUNTS)), COUNTS)  # the batch: every token as often as pi_old says
LOG_PI_OLD = torch.log(COUNTS.to(F64) / N)


def exact_divergence(div, p_theta, p_ref):
    """D between measures p_ref and p_theta (p_theta may be unnormalized), from the definitions."""
    if div == "fkl":  # KL(ref || theta)
        return (p_ref * (p_ref.log() - p_theta.log())).sum()
    if div == "rkl":  # KL(theta || ref)
        return (p_theta * (p_theta.log() - p_ref.log())).sum()
    if div == "ufkl":  # unnormalized KL(ref || theta) = sum ref log(ref/theta) - ref + theta
        return (p_ref * (p_ref.log() - p_theta.log()) - p_ref + p_theta).sum()
    if div == "urkl":  # unnormalized KL(theta || ref)
        return (p_theta * (p_theta.log() - p_ref.log()) - p_theta + p_ref).sum()
    raise AssertionError(div)


def policy(theta, normalized):
    # normalized: a softmax policy; unnormalized: a positive measure (separates the normalized and
    # unnormalized divergences, whose gradients coincide for normalized policies)
    return torch.log_softmax(theta, -1) if normalized else theta


def rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp(min=1e-300)).item()


def check_exact(name, theta0, adv, beta, clip, normalized, log_pi_ref=None, **clip_ratios):
    div = name.rsplit("_", 1)[1]
    cfg = loss_config(beta=beta, clip=clip, **clip_ratios)

    # surrogate through verl's registry
    theta = theta0.clone().requires_grad_(True)
    lp_all = policy(theta, normalized)
    lp = lp_all[TOKENS].unsqueeze(-1)
    olp = LOG_PI_OLD[TOKENS].unsqueeze(-1)
    A = adv[TOKENS].unsqueeze(-1)
    mask = torch.ones_like(lp, dtype=torch.bool)
    kw = {} if log_pi_ref is None else {"ref_log_prob": log_pi_ref[TOKENS].unsqueeze(-1)}
    loss, metrics = call_loss(name, lp, olp, A, mask, cfg, **kw)
    (g_surrogate,) = torch.autograd.grad(loss, theta)

    # closed-form objective
    theta_ref = theta0.clone().requires_grad_(True)
    p_theta = policy(theta_ref, normalized).exp()
    p_ref = (LOG_PI_OLD if log_pi_ref is None else log_pi_ref).exp()
    D = exact_divergence(div, p_theta, p_ref)
    J = (p_theta * adv).sum() - beta * D
    (g_J,) = torch.autograd.grad(J, theta_ref)

    assert rel_err(g_surrogate, -g_J) < 1e-6, (name, g_surrogate, -g_J)
    assert math.isclose(metrics["actor/rpg/kl"], D.item(), rel_tol=1e-6, abs_tol=1e-12), (metrics, D.item())
    return metrics


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.mark.parametrize("normalized", [True, False], ids=["softmax", "measure"])
@pytest.mark.parametrize("name", RPG_LOSS_NAMES)
def test_unclipped_off_policy_gradient_is_exact(name, normalized, gen):
    theta0 = LOG_PI_OLD + 0.6 * torch.randn(len(COUNTS), generator=gen, dtype=F64)  # far from pi_old: w in ~[0.3, 3]
    adv = torch.randn(len(COUNTS), generator=gen, dtype=F64)
    check_exact(name, theta0, adv, beta=0.7, clip="none", normalized=normalized)


@pytest.mark.parametrize("name", RPG_LOSS_NAMES)
def test_kl_part_alone_is_exact(name, gen):
    # A = 0: the whole gradient is beta * grad D, nothing for the reward part to hide an error in
    theta0 = LOG_PI_OLD + 0.5 * torch.randn(len(COUNTS), generator=gen, dtype=F64)
    check_exact(name, theta0, torch.zeros(len(COUNTS), dtype=F64), beta=1.3, clip="none", normalized=False)


@pytest.mark.parametrize("normalized", [True, False], ids=["softmax", "measure"])
@pytest.mark.parametrize("name", RPG_LOSS_NAMES)
def test_dual_clip_inside_trust_region_is_exact(name, normalized, gen):
    theta0 = LOG_PI_OLD + 0.04 * torch.randn(len(COUNTS), generator=gen, dtype=F64)
    w = (policy(theta0, normalized) - LOG_PI_OLD).exp()
    assert ((w > 0.8) & (w < 1.28)).all(), "test precondition: every token inside the trust region"
    adv = torch.randn(len(COUNTS), generator=gen, dtype=F64)
    metrics = check_exact(name, theta0, adv, beta=0.7, clip="dual", normalized=normalized)
    assert metrics["actor/rpg/clipfrac_high"] == metrics["actor/rpg/clipfrac_low"] == 0.0
    assert metrics["actor/rpg/clipfrac_dual"] == 0.0
    if name in RPG_REINFORCE_LOSSES:
        assert metrics["actor/rpg/kept_frac"] == 1.0


@pytest.mark.parametrize("normalized", [True, False], ids=["softmax", "measure"])
@pytest.mark.parametrize("name", RPG_LOSS_NAMES)
def test_general_reference_gradient_is_exact(name, normalized, gen):
    # pi_ref != pi_old (spec's general columns: rho = pi_ref / pi_old, log u = log pi_theta / pi_ref)
    theta0 = LOG_PI_OLD + 0.5 * torch.randn(len(COUNTS), generator=gen, dtype=F64)
    log_pi_ref = torch.log_softmax(LOG_PI_OLD + 0.5 * torch.randn(len(COUNTS), generator=gen, dtype=F64), -1)
    adv = torch.randn(len(COUNTS), generator=gen, dtype=F64)
    check_exact(name, theta0, adv, beta=0.7, clip="none", normalized=normalized, log_pi_ref=log_pi_ref)


@pytest.mark.parametrize("name", RPG_LOSS_NAMES)
def test_reference_equal_to_old_matches_default(name, gen):
    # passing ref_log_prob = old_log_prob is the same loss as the iterative-reference default
    lp = (LOG_PI_OLD + 0.3 * torch.randn(len(COUNTS), generator=gen, dtype=F64))[TOKENS].unsqueeze(-1).requires_grad_(True)
    olp = LOG_PI_OLD[TOKENS].unsqueeze(-1)
    A = torch.randn(len(COUNTS), generator=gen, dtype=F64)[TOKENS].unsqueeze(-1)
    mask = torch.ones_like(lp, dtype=torch.bool)
    cfg = loss_config(beta=0.5)
    l1, m1 = call_loss(name, lp, olp, A, mask, cfg)
    l2, m2 = call_loss(name, lp, olp, A, mask, cfg, ref_log_prob=olp.clone())
    (g1,) = torch.autograd.grad(l1, lp)
    (g2,) = torch.autograd.grad(l2, lp)
    torch.testing.assert_close(l1, l2, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-15)
    assert m1 == pytest.approx(m2, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("name", ["rpg_rkl", "rpg_urkl"])
@pytest.mark.parametrize("with_ref", [False, True], ids=["ref=old", "ref!=old"])
def test_algorithm_1_as_printed_is_exact_inside_its_clip(name, with_ref, gen):
    # clip=alg1: -w * A_hat with A_hat = A + C/w differentiable; its extra per-token beta * w term has pi_old-mean
    # beta * grad sum(pi_theta) = 0 for a token distribution (not for an unnormalized measure), so the expected
    # gradient is still -grad J (clip range wide enough to hold every token)
    theta0 = LOG_PI_OLD + 0.6 * torch.randn(len(COUNTS), generator=gen, dtype=F64)
    adv = torch.randn(len(COUNTS), generator=gen, dtype=F64)
    log_pi_ref = torch.log_softmax(LOG_PI_OLD + 0.5 * torch.randn(len(COUNTS), generator=gen, dtype=F64), -1) if with_ref else None
    metrics = check_exact(name, theta0, adv, beta=0.7, clip="alg1", normalized=True, log_pi_ref=log_pi_ref,
                          eps_low=0.99, eps_high=100.0, clip_c=1e6)
    assert metrics["actor/rpg/clipfrac_high"] == metrics["actor/rpg/clipfrac_low"] == metrics["actor/rpg/clipfrac_dual"] == 0


def test_algorithm_1_as_printed_drops_a_forward_kl(gen):
    # why clip=alg1 is refused for rpg_fkl / rpg_ufkl: with A_hat = A + C/w differentiable, the loss -w * A_hat
    # has the KL-free gradient of E_theta[A] (computed here by hand from the printed formula, not by rpg_ext)
    theta0 = LOG_PI_OLD + 0.6 * torch.randn(len(COUNTS), generator=gen, dtype=F64)
    adv = torch.randn(len(COUNTS), generator=gen, dtype=F64)
    beta = 0.7
    for div in ("fkl", "ufkl"):
        theta = theta0.clone().requires_grad_(True)
        lp = torch.log_softmax(theta, -1)[TOKENS]
        w = torch.exp(lp - LOG_PI_OLD[TOKENS])
        C = beta * torch.ones_like(w) if div == "fkl" else beta * (1 - w)  # spec section 2, ref = old
        a_hat = adv[TOKENS] + C / w
        (g,) = torch.autograd.grad((-w * a_hat).mean(), theta)
        t = theta0.clone().requires_grad_(True)
        p = torch.softmax(t, -1)
        (g_reward,) = torch.autograd.grad((p * adv).sum(), t)
        t2 = theta0.clone().requires_grad_(True)
        p2 = torch.softmax(t2, -1)
        (g_J,) = torch.autograd.grad((p2 * adv).sum() - beta * exact_divergence(div, p2, LOG_PI_OLD.exp()), t2)
        assert rel_err(g, -g_reward) < 1e-9
        assert rel_err(g, -g_J) > 0.05


def test_the_enumeration_detects_a_wrong_divergence(gen):
    # negative control: the fully differentiable fkl surrogate is not exact for the rkl objective
    theta0 = LOG_PI_OLD + 0.6 * torch.randn(len(COUNTS), generator=gen, dtype=F64)
    adv = torch.randn(len(COUNTS), generator=gen, dtype=F64)
    with pytest.raises(AssertionError):
        check_exact_with_objective_of("rpg_fkl", "rkl", theta0, adv)


def check_exact_with_objective_of(name, objective_div, theta0, adv):
    cfg = loss_config(beta=0.7, clip="none")
    theta = theta0.clone().requires_grad_(True)
    lp = theta[TOKENS].unsqueeze(-1)
    loss, _ = call_loss(
        name, lp, LOG_PI_OLD[TOKENS].unsqueeze(-1), adv[TOKENS].unsqueeze(-1), torch.ones_like(lp, dtype=torch.bool),
        cfg,
    )
    (g,) = torch.autograd.grad(loss, theta)
    t = theta0.clone().requires_grad_(True)
    J = (t.exp() * adv).sum() - 0.7 * exact_divergence(objective_div, t.exp(), LOG_PI_OLD.exp())
    (gJ,) = torch.autograd.grad(J, t)
    assert rel_err(g, -gJ) < 1e-6


def test_families_cover_the_spec():
    assert set(RPG_LOSSES) == {"rpg_fkl", "rpg_rkl", "rpg_ufkl", "rpg_urkl"}
    assert set(RPG_REINFORCE_LOSSES) == {f"rpg_reinforce_{d}" for d in ("fkl", "rkl", "ufkl", "urkl")}
