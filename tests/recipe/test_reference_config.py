"""Dry runs of the reference modes, the KL regularizer and the combination presets (composed in-process)."""

import pytest

from recipe.rpg.checks import ConfigError, check_config
from recipe.rpg.summary import summary
from tests.recipe.test_config import compose_preset


def dry_run(env, overrides=(), data_dir=None):
    env = {"METHOD": "rpg_urkl", **env}
    spec, cfg = compose_preset(env, overrides)
    return spec, cfg, check_config(cfg, check_data=False)


def summary_lines(spec, cfg, checked):
    return {line.split()[0]: line for line in summary("", cfg, checked, str(spec.run_dir))[1:]}


@pytest.mark.parametrize("reference,loaded", [("sampling", False), ("fixed", True), ("periodic", True)])
def test_reference_modes_and_the_reference_model(reference, loaded):
    overrides = [f"algorithm.rpg.reference={reference}"]
    if reference == "periodic":
        overrides.append("algorithm.rpg.reference_every=5")
    spec, cfg, checked = dry_run({}, overrides)
    assert checked.uses_reference is loaded
    assert checked.algorithm.rpg.reference == reference
    line = summary_lines(spec, cfg, checked)["reference"]
    assert line.split()[1].startswith("yes" if loaded else "none"), line
    if reference == "periodic":
        assert "every 5 training steps" in line
    # the RPG loss still needs no verl KL on top
    assert cfg.actor_rollout_ref.actor.use_kl_loss is False and cfg.algorithm.use_kl_in_reward is False


def test_launcher_variables_for_reference_and_regularizer():
    spec, cfg, checked = dry_run({"METHOD": "grpo_corrected", "POLICY_LOSS": "cispo", "KL": "ufkl", "KL_BETA": "0.002",
                                  "REFERENCE": "periodic", "REFERENCE_KL_TARGET": "0.05"})
    a = checked.algorithm
    assert (a.policy_loss, a.rpg.kl.divergence, a.rpg.kl.beta) == ("cispo", "ufkl", 0.002)
    assert (a.rpg.reference, a.rpg.reference_kl_target) == ("periodic", 0.05)
    assert checked.actor.use_kl_loss is False  # grpo_corrected: the regularizer replaces GRPO's KL loss
    assert checked.actor.policy_loss.loss_mode == "cispo"
    objective = summary_lines(spec, cfg, checked)["objective"]
    assert "cispo + 0.002 x ufkl" in objective and "reference: periodic" in objective
    assert spec.run_dir.name == "grpo_corrected-cispo-kl_ufkl-ref_periodic-qwen3-4b-8k"


@pytest.mark.parametrize("loss", ["gspo", "cispo", "vanilla"])
def test_combination_presets_compose(loss):
    spec, cfg, checked = dry_run({"METHOD": "dapo", "POLICY_LOSS": loss, "KL": "urkl"})
    assert checked.uses_reference is False  # reference = sampling: no reference model for the regularizer
    assert f"{loss} + 0.0001 x urkl" in summary_lines(spec, cfg, checked)["objective"]


@pytest.mark.parametrize(
    "env,overrides,message",
    [
        ({"KL": "urkl"}, (), "already contains its KL term"),
        ({"METHOD": "grpo", "POLICY_LOSS": "gspo"}, ["algorithm.rpg.kl.divergence=urkl"], "use_kl_loss=True"),
        ({"METHOD": "dapo"}, ["algorithm.rpg.reference=fixed"], "nothing to act on"),
        ({}, ["algorithm.rpg.reference=periodic"], "reference_every"),
        ({}, ["algorithm.rpg.reference=fixed", "algorithm.rpg.reference_every=3"], "only apply to"),
        ({}, ["algorithm.rpg.reference=lagged"], "algorithm.rpg.reference must be one of"),
        ({"METHOD": "dapo"}, ["algorithm.rpg.kl.divergence=jsd"], "algorithm.rpg.kl.divergence must be one of"),
        ({"METHOD": "reinforce_pp"}, ["algorithm.rpg.kl.divergence=urkl"], "use_kl_in_reward"),
    ],
)
def test_reference_and_regularizer_errors(env, overrides, message):
    with pytest.raises(ConfigError, match=message):
        dry_run(env, overrides)


def test_bad_variables_are_refused_naming_the_key():
    # the variables are aliases of Hydra keys: the dataclass that defines each key refuses a bad value
    for env, message in (({"KL": "jsd"}, r"algorithm\.rpg\.kl\.divergence must be one of"),
                         ({"REFERENCE": "moving"}, r"algorithm\.rpg\.reference must be one of"),
                         ({"REFERENCE": "periodic", "REFERENCE_EVERY": "0"}, r"algorithm\.rpg\.reference_every must be")):
        with pytest.raises(ConfigError, match=message):
            dry_run({"METHOD": "dapo", **env})


def test_named_kl_penalties_plus_refused_and_reward_note():
    # rpg_<div>+ swaps the divergence's gradient for the reverse KL's (tests/test_kl_penalty.py): refused before Ray
    with pytest.raises(ConfigError, match=r"actor_rollout_ref\.actor\.kl_loss_type='rpg_ufkl\+'.*reverse"):
        dry_run({"METHOD": "grpo"}, ["actor_rollout_ref.actor.kl_loss_type=rpg_ufkl+"])
    with pytest.raises(ConfigError, match=r"algorithm\.kl_penalty='rpg_fkl\+'"):
        dry_run({"METHOD": "reinforce_pp"}, ["algorithm.kl_penalty=rpg_fkl+"])
    # KL in the reward with an rpg_* name other than rpg_rkl: the dry run says its gradient is not beta * grad D
    spec, cfg, checked = dry_run({"METHOD": "reinforce_pp"}, ["algorithm.kl_penalty=rpg_urkl"])
    assert "only for rpg_rkl" in summary_lines(spec, cfg, checked)["note"]
    spec, cfg, checked = dry_run({"METHOD": "reinforce_pp"}, ["algorithm.kl_penalty=rpg_rkl"])
    assert "note" not in summary_lines(spec, cfg, checked)
