"""Reference management: the ref_log_prob plumbing through verl's ppo_loss, exactness with pi_ref != pi_old,
the corrected vs uncorrected GRPO KL, the KL regularizer on top of any policy loss, the refresh schedule,
and the in-worker weight copy."""

import copy
import json

import pytest
import torch

from rpg_ext import RPG_LOSS_NAMES
from rpg_ext.actor_loss import ActorLossSettings, rpg_actor_loss
from rpg_ext.config import RPGAlgoConfig, RPGAlgorithmConfig, RPGKLConfig
from rpg_ext.reference import ReferenceSchedule, copy_module_weights, load_shard_state, shard_state
from tests.rpg_ext.test_losses_exactness import COUNTS, F64, LOG_PI_OLD, TOKENS, exact_divergence, policy, rel_err
from tests.rpg_ext.test_losses_verl_integration import actor_config, ppo_loss_batch

N = len(TOKENS)


def worker_batch(theta, normalized, log_pi_ref, adv):
    """The enumeration batch in the layout verl's engines hand to the actor loss: one response token per row."""
    lp = policy(theta, normalized)[TOKENS].unsqueeze(-1)
    olp = LOG_PI_OLD[TOKENS].unsqueeze(-1)
    mask = torch.ones(N, 1, dtype=torch.bool)
    log_probs, td = ppo_loss_batch(lp, olp, adv[TOKENS].unsqueeze(-1), mask, torch.ones(N, dtype=torch.long), N, N)
    if log_pi_ref is not None:
        td["ref_log_prob"] = log_pi_ref[TOKENS].unsqueeze(-1)
    return log_probs, td


def closed_form_grad(theta0, normalized, div, beta, adv, log_pi_ref, reward=True):
    t = theta0.clone().requires_grad_(True)
    p = policy(t, normalized).exp()
    J = (p * adv).sum() * reward - beta * exact_divergence(div, p, log_pi_ref.exp())
    (g,) = torch.autograd.grad(J, t)
    return g


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(77)


@pytest.mark.parametrize("normalized", [True, False], ids=["softmax", "measure"])
@pytest.mark.parametrize("name", RPG_LOSS_NAMES)
def test_general_reference_exact_through_the_worker_loss_path(name, normalized, gen):
    # pi_ref != pi_old: the batch's ref_log_prob reaches the loss through rpg_actor_loss -> verl's ppo_loss
    theta0 = LOG_PI_OLD + 0.5 * torch.randn(len(COUNTS), generator=gen, dtype=F64)
    log_pi_ref = torch.log_softmax(LOG_PI_OLD + 0.6 * torch.randn(len(COUNTS), generator=gen, dtype=F64), -1)
    adv = torch.randn(len(COUNTS), generator=gen, dtype=F64)
    theta = theta0.clone().requires_grad_(True)
    log_probs, td = worker_batch(theta, normalized, log_pi_ref, adv)
    config = actor_config(name, "token-mean", beta=0.7, clip="none")
    loss, metrics = rpg_actor_loss(config, {"log_probs": log_probs}, td, settings=ActorLossSettings(use_reference_model=True))
    (g,) = torch.autograd.grad(loss, theta)
    g_J = closed_form_grad(theta0, normalized, name.rsplit("_", 1)[1], 0.7, adv, log_pi_ref)
    assert rel_err(g, -g_J) < 1e-6
    # the ref = old loss is a different function here: the plumbing matters
    theta2 = theta0.clone().requires_grad_(True)
    log_probs2, td2 = worker_batch(theta2, normalized, log_pi_ref, adv)
    loss2, _ = rpg_actor_loss(config, {"log_probs": log_probs2}, td2, settings=ActorLossSettings())
    (g2,) = torch.autograd.grad(loss2, theta2)
    assert rel_err(g2, -g_J) > 1e-3
    assert metrics["actor/rpg/ref_old_logprob_absdiff"].aggregate() > 0


def test_missing_reference_log_probs_is_an_error():
    theta = LOG_PI_OLD.clone().requires_grad_(True)
    log_probs, td = worker_batch(theta, True, None, torch.zeros(len(COUNTS), dtype=F64))
    with pytest.raises(RuntimeError, match="ref_log_prob"):
        rpg_actor_loss(actor_config("rpg_urkl", "token-mean"), {"log_probs": log_probs}, td,
                       settings=ActorLossSettings(use_reference_model=True))


