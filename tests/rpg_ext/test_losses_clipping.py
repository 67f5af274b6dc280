"""Clip semantics token by token against an independent scalar transcription of spec sections 1-2.

Tokens are placed in every branch: w below 1 - eps_low, inside the trust region, above 1 + eps_high, above c;
advantages of both signs; beta large enough that the REINFORCE family's effective advantage A' = A + C / w has
the opposite sign of A on some tokens. The reference computes each token's loss value and d loss / d lp with
Python scalars, literally following Algorithm 2 (branch on psi = A' * (-lp)) and the spec's "ref = old" columns.
"""

import itertools
import math

import pytest
import torch

from rpg_ext import DIVERGENCES
from tests.rpg_helpers import call_loss, loss_config

EPS_LOW, EPS_HIGH, C_DUAL = 0.2, 0.28, 3.0
W_GRID = [0.3, 0.7, 0.9, 1.0, 1.1, 1.5, 2.5, 4.0, 9.0]  # low | inside | high | above c (no boundary values)
A_GRID = [-2.0, -0.4, -0.05, 0.05, 0.4, 2.0]
BETAS = [0.0, 0.3, 2.0]


def spec_k(div, lp, olp):
    """Spec table, 'ref = old' column, as a torch scalar (for autograd in lp)."""
    d = lp - olp
    w = torch.exp(d)
    return {"fkl": -d, "rkl": w * d, "ufkl": w - d - 1, "urkl": 1 + w * d - w}[div]


def spec_C(div, w, beta):
    """Spec section 2 table, 'ref = old' column."""
    d = math.log(w)
    return {"fkl": beta, "rkl": -beta * w * (d + 1), "ufkl": beta * (1 - w), "urkl": -beta * w * d}[div]


def printed_a_hat(div, lp, olp, A, beta):
    """The paper's regularized advantage A_hat (Section 3.3, Algorithm 1 line 12), a function of lp."""
    d = lp - olp
    return {"rkl": A - beta * (d + 1), "urkl": A - beta * d}[div]


def reference_alg1(div, w, A, beta, lp_val):
    """(value, d/dlp, branch) of Algorithm 1 as printed: the dual clip of -w * A_hat, gradient through w and A_hat."""
    olp = lp_val - math.log(w)
    lp = torch.tensor(lp_val, dtype=torch.float64, requires_grad=True)
    wt = torch.exp(lp - olp)
    a_hat = printed_a_hat(div, lp, olp, A, beta)
    term1, term2 = -wt * a_hat, -torch.clamp(wt, 1 - EPS_LOW, 1 + EPS_HIGH) * a_hat
    l_clip = torch.maximum(term1, term2)
    value = l_clip if a_hat >= 0 else torch.minimum(l_clip, -C_DUAL * a_hat)
    (g,) = torch.autograd.grad(value, lp)
    if a_hat >= 0:
        branch = "high" if (a_hat > 0 and w > 1 + EPS_HIGH) else "inside"
    else:
        branch = "low" if w < 1 - EPS_LOW else ("dual" if w > C_DUAL else "inside")
    return value.item(), g.item(), branch


def reference_rpg(div, w, A, beta, clip, lp_val):
    """(value, d/dlp, branch) of rpg_<div>: dualclip(w, A) + beta * k, KL never clipped; or Algorithm 1."""
    if clip == "alg1":
        return reference_alg1(div, w, A, beta, lp_val)
    olp = lp_val - math.log(w)
    lp = torch.tensor(lp_val, dtype=torch.float64, requires_grad=True)
    k = spec_k(div, lp, olp)
    (dk,) = torch.autograd.grad(k, lp)
    branch = "inside"
    if clip == "none":
        pg, dpg = -A * w, -A * w
    elif A >= 0:
        pg = -A * min(w, 1 + EPS_HIGH)
        dpg = 0.0 if w > 1 + EPS_HIGH else -A * w
        branch = "high" if (A > 0 and w > 1 + EPS_HIGH) else branch
    else:
        pg = min(-A * max(w, 1 - EPS_LOW), -C_DUAL * A)
        dpg = -A * w if 1 - EPS_LOW < w < C_DUAL else 0.0
        branch = "low" if w < 1 - EPS_LOW else ("dual" if w > C_DUAL else branch)
    return pg + beta * k.item(), dpg + beta * dk.item(), branch


