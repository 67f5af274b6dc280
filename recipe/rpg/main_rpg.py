"""Entry point of the RPG recipe: verl's PPO trainer (v1) with the recipe's config and checks.

    python -m recipe.rpg.main_rpg algorithm.policy_loss=rpg_fkl
    python -m recipe.rpg.main_rpg --config-name rpg_megatron_trainer method=grpo context=4k

The same as ``python -m verl.trainer.main_ppo`` except that the config is ``config/rpg_trainer.yaml``, that
``recipe.rpg.checks.check_config`` (verl's ``validate_config`` included) runs before Ray starts, and that the
trainer is ``recipe.rpg.trainer.RPGTrainer`` (verl's sync trainer; adds the reference model and its refresh
when ``algorithm.rpg.reference`` is fixed or periodic, and the KL regularizer ``algorithm.rpg.kl``). Relative local
data paths are taken from the directory of the launch (Ray workers may run elsewhere).

``python -m recipe.rpg.main_rpg --resolved PATH`` runs an already composed and checked config file (the launcher's
``<run_dir>/resolved_config.yaml``): the launcher composes once and runs :func:`run` on it in a forked child.
"""

from __future__ import annotations

import os
import re
import sys

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from recipe.rpg import embedded

embedded.register_resolver()  # ${rpg_embedded:...} of config/machine/cpu.yaml


def run_name(cfg: DictConfig, choices: dict) -> str:
    """A run's name from its resolved config: two different algorithms never share it (nor a run directory).

    ``<method>[-<policy loss>][-kl_<div>][-ref_<reference>]-<model>-<context>[-megatron]``, the loss named unless it
    is the method itself (the RPG presets); on the embedded task the machine (``cpu``, ``gpu``) replaces model and
    context."""
    method, loss, rpg = choices.get("method", "custom"), cfg.algorithm.policy_loss, cfg.algorithm.rpg
    parts = [method] + ([loss] if loss != method else [])
    parts += [f"kl_{rpg.kl.divergence}"] if rpg.kl.divergence else []
    parts += [f"ref_{rpg.reference}"] if rpg.reference != "sampling" else []
    if choices.get("machine"):  # the embedded task (machine=cpu, gpu, embedded): no model or context to name
        parts.append(str(choices["machine"]))
    else:
        model = os.path.basename(os.path.normpath(str(cfg.actor_rollout_ref.model.path))).lower()
        parts += [re.sub(r"[^a-z0-9._+-]+", "_", model), str(choices.get("context", "custom"))]
    if cfg.actor_rollout_ref.actor.strategy == "megatron":
        parts.append("megatron")
    return "-".join(parts)


def compose(config_name: str, overrides: list[str]) -> tuple[DictConfig, dict]:
    """The launcher's one compose of ``config/<config_name>.yaml``: the config (without its ``hydra`` node) and the
    chosen option of each config group (``method``, ``context``, ``machine``, ...)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=os.path.join(os.path.dirname(__file__), "config"), version_base=None):
        cfg = hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def set_platform(config: DictConfig) -> None:
    """verl's ``cpu`` platform (rpg_ext.cpu) in this process when the config runs on the CPU; before verl is imported."""
    if config.trainer.get("device") == "cpu":
        from rpg_ext import cpu

        os.environ[cpu.PLATFORM_ENV] = cpu.PLATFORM_NAME


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
    set_platform(config)
    from verl.trainer.main_ppo import run_ppo
    from verl.utils.device import auto_set_device

    from recipe.rpg.trainer import RPGTaskRunner

    auto_set_device(config)
    run_ppo(config, task_runner_class=RPGTaskRunner)


@hydra.main(config_path="config", config_name="rpg_trainer", version_base=None)
def main(config: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from recipe.rpg.checks import ConfigError, check_config

    if not config.trainer.experiment_name:
        with open_dict(config):
            config.trainer.experiment_name = run_name(config, dict(HydraConfig.get().runtime.choices))
    set_platform(config)
    try:
        check_config(config, check_data=True, launching=True)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    absolute_data_paths(config)
    run(config)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--resolved"] and len(sys.argv) == 3:
        run(OmegaConf.load(sys.argv[2]))
    else:
        main()