def test_grpo_kl_term_is_biased_off_policy_and_the_importance_weighted_one_is_not(gen):
    # Section 2.2: GRPO's k3 against a fixed reference, estimated from samples of pi_old without the weight w
    theta0 = LOG_PI_OLD + 0.5 * torch.randn(len(COUNTS), generator=gen, dtype=F64)
    log_pi_ref = torch.log_softmax(LOG_PI_OLD + 0.6 * torch.randn(len(COUNTS), generator=gen, dtype=F64), -1)
    grads = {}
    for name, kl_loss_type, settings in (
        ("grpo", "low_var_kl", None),  # verl's GRPO KL loss (k3, no importance weight)
        ("corrected", None, ActorLossSettings(use_reference_model=True, kl_divergence="urkl", kl_beta=1.0)),
    ):
        theta = theta0.clone().requires_grad_(True)
        log_probs, td = worker_batch(theta, True, log_pi_ref, torch.zeros(len(COUNTS), dtype=F64))
        config = actor_config("vanilla", "token-mean")
        if settings is None:
            from verl.workers.utils.losses import ppo_loss

            object.__setattr__(config, "use_kl_loss", True)
            object.__setattr__(config, "kl_loss_type", kl_loss_type)
            object.__setattr__(config, "kl_loss_coef", 1.0)
            loss, _ = ppo_loss(config, {"log_probs": log_probs}, td)
        else:
            loss, _ = rpg_actor_loss(config, {"log_probs": log_probs}, td, settings=settings)
        (grads[name],) = torch.autograd.grad(loss, theta)
    g_D = -closed_form_grad(theta0, True, "urkl", 1.0, torch.zeros(len(COUNTS), dtype=F64), log_pi_ref, reward=False)
    assert rel_err(grads["corrected"], g_D) < 1e-6
    assert rel_err(grads["grpo"], g_D) > 0.05  # biased


@pytest.mark.parametrize("with_ref", [True, False], ids=["ref!=old", "ref=old"])
@pytest.mark.parametrize("div", ["fkl", "rkl", "ufkl", "urkl"])
@pytest.mark.parametrize("normalized", [True, False], ids=["softmax", "measure"])
def test_regularizer_on_vanilla_is_exact(div, with_ref, normalized, gen):
    # vanilla (beta-free) + beta * k: the KL part's expected gradient is beta * grad D
    theta0 = LOG_PI_OLD + 0.03 * torch.randn(len(COUNTS), generator=gen, dtype=F64)  # vanilla inside its clip
    log_pi_ref = (
        torch.log_softmax(LOG_PI_OLD + 0.6 * torch.randn(len(COUNTS), generator=gen, dtype=F64), -1) if with_ref else None
    )
    adv = torch.randn(len(COUNTS), generator=gen, dtype=F64)
    beta = 0.9
    settings = ActorLossSettings(use_reference_model=with_ref, kl_divergence=div, kl_beta=beta)
    theta = theta0.clone().requires_grad_(True)
    log_probs, td = worker_batch(theta, normalized, log_pi_ref, adv)
    config = actor_config("vanilla", "token-mean")
    loss, metrics = rpg_actor_loss(config, {"log_probs": log_probs}, td, settings=settings)
    (g,) = torch.autograd.grad(loss, theta)
    ref = LOG_PI_OLD if log_pi_ref is None else log_pi_ref
    g_J = closed_form_grad(theta0, normalized, div, beta, adv, ref)  # vanilla inside the clip: E_theta[A] gradient
    assert rel_err(g, -g_J) < 1e-6
    p = policy(theta0, normalized).exp()
    assert metrics["actor/rpg/kl"].aggregate() == pytest.approx(exact_divergence(div, p, ref.exp()).item(), rel=1e-6)


