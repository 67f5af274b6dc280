"""RPG divergences as named KL penalties through verl's own kl_penalty call sites (actor KL loss, KL in reward)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from verl import DataProto
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.ray_trainer import apply_kl_penalty
from verl.workers.utils.losses import ppo_loss

import rpg_ext.kl_penalty as kp
from tests.rpg_ext.test_losses_exactness import COUNTS, TOKENS, exact_divergence, rel_err
from tests.rpg_ext.test_losses_verl_integration import actor_config, ppo_loss_batch

RPG_NAMES = ["rpg_fkl", "rpg_rkl", "rpg_ufkl", "rpg_urkl"]
#: verl 0.9.1's own estimator names (``core_algos.kl_penalty_forward``), typed from verl's code.
VERL_KL_ESTIMATORS = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3")


@pytest.fixture(autouse=True, scope="module")
def installed():
    assert kp.install()
    yield


def spec_on_policy_k(name, lp, rlp):
    """Spec table with pi_old = pi_theta: w = 1, rho = pi_ref / pi_theta, log u = lp - rlp (values only)."""
    log_u = lp - rlp
    rho = torch.exp(rlp - lp)
    return {
        "rpg_fkl": -rho * log_u,
        "rpg_rkl": log_u,
        "rpg_ufkl": 1 - rho * log_u - rho,
        "rpg_urkl": rho + log_u - 1,
    }[name]


def test_dispatch_sends_rpg_names_to_rpg_and_the_rest_to_verl():
    lp, rlp = torch.randn(7, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    for name in VERL_KL_ESTIMATORS:  # verl's names give verl's own (unpatched) estimator
        assert torch.equal(core_algos.kl_penalty_forward(lp, rlp, name), kp.verl_kl_penalty_forward(lp, rlp, name))
    for name in RPG_NAMES:
        torch.testing.assert_close(core_algos.kl_penalty_forward(lp, rlp, name), spec_on_policy_k(name, lp, rlp))


@pytest.mark.parametrize("name", RPG_NAMES)
def test_actor_kl_loss_path_value(name):
    # verl's ppo_loss with use_kl_loss=True and kl_loss_type=<name>: the logged kl_loss is the spec's mean k
    gen = torch.Generator().manual_seed(2)
    bsz, length = 3, 5
    lp = -torch.rand(bsz, length, generator=gen) * 2
    rlp = lp + 0.5 * torch.randn(bsz, length, generator=gen)
    mask = torch.ones(bsz, length, dtype=torch.bool)
    mask[1, 3:] = False
    config = actor_config("vanilla", "token-mean")
    object.__setattr__(config, "use_kl_loss", True)
    object.__setattr__(config, "kl_loss_type", name)
    log_probs, td = ppo_loss_batch(lp, lp.clone(), torch.zeros(bsz, length), mask, torch.full((bsz,), 2), int(mask.sum()), bsz)
    td["ref_log_prob"] = rlp
    _, metrics = ppo_loss(config, {"log_probs": log_probs}, td)
    expected = spec_on_policy_k(name, lp, rlp)[mask].mean()
    assert metrics["kl_loss"].aggregate() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("normalized", [True, False], ids=["softmax", "measure"])
@pytest.mark.parametrize("name", RPG_NAMES)
def test_actor_kl_loss_gradient_is_exact_on_policy(name, normalized):
    # samples follow pi_theta exactly (enumeration); the gradient of the token-mean of verl's kl_penalty is grad D
    log_p = torch.log(COUNTS.double() / COUNTS.sum())
    theta = log_p.clone().requires_grad_(True)
    lp_all = torch.log_softmax(theta, -1) if normalized else theta
    log_ref = torch.log_softmax(log_p + torch.linspace(-0.7, 0.9, len(COUNTS), dtype=torch.float64), -1)
    k = core_algos.kl_penalty(lp_all[TOKENS], log_ref[TOKENS], name)
    (g,) = torch.autograd.grad(k.mean(), theta)
    t = theta.detach().clone().requires_grad_(True)
    p_t = (torch.log_softmax(t, -1) if normalized else t).exp()
    D = exact_divergence(name[4:], p_t, log_ref.exp())
    (gD,) = torch.autograd.grad(D, t)
    assert rel_err(g, gD) < 1e-9
    assert k.mean().item() == pytest.approx(D.item(), rel=1e-9)


def test_verl_k3_is_not_the_reverse_kl_gradient_but_rpg_urkl_is():
    # negative control on the same enumeration: k3's value equals rpg_urkl's, its gradient is the *forward* KL's
    log_p = torch.log(COUNTS.double() / COUNTS.sum())
    log_ref = torch.log_softmax(log_p + torch.linspace(-0.7, 0.9, len(COUNTS), dtype=torch.float64), -1)
    grads = {}
    for name in ("low_var_kl", "rpg_urkl"):
        theta = log_p.clone().requires_grad_(True)
        k = core_algos.kl_penalty(theta[TOKENS], log_ref[TOKENS], name)
        (grads[name],) = torch.autograd.grad(k.mean(), theta)
    t = log_p.clone().requires_grad_(True)
    (g_rev,) = torch.autograd.grad(exact_divergence("urkl", t.exp(), log_ref.exp()), t)
    assert rel_err(grads["rpg_urkl"], g_rev) < 1e-9
    assert rel_err(grads["low_var_kl"], g_rev) > 0.1


@pytest.mark.parametrize("name", RPG_NAMES)
def test_kl_in_reward_path(name):
    # verl's apply_kl_penalty: rewards = scores - beta * k(old_log_probs, ref_log_prob); E_old[k] = D(pi_old, pi_ref)
    log_p = torch.log(COUNTS.double() / COUNTS.sum())
    log_ref = torch.log_softmax(log_p + torch.linspace(-0.7, 0.9, len(COUNTS), dtype=torch.float64), -1)
    olp = log_p[TOKENS].unsqueeze(0)
    rlp = log_ref[TOKENS].unsqueeze(0)
    scores = torch.zeros_like(olp)
    data = DataProto.from_dict(
        {"old_log_probs": olp, "ref_log_prob": rlp, "token_level_scores": scores, "response_mask": torch.ones_like(olp)}
    )
    beta = 0.25
    data, metrics = apply_kl_penalty(data, core_algos.FixedKLController(beta), kl_penalty=name)
    k = -data.batch["token_level_rewards"] / beta
    torch.testing.assert_close(k, spec_on_policy_k(name, olp, rlp), rtol=1e-12, atol=1e-14)
    D = exact_divergence(name[4:], log_p.exp(), log_ref.exp())
    assert metrics["actor/reward_kl_penalty"] == pytest.approx(D.item(), rel=1e-9)


def test_unknown_name_still_raises_verls_error():
    with pytest.raises(NotImplementedError):
        core_algos.kl_penalty(torch.zeros(3), torch.zeros(3), "rpg_nope")


def test_verl_builtin_estimators_unchanged_bit_for_bit(tmp_path):
    # verl without our plugin (a fresh process with plugins disabled) against verl with the dispatch installed
    names = [*VERL_KL_ESTIMATORS, "k1+", "k3+", "low_var_kl+", "abs+", "mse+"]
    gen = torch.Generator().manual_seed(9)
    lp = (torch.randn(4, 6, generator=gen) * 3).tolist()
    rlp = (torch.randn(4, 6, generator=gen) * 3).tolist()
    code = textwrap.dedent(
        f"""
        import json, torch
        import verl
        from verl.trainer.ppo import core_algos
        assert core_algos.kl_penalty_forward.__module__ == "verl.trainer.ppo.core_algos"
        out = {{}}
        for name in {names!r}:
            lp = torch.tensor({lp!r}, requires_grad=True)
            k = core_algos.kl_penalty(lp, torch.tensor({rlp!r}), name)
            k.sum().backward()
            out[name] = [k.detach().flatten().tolist(), lp.grad.flatten().tolist()]
        print(json.dumps(out))
        """
    )
    env = dict(os.environ, VERL_USE_EXTERNAL_PLUGINS="none")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    reference = json.loads(res.stdout.strip().splitlines()[-1])
    assert kp.installed()
    for name in names:
        x = torch.tensor(lp, requires_grad=True)
        k = core_algos.kl_penalty(x, torch.tensor(rlp), name)
        k.sum().backward()
        assert k.detach().flatten().tolist() == reference[name][0], name
        assert x.grad.flatten().tolist() == reference[name][1], name


def test_plugin_installs_the_dispatch_in_a_fresh_process(fresh_import_verl):
    assert fresh_import_verl["kl_penalty"] == "rpg_ext.kl_penalty"


@pytest.mark.parametrize("name", RPG_NAMES)
def test_plus_suffix_is_refused_because_it_swaps_the_gradient_for_the_reverse_kls(name):
    # why: verl's '+' keeps the value of rpg_fkl but takes k2's gradient, the reverse KL's (shown on the enumeration)
    log_p = torch.log(COUNTS.double() / COUNTS.sum())
    log_ref = torch.log_softmax(log_p + torch.linspace(-0.7, 0.9, len(COUNTS), dtype=torch.float64), -1)
    theta = log_p.clone().requires_grad_(True)
    k = core_algos.kl_penalty(torch.log_softmax(theta, -1)[TOKENS], log_ref[TOKENS], "rpg_fkl+")
    (g,) = torch.autograd.grad(k.mean(), theta)
    t = log_p.clone().requires_grad_(True)
    (g_fkl,) = torch.autograd.grad(exact_divergence("fkl", torch.softmax(t, -1), log_ref.exp()), t)
    assert rel_err(g, g_fkl) > 0.1
    # refused where a config names a KL penalty: the typed algorithm block and the recipe's pre-flight check
    from rpg_ext.config import RPGAlgoConfig

    with pytest.raises(ValueError, match=rf"algorithm\.kl_penalty='{name}\+'.*reverse"):
        RPGAlgoConfig(kl_penalty=name + "+")
    kp.check_kl_penalty_name(name, "x")  # without '+': fine
    kp.check_kl_penalty_name("k3+", "x")  # verl's own names keep their '+'


@pytest.mark.parametrize("name", RPG_NAMES)
def test_kl_in_reward_gradient_is_the_divergence_gradient_only_for_rpg_rkl(name):
    # a reward penalty r = -beta * k (no gradient through k) induces the policy gradient E_theta[-beta k grad log pi];
    # on the enumeration (on-policy samples) it equals -beta * grad D for rpg_rkl only
    log_p = torch.log(COUNTS.double() / COUNTS.sum())
    log_ref = torch.log_softmax(log_p + torch.linspace(-0.7, 0.9, len(COUNTS), dtype=torch.float64), -1)
    theta = log_p.clone().requires_grad_(True)
    lp = torch.log_softmax(theta, -1)[TOKENS]
    k = core_algos.kl_penalty(lp.detach(), log_ref[TOKENS], name)
    (g,) = torch.autograd.grad((k * lp).mean(), theta)  # REINFORCE with reward k
    t = log_p.clone().requires_grad_(True)
    (gD,) = torch.autograd.grad(exact_divergence(name[4:], torch.softmax(t, -1), log_ref.exp()), t)
    exact = rel_err(g, gD) < 1e-9
    assert exact == (name == "rpg_rkl"), rel_err(g, gD)
    assert (kp.kl_in_reward_note(name) is None) == exact
