"""verl's real PPO trainer on the CPU, on the embedded default task: ``python -m rpg_ext.cpu.demo [overrides...]``.

What runs is verl 0.9.1's own v1 trainer (``verl.trainer.main_ppo``: config validation, ``run_ppo``,
``TaskRunnerV1``): Ray workers, verl's FSDP2 engine over gloo, verl's agent-loop rollout (served by the ``hf``
backend of ``rpg_ext.cpu``), TransferQueue, verl's reward loop, advantage estimators, policy losses and loggers.
Only batch sizes, lengths, model and data are scaled down (:func:`cpu_overrides`).

Config: the recipe's ``recipe/rpg/config/rpg_trainer.yaml`` when the checkout has it (so its keys, e.g.
``algorithm.policy_loss=rpg_urkl``, work), verl's ``ppo_trainer.yaml`` otherwise (``--config verl`` forces it;
select a loss with ``--loss NAME`` or verl's own keys). Then the CPU overrides, then the command line's.

Run directory (``--run-dir``, default ``runs/cpu-<loss>``):
    <run_dir>/resolved_config.yaml       the fully resolved config of this launch
    <run_dir>/logs/<UTC-timestamp>.jsonl verl's ``file`` logger: one ``{"step": N, "data": {...}}`` per line

Examples::

    python -m rpg_ext.cpu.demo --loss rpg_urkl --steps 2
    python -m rpg_ext.cpu.demo --loss rpg_rkl                                  # the default learning run
    python -m rpg_ext.cpu.demo --config verl actor_rollout_ref.actor.policy_loss.loss_mode=vanilla
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time
from pathlib import Path

from rpg_ext import cpu

REPO = Path(__file__).resolve().parents[2]
RECIPE_CONFIG_DIR = REPO / "recipe" / "rpg" / "config"
RECIPE_CONFIG_NAME = "rpg_trainer"

#: Ray logical CPUs: verl's resource pools reserve 3 CPUs per worker bundle; the other actors need a few more.
RAY_CPUS_PER_WORKER = 3
RAY_EXTRA_CPUS = 8

#: Scaled-down defaults of the embedded run (each can be overridden on the command line).
DEFAULT_STEPS = 60
DEFAULT_PROMPTS_PER_STEP = 16
DEFAULT_RESPONSES_PER_PROMPT = 4
DEFAULT_LR = 5e-4
DEFAULT_LR_WARMUP_STEPS = 5
MAX_PROMPT_LENGTH = 128
MAX_RESPONSE_LENGTH = 12


def recipe_available() -> bool:
    return (RECIPE_CONFIG_DIR / f"{RECIPE_CONFIG_NAME}.yaml").exists()


def cpu_overrides(
    task_dir: Path | str,
    *,
    steps: int = DEFAULT_STEPS,
    prompts_per_step: int = DEFAULT_PROMPTS_PER_STEP,
    responses_per_prompt: int = DEFAULT_RESPONSES_PER_PROMPT,
    n_workers: int = 1,
    test_freq: int = 10,
    recipe: bool = False,
) -> list[str]:
    """Hydra overrides that run a verl trainer config on this CPU, on the embedded task in ``task_dir``.

    Applied on top of verl's ``ppo_trainer.yaml`` or the recipe's ``rpg_trainer.yaml``; the user's overrides
    go after them. Algorithm settings (loss, beta, clips, advantage estimator) are left to the config.
    """
    task_dir = Path(task_dir)
    val_n = 4
    per_rank = prompts_per_step * responses_per_prompt // n_workers  # one micro-batch per rank
    o = [
        # platform, placement, Ray
        "trainer.device=cpu",
        "trainer.nnodes=1",
        f"trainer.n_gpus_per_node={n_workers}",
        f"ray_kwargs.ray_init.num_cpus={RAY_CPUS_PER_WORKER * n_workers + RAY_EXTRA_CPUS}",
        f"++ray_kwargs.ray_init.num_gpus={n_workers}",
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
        "transfer_queue.backend.SimpleStorage.total_storage_size=20000",
        # model: the embedded tiny Qwen2, sdpa attention, fp32, FSDP2 over gloo
        f"actor_rollout_ref.model.path={task_dir / 'model'}",
        "++actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        "actor_rollout_ref.model.use_remove_padding=False",
        "actor_rollout_ref.model.enable_gradient_checkpointing=False",
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.actor.use_torch_compile=False",
        "actor_rollout_ref.actor.fsdp_config.use_torch_compile=False",
        "++actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
        "++actor_rollout_ref.ref.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
        "actor_rollout_ref.ref.fsdp_config.use_torch_compile=False",
        # the tiny model's optimizer (the paper's 1e-6 is for billions of parameters)
        f"actor_rollout_ref.actor.optim.lr={DEFAULT_LR}",
        f"actor_rollout_ref.actor.optim.lr_warmup_steps={DEFAULT_LR_WARMUP_STEPS}",
        "actor_rollout_ref.actor.optim.weight_decay=0.0",
        # critic (used by GAE only): the same tiny model with a value head
        "critic.strategy=fsdp2",
        f"critic.model.path={task_dir / 'model'}",
        "++critic.model.override_config.attn_implementation=sdpa",
        "critic.model.use_remove_padding=False",
        "critic.model.enable_gradient_checkpointing=False",
        "critic.fsdp.use_torch_compile=False",
        "++critic.fsdp.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
        f"critic.ppo_micro_batch_size_per_gpu={per_rank}",
        f"critic.optim.lr={DEFAULT_LR}",
        # batch sizes: one optimizer step per training step
        f"data.train_batch_size={prompts_per_step}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={prompts_per_step}",
        "actor_rollout_ref.actor.use_dynamic_bsz=False",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={per_rank}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={per_rank}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={per_rank}",
        # rollout: the hf backend
        "actor_rollout_ref.rollout.name=hf",
        "actor_rollout_ref.rollout.mode=async",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.dtype=float32",
        f"actor_rollout_ref.rollout.n={responses_per_prompt}",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "actor_rollout_ref.rollout.calculate_log_probs=True",
        f"actor_rollout_ref.rollout.val_kwargs.n={val_n}",
        "actor_rollout_ref.rollout.val_kwargs.do_sample=True",
        "actor_rollout_ref.rollout.val_kwargs.temperature=1.0",
        "actor_rollout_ref.rollout.val_kwargs.top_p=1.0",
        # data: the embedded task
        f"data.train_files={task_dir / 'train.parquet'}",
        f"data.val_files={task_dir / 'val.parquet'}",
        f"data.max_prompt_length={MAX_PROMPT_LENGTH}",
        f"data.max_response_length={MAX_RESPONSE_LENGTH}",
        "data.dataloader_num_workers=0",
        "reward.num_workers=1",
        # trainer
        f"trainer.total_training_steps={steps}",
        "trainer.total_epochs=1000",
        f"trainer.test_freq={test_freq}",
        "trainer.val_before_train=True",
        "trainer.save_freq=-1",
        "trainer.project_name=rpg-verl-cpu",
    ]
    if recipe:  # the recipe's DAPO overlong shaping, scaled to the short responses (its loggers are kept)
        o.append(f"reward.reward_kwargs.overlong_buffer_cfg.len={MAX_RESPONSE_LENGTH // 3}")
    else:  # verl's default loggers include wandb
        o.append("trainer.logger=[console,file]")
    return o


def compose(overrides: list[str], source: str):
    """Compose the trainer config of ``source`` ("recipe": rpg_trainer.yaml, "verl": ppo_trainer.yaml)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if source == "recipe":
        config_dir, name = RECIPE_CONFIG_DIR, RECIPE_CONFIG_NAME
    else:
        import verl.trainer.main_ppo as main_ppo

        config_dir, name = Path(main_ppo.__file__).parent / "config", "ppo_trainer"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return hydra_compose(config_name=name, overrides=overrides)