@pytest.mark.parametrize("div", ["fkl", "rkl", "ufkl", "urkl"])
def test_rollout_correction_weights_the_regularizer_and_the_rpg_loss_alike(div, gen):
    # verl's rollout correction: tokens are sampled by pi_rollout (the enumeration's counts), pi_old is another
    # policy, rollout_is_weights = pi_old / pi_rollout. Every per-token term estimating an expectation under
    # pi_old must carry the weight: then the regularizer's gradient is beta * grad D and the RPG loss's -grad J.
    log_pi_rollout = LOG_PI_OLD  # the batch: every token as often as pi_rollout says
    log_pi_old = torch.log_softmax(LOG_PI_OLD + 0.7 * torch.randn(len(COUNTS), generator=gen, dtype=F64), -1)
    theta0 = log_pi_old + 0.4 * torch.randn(len(COUNTS), generator=gen, dtype=F64)
    adv = torch.randn(len(COUNTS), generator=gen, dtype=F64)
    weights = (log_pi_old - log_pi_rollout).exp()[TOKENS].unsqueeze(-1)
    beta = 0.8
    cases = {
        "regularizer": ("vanilla", torch.zeros_like(adv), ActorLossSettings(kl_divergence=div, kl_beta=beta), False),
        "rpg loss": (f"rpg_{div}", adv, ActorLossSettings(), True),
    }
    for what, (loss_mode, a, settings, reward) in cases.items():
        theta = theta0.clone().requires_grad_(True)
        log_probs, td = worker_batch(theta, True, None, a)
        td["old_log_probs"] = log_pi_old[TOKENS].unsqueeze(-1)
        td["rollout_is_weights"] = weights
        loss, _ = rpg_actor_loss(actor_config(loss_mode, "token-mean", beta=beta, clip="none"),
                                 {"log_probs": log_probs}, td, settings=settings)
        (g,) = torch.autograd.grad(loss, theta)
        g_J = closed_form_grad(theta0, True, div, beta, a, log_pi_old, reward=reward)
        assert rel_err(g, -g_J) < 1e-6, what
        # negative control: the same batch without the weights is off
        del td["rollout_is_weights"]
        theta2 = theta0.clone().requires_grad_(True)
        log_probs2, _ = worker_batch(theta2, True, None, a)
        loss2, _ = rpg_actor_loss(actor_config(loss_mode, "token-mean", beta=beta, clip="none"),
                                  {"log_probs": log_probs2}, td, settings=settings)
        (g2,) = torch.autograd.grad(loss2, theta2)
        assert rel_err(g2, -g_J) > 0.05, what


def test_regularizer_refuses_verls_kl_loss():
    theta = LOG_PI_OLD.clone().requires_grad_(True)
    log_probs, td = worker_batch(theta, True, None, torch.zeros(len(COUNTS), dtype=F64))
    config = actor_config("vanilla", "token-mean")
    object.__setattr__(config, "use_kl_loss", True)
    with pytest.raises(ValueError, match="use_kl_loss.*twice"):
        rpg_actor_loss(config, {"log_probs": log_probs}, td, settings=ActorLossSettings(kl_divergence="urkl", kl_beta=1.0))


# --------------------------------------------------------------------------------------------- configuration


def test_reference_config_validation():
    assert RPGAlgorithmConfig().reference == "sampling" and not RPGAlgorithmConfig().uses_reference_model
    assert RPGAlgorithmConfig(reference="fixed").uses_reference_model
    RPGAlgorithmConfig(reference="periodic", reference_every=5)
    RPGAlgorithmConfig(reference="periodic", reference_kl_target=0.01)
    for kwargs, key in (
        (dict(reference="moving"), "algorithm.rpg.reference"),
        (dict(reference="periodic"), "reference_every"),
        (dict(reference="fixed", reference_every=3), "only apply to"),
        (dict(reference="periodic", reference_every=0), "reference_every"),
        (dict(reference="periodic", reference_every=2.5), "reference_every"),
        (dict(reference="periodic", reference_kl_target=-1.0), "reference_kl_target"),
        (dict(reference="periodic", reference_every=2, reference_kl_decay=1.0), "reference_kl_decay"),
        (dict(kl={"divergence": "jsd"}), "algorithm.rpg.kl.divergence"),
        (dict(kl={"divergence": "urkl", "beta": -1}), "algorithm.rpg.kl.beta"),
        (dict(kl={"divergence": "urkl", "weight": 1}), "unknown keys"),
    ):
        with pytest.raises(ValueError, match=key):
            RPGAlgorithmConfig(**kwargs)


