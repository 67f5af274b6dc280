"""The launcher: ``bash scripts/run_<preset>.sh [--dry-run] [--dump-config PATH] [--skip-data-check] [key=value ...]``.

Hydra is the command line (``method=rpg_urkl algorithm.rpg.beta=1e-3 ...``); this module does only what Hydra cannot:
the short variables of :data:`ALIASES` (each becomes a Hydra override, before the command line's), one compose, the
run directory named from the resolved config, the hand-over to the embedded CPU run where no GPU is visible
(``machine=cpu``), the dry run, and the run itself (``recipe.rpg.progress``: a child process, a line per step).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from recipe.rpg import progress
from rpg_ext import cpu

REPO = Path(__file__).resolve().parents[2]
#: Short variables -> Hydra keys (CLIP=low,high sets two; a *_files key takes a,b as [a,b]). BACKEND picks the config.
ALIASES = {"METHOD": "method", "CONTEXT": "context", "MODEL": "actor_rollout_ref.model.path",
           "POLICY_LOSS": "algorithm.policy_loss", "BETA": "algorithm.rpg.beta", "RPG_CLIP": "algorithm.rpg.clip",
           "KL": "algorithm.rpg.kl.divergence", "KL_BETA": "algorithm.rpg.kl.beta",
           "REFERENCE": "algorithm.rpg.reference", "REFERENCE_EVERY": "algorithm.rpg.reference_every",
           "REFERENCE_KL_TARGET": "algorithm.rpg.reference_kl_target",
           "CLIP": ("actor_rollout_ref.actor.clip_ratio_low", "actor_rollout_ref.actor.clip_ratio_high"),
           "CLIP_C": "actor_rollout_ref.actor.clip_ratio_c", "LR": "actor_rollout_ref.actor.optim.lr",
           "STEPS": "trainer.total_training_steps", "GPUS_PER_NODE": "trainer.n_gpus_per_node",
           "NNODES": "trainer.nnodes", "ROLLOUT": "rollout_engine",
           "ROLLOUT_TP": "actor_rollout_ref.rollout.tensor_model_parallel_size", "PI_OLD": "pi_old",
           "DATA_DIR": "data.dir", "TRAIN_FILES": "data.train_files", "VAL_FILES": "data.val_files",
           "EXP_NAME": "trainer.experiment_name", "PROJECT": "trainer.project_name"}
CONFIG_NAMES = {"fsdp": "rpg_trainer", "megatron": "rpg_megatron_trainer"}
#: What the embedded CPU run replaces: overrides of these keys are dropped there, and the launcher says so.
CPU_REPLACED = ("actor_rollout_ref.model.path", "critic.model.path", "data.dir", "data.train_files", "data.val_files")
FLAGS = ("--dry-run", "--skip-data-check", "--verbose")


class LaunchError(ValueError):
    """A launcher argument or variable that cannot be used (Hydra and the dataclasses check every value)."""


def alias_overrides(env) -> list[str]:
    out = []
    for var, keys in ALIASES.items():
        value = env.get(var, "")
        if value and isinstance(keys, tuple):
            values = value.split(",")
            if len(values) != len(keys):
                raise LaunchError(f"{var}={value!r} needs {len(keys)} comma-separated values ({', '.join(keys)})")
            out += [f"{k}={v.strip()}" for k, v in zip(keys, values)]
        elif value:
            out.append(f"{keys}=[{value}]" if keys.endswith("_files") else f"{keys}={value}")
    return out


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    flags, overrides, it = {"dump_config": None}, [], iter(argv)
    for arg in it:
        if arg in FLAGS:
            flags[arg[2:].replace("-", "_")] = True
        elif arg.startswith("--dump-config"):
            flags["dump_config"] = arg.partition("=")[2] or next(it, None)
            if not flags["dump_config"]:
                raise LaunchError("--dump-config needs a path")
        elif arg.startswith("-") or "=" not in arg:
            raise LaunchError(f"{'usage' if arg in ('-h', '--help') else f'unknown argument {arg!r}'}: "
                              f"[{', '.join(FLAGS)}, --dump-config PATH] [key=value ...] (Hydra overrides); variables: "
                              f"{', '.join(ALIASES)}, BACKEND, RUN_DIR (README, 'scripts/')")
        else:
            overrides.append(arg)
    return flags, overrides


@dataclass
class Launch:
    cfg: object  # the composed DictConfig, run paths filled in
    run_dir: Path
    log_path: Path  # verl's file-logger JSONL of this launch
    method: str  # the method config (the preset)


def prepare(overrides: list[str], env, on_cpu: bool) -> Launch:
    """Compose the launch's config once and fill in its run directory, log and checkpoint paths."""
    from omegaconf import open_dict

    from recipe.rpg.main_rpg import absolute_data_paths, compose, run_name

    backend = env.get("BACKEND", "fsdp")
    if backend not in CONFIG_NAMES:
        raise LaunchError(f"BACKEND={backend!r}; choose one of: {', '.join(CONFIG_NAMES)}")
    overrides = alias_overrides(env) + overrides
    dropped = [o for o in overrides if on_cpu and o.lstrip("+").split("=")[0] in CPU_REPLACED]
    if dropped:
        print(f"[launch] no GPU: the embedded CPU run replaces {', '.join(dropped)} (model and data)", flush=True)
    overrides = [o for o in overrides if o not in dropped] + (["machine=cpu"] if on_cpu else [])
    cfg, choices = compose(CONFIG_NAMES[backend], overrides)
    name = cfg.trainer.experiment_name or run_name(cfg, choices)
    run_dir = Path(env.get("RUN_DIR") or REPO / "runs" / name).expanduser().resolve()
    log_path = run_dir / "logs" / f"{progress.utc_stamp()}.jsonl"
    with open_dict(cfg):
        cfg.trainer.experiment_name, cfg.trainer.default_local_dir = name, str(run_dir / "checkpoints")
        if "file" not in cfg.trainer.logger:
            cfg.trainer.logger = [*cfg.trainer.logger, "file"]  # the progress lines and make_tables read it
        env_vars = cfg.ray_kwargs.ray_init.runtime_env.env_vars
        env_vars.VERL_FILE_LOGGER_PATH, env_vars.TENSORBOARD_DIR = str(log_path), str(run_dir / "tensorboard")
    absolute_data_paths(cfg)
    return Launch(cfg, run_dir, log_path, choices.get("method", ""))