def config_source(config: str) -> str:
    if config not in ("auto", "recipe", "verl"):
        raise ValueError(f"config must be auto, recipe or verl, got {config!r}")
    if config == "recipe" and not recipe_available():
        raise FileNotFoundError(f"config=recipe: {RECIPE_CONFIG_DIR / RECIPE_CONFIG_NAME}.yaml does not exist")
    return "recipe" if config == "recipe" or (config == "auto" and recipe_available()) else "verl"


def loss_overrides(loss: str, source: str) -> list[str]:
    """Select a policy loss by its registry name in either config."""
    if source == "recipe":  # as the recipe's launcher does: the rpg_reinforce method group for those losses
        return (["method=rpg_reinforce"] if loss.startswith("rpg_reinforce_") else []) + [f"algorithm.policy_loss={loss}"]
    o = [f"actor_rollout_ref.actor.policy_loss.loss_mode={loss}"]
    if loss.startswith("rpg_"):
        o.append("actor_rollout_ref.actor.policy_loss._target_=rpg_ext.config.RPGPolicyLossConfig")
    return o


def prepare_environment() -> None:
    """Select verl's cpu platform in this process and in every Ray worker (inherits the environment)."""
    if cpu.gpu_visible() and not cpu.requested():
        raise SystemExit(
            "rpg_ext.cpu.demo: an accelerator is visible on this host; the CPU demo is for hosts without one. "
            "Run the real launcher instead, or set VERL_PLATFORM=cpu to force the CPU platform."
        )
    if "verl" in sys.modules and not cpu.is_active():
        raise RuntimeError("rpg_ext.cpu.demo: verl was imported before VERL_PLATFORM=cpu was set")
    os.environ[cpu.PLATFORM_ENV] = cpu.PLATFORM_NAME
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run(
    user_overrides: list[str],
    *,
    base_overrides: list[str] = (),
    run_dir: Path | str | None = None,
    log_path: Path | str | None = None,
    loss: str | None = None,
    name: str | None = None,
    config: str = "auto",
    steps: int = DEFAULT_STEPS,
    prompts_per_step: int = DEFAULT_PROMPTS_PER_STEP,
    responses_per_prompt: int = DEFAULT_RESPONSES_PER_PROMPT,
    n_workers: int = 1,
    test_freq: int = 10,
) -> Path:
    """Compose, check and run verl's trainer on the CPU; returns the run directory.

    Overrides, in order: ``base_overrides`` (e.g. a launcher's preset: method, loss, beta, clips), the CPU
    overrides (:func:`cpu_overrides`: model, data, sizes, lengths, steps), ``loss``, ``user_overrides``.
    """
    prepare_environment()
    from omegaconf import OmegaConf

    from rpg_ext.cpu.task import ensure_task

    source = config_source(config)
    task_dir = ensure_task()
    overrides = list(base_overrides) + cpu_overrides(
        task_dir, steps=steps, prompts_per_step=prompts_per_step, responses_per_prompt=responses_per_prompt,
        n_workers=n_workers, test_freq=test_freq, recipe=source == "recipe",
    )
    if loss:
        overrides += loss_overrides(loss, source)
    name = name or f"cpu-{loss or 'default'}"
    run_dir = Path(run_dir or REPO / "runs" / name).resolve()
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    log_path = Path(log_path or run_dir / "logs" / f"{stamp}.jsonl").resolve()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    overrides += [
        f"trainer.experiment_name={name}",
        f"trainer.default_local_dir={run_dir / 'checkpoints'}",
        f"++ray_kwargs.ray_init.runtime_env.env_vars.{cpu.PLATFORM_ENV}={cpu.PLATFORM_NAME}",
        f"++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={log_path}",
        "++ray_kwargs.ray_init.runtime_env.env_vars.TOKENIZERS_PARALLELISM='false'",
    ]
    cfg = compose(overrides + list(user_overrides), source)
    check_config(cfg, source)
    (run_dir / "resolved_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    print(f"[rpg_ext.cpu] verl's real trainer on CPU ({source} config, policy loss "
          f"{cfg.actor_rollout_ref.actor.policy_loss.loss_mode}); run dir {run_dir}; log {log_path}", flush=True)
    start = time.time()
    run_config(cfg, source)
    print_summary(run_dir, log_path, time.time() - start)
    return run_dir