def test_algorithm_cross_checks():
    RPGAlgoConfig(policy_loss="vanilla", rpg={"kl": {"divergence": "urkl", "beta": 1e-3}, "reference": "fixed"})
    RPGAlgoConfig(policy_loss="rpg_urkl", rpg={"reference": "periodic", "reference_every": 4})
    with pytest.raises(ValueError, match="already contains its KL"):
        RPGAlgoConfig(policy_loss="rpg_urkl", rpg={"kl": {"divergence": "urkl"}})
    with pytest.raises(ValueError, match="nothing to act on"):
        RPGAlgoConfig(policy_loss="gspo", rpg={"reference": "fixed"})
    with pytest.raises(ValueError, match="use_kl_in_reward"):
        RPGAlgoConfig(policy_loss="vanilla", use_kl_in_reward=True, rpg={"kl": {"divergence": "fkl"}})
    assert isinstance(RPGAlgoConfig(rpg={"kl": {"divergence": "fkl"}}).rpg.kl, RPGKLConfig)


# ---------------------------------------------------------------------------------------------- the schedule


def run_schedule(schedule, kls, start=1):
    return [step for step, kl in enumerate(kls, start=start) if schedule.observe(step, kl)]


def test_every_k_schedule():
    assert run_schedule(ReferenceSchedule(every=3), [0.0] * 10) == [3, 6, 9]
    assert run_schedule(ReferenceSchedule(every=1), [0.0] * 3) == [1, 2, 3]


def test_kl_target_schedule_with_moving_average():
    # decay 0.5: avg = kl_1, then 0.5 avg + 0.5 kl; refresh when avg > 0.1, avg restarts after a refresh
    kls = [0.04, 0.08, 0.2, 0.05, 0.3, 0.01, 0.01]
    # step 1: 0.04; 2: 0.06; 3: 0.13 > 0.1 -> refresh; 4: 0.05; 5: 0.175 -> refresh; 6: 0.01; 7: 0.01
    s = ReferenceSchedule(kl_target=0.1, kl_decay=0.5)
    assert run_schedule(s, kls) == [3, 5]
    assert s.refreshes == 2 and s.steps_since_refresh == 2 and s.kl_average == pytest.approx(0.01)
    # the logged average is the one compared with the target at that step, also on a refresh step (never NaN)
    s = ReferenceSchedule(kl_target=0.1, kl_decay=0.5)
    logged = []
    for step, kl in enumerate(kls, start=1):
        s.observe(step, kl)
        logged.append(s.metrics()["actor/rpg/reference_kl_average"])
    assert logged == pytest.approx([0.04, 0.06, 0.13, 0.05, 0.175, 0.01, 0.01])


def test_both_triggers_and_metrics():
    s = ReferenceSchedule(every=4, kl_target=0.5, kl_decay=0.0)  # decay 0: avg = current kl
    assert run_schedule(s, [0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1]) == [2, 6]
    m = s.metrics()
    assert m["actor/rpg/reference_refreshes"] == 2.0 and m["actor/rpg/steps_since_reference_refresh"] == 1.0


def test_kl_target_needs_the_kl_metric():
    with pytest.raises(ValueError, match="actor/rpg/kl"):
        ReferenceSchedule(kl_target=0.1).observe(1, None)


def test_state_round_trip_gives_the_same_refresh_steps():
    kls = [0.02, 0.07, 0.15, 0.01, 0.2, 0.3, 0.02, 0.01, 0.05, 0.4, 0.02, 0.03]
    make = lambda: ReferenceSchedule(every=5, kl_target=0.1, kl_decay=0.6)  # noqa: E731
    uninterrupted = run_schedule(make(), kls)
    for cut in range(1, len(kls)):
        first = make()
        before = run_schedule(first, kls[:cut])
        saved = json.loads(json.dumps(first.state_dict()))  # through a checkpoint file
        resumed = make()
        resumed.load_state_dict(saved)
        assert before + run_schedule(resumed, kls[cut:], start=cut + 1) == uninterrupted, cut
    assert uninterrupted  # the sequence does trigger refreshes
    with pytest.raises(ValueError, match="lacks"):
        make().load_state_dict({"refreshes": 1})


# ------------------------------------------------------------------------------------------ the weight copy


def test_copy_module_weights_plain_modules():
    torch.manual_seed(0)
    actor = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    ref = copy.deepcopy(actor)
    with torch.no_grad():
        for p in actor.parameters():
            p.add_(1.0)
    assert copy_module_weights([actor], [ref]) == 4
    for a, r in zip(actor.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, r) and a.data_ptr() != r.data_ptr()
    with pytest.raises(RuntimeError, match="differ"):
        copy_module_weights([actor], [torch.nn.Linear(4, 3)])


