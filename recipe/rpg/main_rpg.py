"""Entry point of the RPG recipe: verl's PPO trainer (v1) with the recipe's config and checks.

    python -m recipe.rpg.main_rpg algorithm.policy_loss=rpg_fkl
    python -m recipe.rpg.main_rpg --config-name rpg_megatron_trainer method=grpo context=4k

The same as ``python -m verl.trainer.main_ppo`` except that the config is ``config/rpg_trainer.yaml``, that
``recipe.rpg.checks.check_config`` (verl's ``validate_config`` included) runs before Ray starts, and that the
trainer is ``recipe.rpg.trainer.RPGTrainer`` (verl's sync trainer; adds the reference model and its refresh
when ``algorithm.rpg.reference`` is fixed or periodic, and the KL regularizer ``algorithm.rpg.kl``). Relative local
data paths are taken from the directory of the launch (Ray workers may run elsewhere). The launchers in
``scripts/`` call this module after their own dry-run checks and write the run directory.
"""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig, open_dict


def absolute_data_paths(config: DictConfig) -> None:
    """Make relative local data paths absolute (from the current directory) so that every Ray worker finds them."""
    from recipe.rpg.checks import data_file_lists

    with open_dict(config):
        for key, paths in data_file_lists(config).items():
            fixed = [p if "://" in p else os.path.abspath(os.path.expanduser(p)) for p in paths]
            config.data[key] = fixed if len(fixed) > 1 or not isinstance(config.data[key], str) else fixed[0]


def run(config: DictConfig) -> None:
    """verl's ``main_ppo.main`` body for the v1 trainer, on an already checked config, with the recipe's trainer
    (verl's sync trainer plus the RPG reference management: ``recipe.rpg.trainer``)."""
    from verl.trainer.main_ppo import run_ppo
    from verl.utils.device import auto_set_device

    from recipe.rpg.trainer import RPGTaskRunner

    auto_set_device(config)
    run_ppo(config, task_runner_class=RPGTaskRunner)


@hydra.main(config_path="config", config_name="rpg_trainer", version_base=None)
def main(config: DictConfig) -> None:
    from recipe.rpg.checks import ConfigError, check_config

    try:
        check_config(config, check_data=True)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    absolute_data_paths(config)
    run(config)


if __name__ == "__main__":
    main()