def validation_curve(log_path: Path | str) -> tuple[str | None, dict[int, float]]:
    """verl's held-out accuracy per validation step, ``val-core/<data_source>/acc/mean@<n>``, from the run's log."""
    from rpg_ext.runlogs import load_run

    series = load_run("cpu", log_path).series
    keys = sorted(k for k in series if k.startswith("val-core/") and "/acc/mean@" in k)
    return (keys[0], series[keys[0]]) if keys else (None, {})


def print_summary(run_dir: Path, log_path: Path, seconds: float) -> None:
    key, curve = validation_curve(log_path)
    lines = [f"[rpg_ext.cpu] done in {seconds:.0f} s (Ray start to end of training). Run directory {run_dir}:",
             f"  resolved config  {run_dir / 'resolved_config.yaml'}",
             f"  metrics (verl file logger, JSONL)  {log_path}"]
    if curve:
        steps = sorted(curve)
        lines.append(f"  held-out accuracy {key}: " + ", ".join(f"step {s}: {curve[s]:.3f}" for s in steps))
        lines.append(f"  from {curve[steps[0]]:.3f} to {curve[steps[-1]]:.3f} in {steps[-1] - steps[0]} steps")
    lines.append(f"  tables/figures: python scripts/make_tables.py --run {run_dir} --step last --out {run_dir / 'report'}")
    print("\n".join(lines), flush=True)