def two_chunks(seed):
    """Stand-ins for Megatron's virtual pipeline stages: two model chunks whose local parameter names are equal."""
    torch.manual_seed(seed)
    return [torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)) for _ in range(2)]


def test_refresh_copies_every_chunk_of_a_virtual_pipeline():
    actor, ref = two_chunks(0), two_chunks(1)
    assert [n for n, _ in actor[0].named_parameters()] == [n for n, _ in actor[1].named_parameters()]
    assert copy_module_weights(actor, ref) == 8
    for a_chunk, r_chunk in zip(actor, ref, strict=True):
        for a, r in zip(a_chunk.parameters(), r_chunk.parameters(), strict=True):
            assert torch.equal(a, r)
    with pytest.raises(RuntimeError, match="chunk 1"):
        copy_module_weights(actor, ref[:1])


def test_saved_reference_restores_every_chunk():
    ref, restored = two_chunks(2), two_chunks(3)
    state = shard_state(ref)
    assert len(state) == 8 and {k.split("/")[0] for k in state} == {"0", "1"}
    assert load_shard_state(restored, state) == 8
    for a_chunk, r_chunk in zip(ref, restored, strict=True):
        for a, r in zip(a_chunk.state_dict().values(), r_chunk.state_dict().values(), strict=True):
            assert torch.equal(a, r)
    with pytest.raises(RuntimeError, match="missing"):
        load_shard_state(two_chunks(4), {k: v for k, v in state.items() if not k.startswith("1/")})


def test_actor_loss_logs_the_importance_weight_at_the_start_of_each_step(gen):
    # the first micro-batch after new_step(): w = pi_theta / pi_old over response tokens (1 when pi_old was recomputed,
    # the rollout/trainer mismatch when pi_old is the rollout's); later micro-batches of the step do not log it
    from rpg_ext.actor_loss import ActorLoss

    theta0 = LOG_PI_OLD + 0.3 * torch.randn(len(COUNTS), generator=gen, dtype=F64)
    loss = ActorLoss(actor_config("rpg_urkl", "token-mean"), ActorLossSettings())
    w = (torch.log_softmax(theta0, -1) - LOG_PI_OLD).exp()[TOKENS]
    for call, step_start in ((0, False), (1, True), (2, False)):
        if step_start:
            loss.new_step()
        log_probs, td = worker_batch(theta0.clone().requires_grad_(True), True, None, torch.zeros(len(COUNTS), dtype=F64))
        _, metrics = loss(model_output={"log_probs": log_probs}, data=td)
        if step_start:
            assert metrics["actor/rpg/step_start_iw_mean"].aggregate() == pytest.approx(w.mean().item(), rel=1e-9)
            assert metrics["actor/rpg/step_start_iw_max"].aggregate() == pytest.approx(w.max().item(), rel=1e-9)
            assert metrics["actor/rpg/step_start_iw_min"].aggregate() == pytest.approx(w.min().item(), rel=1e-9)
            assert w.max() > 1.05 and w.min() < 0.95  # the batch is off-policy: the metric can show it
        else:
            assert not any(k.startswith("actor/rpg/step_start") for k in metrics), call


def test_verls_vanilla_loss_logs_no_rpg_loss_metric(gen):
    # the control of the real runs' RPG metrics: through the recipe's actor loss, verl's vanilla loss logs only the
    # step-start importance weight of the hook, none of the RPG losses' metrics
    from rpg_ext.actor_loss import ActorLoss

    loss = ActorLoss(actor_config("vanilla", "token-mean"), ActorLossSettings())
    loss.new_step()
    log_probs, td = worker_batch(LOG_PI_OLD.clone().requires_grad_(True), True, None, torch.ones(len(COUNTS), dtype=F64))
    _, metrics = loss(model_output={"log_probs": log_probs}, data=td)
    assert sorted(k for k in metrics if k.startswith("actor/rpg/")) == [
        "actor/rpg/step_start_iw_max", "actor/rpg/step_start_iw_mean", "actor/rpg/step_start_iw_min"]
    assert "actor/pg_loss" in metrics
