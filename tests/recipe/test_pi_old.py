"""pi_old from the rollout (``pi_old=rollout``: verl's bypass mode, no old-log-prob forward pass): the switch, what
the dry run says, and every combination refused where the RPG loss would not train or pi_old needs a recompute."""

import pytest

from recipe.rpg.checks import ConfigError, check_config
from recipe.rpg.summary import summary
from tests.recipe.test_config import compose_preset


def dry_run(overrides, env=None):
    spec, cfg = compose_preset({"METHOD": "rpg_urkl", **(env or {})}, overrides)
    return spec, cfg, check_config(cfg, check_data=False)


def pi_old_line(spec, cfg, checked) -> str:
    return next(line for line in summary("", cfg, checked, str(spec.run_dir)) if line.split()[:1] == ["pi_old"])


def test_the_switch_sets_verls_keys_and_the_dry_run_says_so():
    spec, cfg, checked = dry_run([])
    assert "recomputed by the actor" in pi_old_line(spec, cfg, checked)  # off by default: the paper's runs
    assert cfg.algorithm.rollout_correction.bypass_mode is False
    spec, cfg, checked = dry_run([], {"PI_OLD": "rollout"})
    assert "rollout log-probs, no recompute" in pi_old_line(spec, cfg, checked)
    assert cfg.algorithm.rollout_correction.bypass_mode is True and cfg.actor_rollout_ref.rollout.calculate_log_probs


@pytest.mark.parametrize("overrides,message", [
    (["trainer.use_v1=False"], "legacy trainer would also replace the policy loss with its own 'bypass_mode' loss"),
    (["trainer.v1.trainer_mode=colocate_async"], "trainer.v1.trainer_mode='colocate_async'"),
    (["actor_rollout_ref.rollout.calculate_log_probs=False"], "calculate_log_probs=False asks the rollout for none"),
    (["algorithm.rollout_correction.rollout_is=token"], "rollout_is='token' needs pi_old recomputed"),
    (["algorithm.rollout_correction.rollout_rs=token_k1", "algorithm.rollout_correction.rollout_rs_threshold=2.0"],
     "rollout_rs='token_k1' needs pi_old recomputed"),
    (["actor_rollout_ref.rollout.top_p=0.9"], "w would compare two different distributions"),
])
def test_refused_where_rollout_log_probs_cannot_be_pi_old(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        dry_run(["pi_old=rollout", *overrides])