def check_config(cfg, source: str) -> None:
    """The pre-launch checks of the config's owner (the recipe's, verl's validate_config included; or verl's),
    plus what the CPU backend itself needs."""
    if cfg.actor_rollout_ref.actor.strategy != "fsdp2":
        raise ValueError("on the CPU platform the actor runs verl's FSDP2 engine: "
                         "set actor_rollout_ref.actor.strategy=fsdp2 (FSDP1 needs an accelerator)")
    if source == "recipe":
        from recipe.rpg.checks import check_config as recipe_check_config

        recipe_check_config(cfg, check_data=True)
        return
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))


def run_config(cfg, source: str) -> None:
    """Hand the checked config to the owner's trainer entry (the recipe's ``main_rpg.run``, or verl's
    ``run_ppo`` with ``TaskRunnerV1`` as ``verl.trainer.main_ppo.main`` does); shut Ray down afterwards."""
    import ray

    try:
        if source == "recipe":
            from recipe.rpg.main_rpg import run as recipe_run

            recipe_run(cfg)
        else:
            from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
            from verl.utils.device import auto_set_device

            if not cfg.trainer.use_v1:
                raise ValueError("rpg_ext.cpu runs verl's v1 trainer only: trainer.use_v1 must be True")
            auto_set_device(cfg)
            run_ppo(cfg, task_runner_class=TaskRunnerV1)
    finally:
        if ray.is_initialized():
            ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rpg_ext.cpu.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", help="policy-loss registry name, e.g. rpg_rkl, rpg_reinforce_urkl, vanilla")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"training steps (default {DEFAULT_STEPS})")
    parser.add_argument("--prompts", type=int, default=DEFAULT_PROMPTS_PER_STEP,
                        help=f"prompts per step (default {DEFAULT_PROMPTS_PER_STEP})")
    parser.add_argument("--responses", type=int, default=DEFAULT_RESPONSES_PER_PROMPT,
                        help=f"responses per prompt (default {DEFAULT_RESPONSES_PER_PROMPT})")
    parser.add_argument("--workers", type=int, default=1, help="actor ranks (FSDP world size) = rollout replicas")
    parser.add_argument("--test-freq", type=int, default=10, help="validate every N steps (and before training)")
    parser.add_argument("--run-dir", help="run directory (default runs/cpu-<loss>)")
    parser.add_argument("--log-path", help="verl file-logger JSONL (default <run-dir>/logs/<UTC timestamp>.jsonl)")
    parser.add_argument("--name", help="trainer.experiment_name (default cpu-<loss>)")
    parser.add_argument("--base-override", action="append", default=[], metavar="KEY=VALUE",
                        help="an override applied before the CPU overrides (repeatable), e.g. a launcher preset's "
                             "method=..., algorithm.policy_loss=..., algorithm.rpg.beta=...")
    parser.add_argument("--config", choices=["auto", "recipe", "verl"], default="auto",
                        help="base config: the recipe's rpg_trainer.yaml (auto, when present) or verl's ppo_trainer")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, applied last")
    args = parser.parse_args(argv)
    run(args.overrides, base_overrides=args.base_override, run_dir=args.run_dir, log_path=args.log_path,
        loss=args.loss, name=args.name, config=args.config, steps=args.steps, prompts_per_step=args.prompts,
        responses_per_prompt=args.responses, n_workers=args.workers, test_freq=args.test_freq)
    return 0


if __name__ == "__main__":
    sys.exit(main())