def reference_reinforce(div, w, A, beta, clip, lp_val):
    """(value, d/dlp, branch) of rpg_reinforce_<div>, Algorithm 2 / spec section 2 literally."""
    C = spec_C(div, w, beta)
    ell = -lp_val
    if clip == "none":
        return -(w * A + C) * lp_val, -(w * A + C), "inside"
    if clip == "truncate":  # Remark F.2: w and log w -> w_bar and log w_bar inside SG, in C too
        wc = min(max(w, 1 - EPS_LOW), 1 + EPS_HIGH)
        C = spec_C(div, wc, beta)
        branch = "high" if w > 1 + EPS_HIGH else ("low" if w < 1 - EPS_LOW else "inside")
        return -(wc * A + C) * lp_val, -(wc * A + C), branch
    a_prime = A + C / w
    psi = a_prime * ell
    if psi >= 0:
        if w < 1 + EPS_HIGH:
            return psi * w, -(w * A + C), "inside"
        w_high = 1 + EPS_HIGH
        return (A + C / w_high) * ell * w_high, 0.0, "high"
    w_low = 1 - EPS_LOW
    if w <= w_low:
        return (A + C / w_low) * ell * w_low, 0.0, "low"
    if w < C_DUAL:
        return psi * w, -(w * A + C), "inside"
    return A * ell * C_DUAL + C * ell, 0.0, "dual"


def token_grid():
    ws, As = zip(*itertools.product(W_GRID, A_GRID), strict=True)
    w = torch.tensor(ws, dtype=torch.float64)
    A = torch.tensor(As, dtype=torch.float64)
    lp = -0.5 - 0.1 * torch.arange(len(ws), dtype=torch.float64)  # distinct, strictly negative log-probs
    olp = lp - torch.log(w)
    return w, A, lp, olp


CASES = [(f"rpg_{d}", c) for d in DIVERGENCES for c in ("dual", "none")] + [(f"rpg_{d}", "alg1") for d in ("rkl", "urkl")] + [
    (f"rpg_reinforce_{d}", c) for d in DIVERGENCES for c in ("dual", "truncate", "none")
]


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("name,clip", CASES)
def test_per_token_values_gradients_and_clip_fractions(name, clip, beta):
    div = name.rsplit("_", 1)[1]
    reinforce = name.startswith("rpg_reinforce_")
    reference = reference_reinforce if reinforce else reference_rpg
    w, A, lp0, olp = token_grid()
    cfg = loss_config(beta=beta, clip=clip, eps_low=EPS_LOW, eps_high=EPS_HIGH, clip_c=C_DUAL)

    lp = lp0.clone().unsqueeze(0).requires_grad_(True)
    mask = torch.ones_like(lp, dtype=torch.bool)
    loss, metrics = call_loss(name, lp, olp.unsqueeze(0), A.unsqueeze(0), mask, cfg, agg="token-sum")
    (grad,) = torch.autograd.grad(loss, lp)

    refs = [reference(div, w[i].item(), A[i].item(), beta, clip, lp0[i].item()) for i in range(len(w))]
    ref_grad = torch.tensor([r[1] for r in refs], dtype=torch.float64)
    torch.testing.assert_close(grad[0], ref_grad, rtol=1e-9, atol=1e-12)

    # per-token values: one unmasked token at a time
    for i in range(len(w)):
        one = torch.zeros_like(mask)
        one[0, i] = True
        value, _ = call_loss(name, lp.detach(), olp.unsqueeze(0), A.unsqueeze(0), one, cfg, agg="token-sum")
        assert value.item() == pytest.approx(refs[i][0], rel=1e-9, abs=1e-12), (i, w[i].item(), A[i].item())

    n = len(refs)
    branches = [r[2] for r in refs]
    for b in ("high", "low", "dual"):
        assert metrics[f"actor/rpg/clipfrac_{b}"] == pytest.approx(branches.count(b) / n), b
    if reinforce:
        kept = sum(1 for r in refs if r[1] != 0.0 or r[2] == "inside") / n
        assert metrics["actor/rpg/kept_frac"] == pytest.approx(kept)


def test_grid_reaches_every_branch_and_both_sign_flips():
    """Precondition of the test above: all branches occur, and A' differs in sign from A in both directions."""
    w, A, lp, _ = token_grid()
    seen = set()
    flips = set()
    for div in DIVERGENCES:
        for beta in BETAS:
            for i in range(len(w)):
                wi, Ai = w[i].item(), A[i].item()
                seen.add(reference_reinforce(div, wi, Ai, beta, "dual", lp[i].item())[2])
                seen.add(reference_rpg(div, wi, Ai, beta, "dual", lp[i].item())[2])
                a_prime = Ai + spec_C(div, wi, beta) / wi
                if a_prime * Ai < 0:
                    flips.add((Ai > 0, reference_reinforce(div, wi, Ai, beta, "dual", lp[i].item())[2]))
    assert seen == {"inside", "high", "low", "dual"}
    assert {f[0] for f in flips} == {True, False}
    assert {f[1] for f in flips} >= {"inside", "high", "low", "dual"}