def main(argv: list[str] | None = None, env=None) -> int:
    env, argv = os.environ if env is None else env, sys.argv[1:] if argv is None else argv
    progress.quiet_verl_imports()
    try:
        flags, overrides = parse(argv)
        on_cpu = not flags.get("dry_run") and not cpu.gpu_visible()
        if on_cpu:
            os.environ[cpu.PLATFORM_ENV] = cpu.PLATFORM_NAME  # before verl is imported (the checks import it)
        launch = prepare(overrides, env, on_cpu)
    except Exception as e:  # a LaunchError, or Hydra's override / composition errors
        from recipe.rpg.summary import compose_error_message

        print(f"error: {e if isinstance(e, LaunchError) else compose_error_message(e)}", file=sys.stderr)
        return 2
    from omegaconf import OmegaConf

    from recipe.rpg import embedded, summary
    from recipe.rpg.checks import ConfigError, check_config

    cfg, dump = launch.cfg, flags["dump_config"]
    try:
        if on_cpu and not dump:
            embedded.announce_and_build()
        checked = check_config(cfg, not (flags.get("skip_data_check") or dump), launching=not (dump or flags.get("dry_run")))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if dump:
        OmegaConf.save(cfg, dump, resolve=True)
        print(f"[launch] wrote {dump}: " + ("the embedded CPU run's config, what would train on this machine "
                                           "(--dry-run --dump-config writes the cluster run's)" if on_cpu else
                                           "the resolved config"))
    if flags.get("dry_run"):
        print("\n".join(summary.summary(f"recipe dry run OK: {launch.run_dir.name}", cfg, checked, str(launch.run_dir))))
    return 0 if dump or flags.get("dry_run") else progress.start(launch, argv, on_cpu, bool(flags.get("verbose")))


if __name__ == "__main__":
    sys.exit(main())