def test_reinforce_branches_on_effective_advantage_not_on_A():
    # A > 0 but A' = A + C/w < 0 (urkl, w > 1, large beta): the token is treated as a negative-advantage
    # token, so with w above c it is dual-clipped (no gradient) rather than high-clipped
    w, A, beta = 4.0, 0.05, 2.0
    assert A + spec_C("urkl", w, beta) / w < 0
    lp = torch.tensor([[-1.0]], dtype=torch.float64, requires_grad=True)
    olp = lp.detach() - math.log(w)
    cfg = loss_config(beta=beta, clip="dual", eps_low=EPS_LOW, eps_high=EPS_HIGH, clip_c=C_DUAL)
    loss, metrics = call_loss("rpg_reinforce_urkl", lp, olp, torch.tensor([[A]]), torch.ones(1, 1, dtype=torch.bool), cfg)
    (g,) = torch.autograd.grad(loss, lp)
    assert g.item() == 0.0 and metrics["actor/rpg/clipfrac_dual"] == 1.0 and metrics["actor/rpg/clipfrac_high"] == 0.0


def spec_C_general(div, w, rho, beta):
    """Spec section 2 table, general column, with log u = log w - log rho."""
    log_u = math.log(w) - math.log(rho)
    return {"fkl": beta * rho, "rkl": -beta * w * (log_u + 1), "ufkl": beta * (rho - w), "urkl": -beta * w * log_u}[div]


@pytest.mark.parametrize("div", DIVERGENCES)
def test_truncate_with_a_reference_uses_the_clipped_weight_in_C(div):
    # Remark F.2 with pi_ref != pi_old: C at w_bar, log u -> log w_bar - log rho (spec section 2)
    beta = 0.3
    w, A, lp0, olp = token_grid()
    rho = torch.tensor([0.5, 0.8, 1.25, 2.0] * (len(w) // 4 + 1), dtype=torch.float64)[: len(w)]
    rlp = olp + torch.log(rho)
    cfg = loss_config(beta=beta, clip="truncate", eps_low=EPS_LOW, eps_high=EPS_HIGH, clip_c=C_DUAL)
    lp = lp0.clone().unsqueeze(0).requires_grad_(True)
    loss, _ = call_loss(f"rpg_reinforce_{div}", lp, olp.unsqueeze(0), A.unsqueeze(0), torch.ones_like(lp, dtype=torch.bool),
                        cfg, agg="token-sum", ref_log_prob=rlp.unsqueeze(0))
    (grad,) = torch.autograd.grad(loss, lp)
    expected = []
    for i in range(len(w)):
        wc = min(max(w[i].item(), 1 - EPS_LOW), 1 + EPS_HIGH)
        expected.append(-(wc * A[i].item() + spec_C_general(div, wc, rho[i].item(), beta)))
    torch.testing.assert_close(grad[0], torch.tensor(expected, dtype=torch.float64), rtol=1e-9, atol=1e-12)
    if div != "fkl":  # C(w) and C(w_bar) differ on the clipped tokens: the test sees the difference
        at_w = [-(min(max(w[i].item(), 1 - EPS_LOW), 1 + EPS_HIGH) * A[i].item()
                  + spec_C_general(div, w[i].item(), rho[i].item(), beta)) for i in range(len(w))]
        assert (grad[0] - torch.tensor(at_w, dtype=torch.float64)).abs().max() > 1e-3


def test_alg1_and_dual_differ_in_clip_decisions_only_at_large_beta():
    # the two forms of Algorithm 1 branch on A (released code) and on A_hat (as printed): same decisions at the
    # paper's beta, different ones when the KL part of A_hat is comparable to A
    w, A, lp0, olp = token_grid()
    decisions = {}
    for beta in (1e-4, 0.3):
        for clip in ("dual", "alg1"):
            decisions[beta, clip] = [reference_rpg("rkl", w[i].item(), A[i].item(), beta, clip, lp0[i].item())[2]
                                     for i in range(len(w))]
    assert decisions[1e-4, "dual"] == decisions[1e-4, "alg1"]
    differ = sum(a != b for a, b in zip(decisions[0.3, "dual"], decisions[0.3, "alg1"], strict=True))
    assert differ >= 3
