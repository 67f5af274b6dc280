"""The recipe's launcher: a few variables -> the Hydra command of ``recipe.rpg.main_rpg``; dry run; run directory.

Called by ``scripts/launch.sh`` (which sets up the Python environment) and the presets ``scripts/run_*.sh``:

    METHOD=rpg_rkl CONTEXT=4k bash scripts/launch.sh [--dry-run] [--dump-config PATH] [--skip-data-check] [key=value ...]

Variables (environment; unset means the recipe's yaml value, which is the paper's):
    METHOD         rpg_{fkl,rkl,ufkl,urkl} | rpg_reinforce_{fkl,rkl,ufkl,urkl} | grpo | grpo_corrected | dapo
                   | reinforce_pp | reinforce_pp_baseline                      (required; set by the presets)
    POLICY_LOSS    another registered policy loss on METHOD's settings (gspo, cispo, ...)   (the method's)
    KL             RPG KL regularizer on a non-RPG loss: fkl | rkl | ufkl | urkl  (none; replaces GRPO's KL loss)
    KL_BETA        its strength                                                  (1e-4)
    REFERENCE      sampling | fixed | periodic                                   (sampling; grpo_corrected: fixed)
    REFERENCE_EVERY, REFERENCE_KL_TARGET   periodic refresh: every K steps / when avg KL > target
    MODEL          model path or hub name                                        (Qwen/Qwen3-4B)
    CONTEXT        2k | 4k | 8k: max prompt = max response = 2048 / 4096 / 8192  (8k)
    CLIP           "eps_low,eps_high"                                            (0.2,0.28; GRPO, REINFORCE++: 0.2,0.2)
    CLIP_C         dual-clip bound c                                             (10)
    BETA           RPG KL strength                                               (1e-4)
    RPG_CLIP       dual | truncate | none                                        (dual)
    LR             learning rate                                                 (1e-6; RPG-REINFORCE: 5e-7)
    OPTIM          adamw | schedulefree (refused: verl 0.9.1 cannot drive it)    (adamw)
    STEPS          training steps                                                (400)
    GPUS_PER_NODE  GPUs per node                                                 (8)
    NNODES         nodes                                                         (1)
    ROLLOUT_TP     vLLM tensor parallel size                                     (verl's default, 2)
    BACKEND        fsdp | megatron                                               (fsdp)
    DATA_DIR       folder of the default data files                              (<repo>/data)
    TRAIN_FILES    comma-separated training parquet files  (DATA_DIR/dapo-math-17k-eng.parquet)
    VAL_FILES      comma-separated validation parquet files (DATA_DIR/{aime2024,aime2025,amc23}.parquet)
    EXP_NAME       experiment name                                               (<METHOD>-<model>-<CONTEXT>[-megatron])
    PROJECT        tracking project name                                         (rpg)
    RUN_DIR        run directory                                                 (<repo>/runs/<EXP_NAME>)
    LOGGERS        extra loggers besides console and file: wandb, tensorboard    (none)

A launch writes ``<RUN_DIR>/resolved_config.yaml``, logs metrics with verl's file logger to
``<RUN_DIR>/logs/<UTC timestamp>.jsonl`` (one file per launch: verl's file logger truncates an existing file),
checkpoints to ``<RUN_DIR>/checkpoints`` (auto-resume) and, with LOGGERS=tensorboard, ``<RUN_DIR>/tensorboard``.
"""

from __future__ import annotations

import datetime
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from rpg_ext import RPG_LOSSES, RPG_REINFORCE_LOSSES

ACTOR_KEY = "actor_rollout_ref.actor"

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO, "recipe", "rpg", "config")
CONFIG_NAMES = {"fsdp": "rpg_trainer", "megatron": "rpg_megatron_trainer"}
CONTEXTS = ("2k", "4k", "8k")
#: METHOD -> (Hydra method group option, algorithm.policy_loss or None for the option's own, extra overrides).
METHODS = {
    **{name: ("rpg", name, ()) for name in RPG_LOSSES},
    **{name: ("rpg_reinforce", name, ()) for name in RPG_REINFORCE_LOSSES},
    "grpo": ("grpo", None, ()),
    # GRPO with the KL of Section 2.2 corrected: verl's vanilla loss + 1e-3 x importance-weighted k3 (urkl) against
    # the fixed initial model, instead of verl's unweighted low_var_kl loss
    "grpo_corrected": ("grpo", None, (
        f"{ACTOR_KEY}.use_kl_loss=False", "algorithm.rpg.reference=fixed",
        "algorithm.rpg.kl.divergence=urkl", "algorithm.rpg.kl.beta=1e-3",
    )),
    "dapo": ("dapo", None, ()),
    "reinforce_pp": ("reinforce_pp", None, ()),
    "reinforce_pp_baseline": ("reinforce_pp_baseline", None, ()),
}
REFERENCES = ("sampling", "fixed", "periodic")
KL_DIVERGENCES = ("fkl", "rkl", "ufkl", "urkl")
OPTIMIZERS = ("adamw", "schedulefree")
EXTRA_LOGGERS = ("wandb", "tensorboard")
DEFAULT_TRAIN_FILE = "dapo-math-17k-eng.parquet"
DEFAULT_VAL_FILES = ("aime2024.parquet", "aime2025.parquet", "amc23.parquet")

USAGE = """usage: bash scripts/run_<preset>.sh [--dry-run] [--dump-config PATH] [--skip-data-check] [key=value ...]
  --dry-run          compose and check the full config (verl's validate_config, typed sections, policy-loss
                     registry, batch sizes, data files), print a summary, exit; starts nothing
  --dump-config PATH write the fully resolved config as YAML
  --skip-data-check  do not require the data files to exist (dry run on a laptop without the data)
  key=value          any Hydra override, passed through (e.g. algorithm.rpg.beta=1e-3 trainer.total_training_steps=2)
Variables: METHOD MODEL CONTEXT CLIP CLIP_C BETA RPG_CLIP LR OPTIM STEPS GPUS_PER_NODE NNODES ROLLOUT_TP BACKEND
           DATA_DIR TRAIN_FILES VAL_FILES EXP_NAME PROJECT RUN_DIR LOGGERS POLICY_LOSS KL KL_BETA REFERENCE
           REFERENCE_EVERY REFERENCE_KL_TARGET (see recipe/rpg/launch.py and the README)"""


class LaunchError(ValueError):
    """A variable or argument of the launcher that cannot be used."""


@dataclass
class Launch:
    """One launch: the config to compose and where its outputs go."""

    config_name: str
    overrides: list[str]
    run_dir: str
    log_file: str
    tensorboard_dir: str | None
    settings: dict[str, str]
    algorithm_overrides: list[str]  # the method's algorithm: group, loss, KL, reference, clips, beta
    user_overrides: list[str]  # the command line's key=value (last in ``overrides``)


def _quote(value: str) -> str:
    """A Hydra override value that stays one string whatever characters it has."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _float(env: Mapping[str, str], name: str) -> str:
    value = env[name].strip()
    try:
        float(value)
    except ValueError:
        raise LaunchError(f"{name}={env[name]!r} is not a number") from None
    return value


def _int(env: Mapping[str, str], name: str) -> str:
    value = env[name].strip()
    if not re.fullmatch(r"[0-9]+", value) or int(value) < 1:
        raise LaunchError(f"{name}={env[name]!r} must be a positive integer")
    return value


def _files(value: str, name: str) -> list[str]:
    files = [os.path.abspath(os.path.expanduser(f.strip())) for f in value.split(",") if f.strip()]
    if not files:
        raise LaunchError(f"{name}={value!r} names no file")
    return files


def utc_timestamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def build_launch(env: Mapping[str, str], extra_overrides: list[str], timestamp: str | None = None) -> Launch:
    """Translate the launcher's variables into a config name and Hydra overrides (user overrides last)."""
    env = {k: v for k, v in env.items() if v != ""}
    method = env.get("METHOD")
    if method not in METHODS:
        raise LaunchError(f"METHOD={method!r} is not a preset; choose one of: {', '.join(METHODS)}")
    backend = env.get("BACKEND", "fsdp")
    if backend not in CONFIG_NAMES:
        raise LaunchError(f"BACKEND={backend!r}; choose one of: {', '.join(CONFIG_NAMES)}")
    context = env.get("CONTEXT", "8k")
    if context not in CONTEXTS:
        raise LaunchError(f"CONTEXT={context!r}; choose one of: {', '.join(CONTEXTS)}")
    optim = env.get("OPTIM", "adamw").lower()
    if optim not in OPTIMIZERS:
        raise LaunchError(f"OPTIM={env.get('OPTIM')!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if optim == "schedulefree":
        raise LaunchError(
            "OPTIM=schedulefree is refused: a schedule-free optimizer must be switched with optimizer.train() "
            "before each update and optimizer.eval() before evaluation, checkpointing and the weight push to the "
            "rollout. verl 0.9.1 can build it (optim.optimizer_impl=schedulefree) but never makes these calls, so "
            "its first step raises, and a run patched past that would train and serve the wrong weights. "
            "Use OPTIM=adamw (the paper's default); see the README, 'Limitations'."
        )

    group, policy_loss, method_overrides = METHODS[method]
    # The method's algorithm (group, loss, KL, reference, clips, beta): what a run without a GPU keeps.
    algo = [f"method={group}"]
    if policy_loss is not None:
        algo.append(f"algorithm.policy_loss={policy_loss}")
    algo += list(method_overrides)
    if "POLICY_LOSS" in env:  # another registered loss on the method's settings, e.g. gspo or cispo
        algo.append(f"algorithm.policy_loss={env['POLICY_LOSS']}")
    if "KL" in env:
        if env["KL"] not in KL_DIVERGENCES:
            raise LaunchError(f"KL={env['KL']!r}: the RPG KL regularizer is one of {', '.join(KL_DIVERGENCES)}")
        algo.append(f"algorithm.rpg.kl.divergence={env['KL']}")
        if method in ("grpo",):  # the regularizer replaces GRPO's own KL loss
            algo.append(f"{ACTOR_KEY}.use_kl_loss=False")
    if "KL_BETA" in env:
        algo.append(f"algorithm.rpg.kl.beta={_float(env, 'KL_BETA')}")
    if "REFERENCE" in env:
        if env["REFERENCE"] not in REFERENCES:
            raise LaunchError(f"REFERENCE={env['REFERENCE']!r}; choose one of: {', '.join(REFERENCES)}")
        algo.append(f"algorithm.rpg.reference={env['REFERENCE']}")
    if "REFERENCE_EVERY" in env:
        algo.append(f"algorithm.rpg.reference_every={_int(env, 'REFERENCE_EVERY')}")
    if "REFERENCE_KL_TARGET" in env:
        algo.append(f"algorithm.rpg.reference_kl_target={_float(env, 'REFERENCE_KL_TARGET')}")
    if "CLIP" in env:
        parts = [p.strip() for p in env["CLIP"].split(",")]
        if len(parts) != 2:
            raise LaunchError(f"CLIP={env['CLIP']!r} must be 'eps_low,eps_high', for example 0.2,0.28")
        low, high = (_float({"CLIP": p}, "CLIP") for p in parts)
        algo += [f"actor_rollout_ref.actor.clip_ratio_low={low}", f"actor_rollout_ref.actor.clip_ratio_high={high}"]
    if "CLIP_C" in env:
        algo.append(f"actor_rollout_ref.actor.clip_ratio_c={_float(env, 'CLIP_C')}")
    if "BETA" in env:
        algo.append(f"algorithm.rpg.beta={_float(env, 'BETA')}")
    if "RPG_CLIP" in env:
        algo.append(f"algorithm.rpg.clip={env['RPG_CLIP']}")
    ov = [*algo[:1], f"context={context}", *algo[1:]]
    if "MODEL" in env:
        ov.append(f"actor_rollout_ref.model.path={_quote(env['MODEL'])}")
    if "LR" in env:
        ov.append(f"actor_rollout_ref.actor.optim.lr={_float(env, 'LR')}")
    if "STEPS" in env:
        ov.append(f"trainer.total_training_steps={_int(env, 'STEPS')}")
    if "GPUS_PER_NODE" in env:
        ov.append(f"trainer.n_gpus_per_node={_int(env, 'GPUS_PER_NODE')}")
    if "NNODES" in env:
        ov.append(f"trainer.nnodes={_int(env, 'NNODES')}")
    if "ROLLOUT_TP" in env:
        ov.append(f"actor_rollout_ref.rollout.tensor_model_parallel_size={_int(env, 'ROLLOUT_TP')}")

    data_dir = os.path.abspath(os.path.expanduser(env.get("DATA_DIR", os.path.join(REPO, "data"))))
    train = _files(env["TRAIN_FILES"], "TRAIN_FILES") if "TRAIN_FILES" in env else [
        os.path.join(data_dir, DEFAULT_TRAIN_FILE)
    ]
    val = _files(env["VAL_FILES"], "VAL_FILES") if "VAL_FILES" in env else [
        os.path.join(data_dir, f) for f in DEFAULT_VAL_FILES
    ]
    ov.append("data.train_files=[" + ",".join(_quote(f) for f in train) + "]")
    ov.append("data.val_files=[" + ",".join(_quote(f) for f in val) + "]")

    model_tag = os.path.basename(os.path.normpath(env.get("MODEL", "Qwen/Qwen3-4B"))).lower()
    variant = "".join(f"-{env[k]}" for k in ("POLICY_LOSS", "KL") if k in env)  # e.g. grpo-gspo-urkl
    exp_name = env.get("EXP_NAME") or (
        f"{method}{variant}-{model_tag}-{context}" + ("-megatron" if backend == "megatron" else "")
    )
    run_dir = os.path.abspath(os.path.expanduser(env.get("RUN_DIR", os.path.join(REPO, "runs", exp_name))))
    log_file = os.path.join(run_dir, "logs", f"{timestamp or utc_timestamp()}.jsonl")
    loggers = ["console", "file"]
    for name in (x.strip().lower() for x in env.get("LOGGERS", "").split(",")):
        if not name or name in loggers:
            continue
        if name not in EXTRA_LOGGERS:
            raise LaunchError(f"LOGGERS contains {name!r}; extra loggers: {', '.join(EXTRA_LOGGERS)}")
        loggers.append(name)
    tensorboard_dir = os.path.join(run_dir, "tensorboard") if "tensorboard" in loggers else None
    ov.append(f"trainer.experiment_name={_quote(exp_name)}")
    if "PROJECT" in env:
        ov.append(f"trainer.project_name={_quote(env['PROJECT'])}")
    ov.append("trainer.logger=[" + ",".join(loggers) + "]")
    ov.append(f"trainer.default_local_dir={_quote(os.path.join(run_dir, 'checkpoints'))}")
    # Every Ray worker (the driver-side TaskRunner that owns the loggers may run on any node) gets the paths.
    env_vars = "ray_kwargs.ray_init.runtime_env.env_vars"
    ov.append(f"+{env_vars}.VERL_FILE_LOGGER_PATH={_quote(log_file)}")
    if tensorboard_dir:
        ov.append(f"+{env_vars}.TENSORBOARD_DIR={_quote(tensorboard_dir)}")

    settings = dict(method=method, backend=backend, context=context, optim=optim, variant=variant)
    if "STEPS" in env:
        settings["steps"] = env["STEPS"]
    if "RUN_DIR" in env:
        settings["run_dir"] = run_dir
    return Launch(CONFIG_NAMES[backend], ov + list(extra_overrides), run_dir, log_file, tensorboard_dir, settings,
                  algo, list(extra_overrides))


def compose(config_name: str, overrides: list[str]):
    """The config ``python -m recipe.rpg.main_rpg --config-name <name> <overrides>`` runs with."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return hydra_compose(config_name=config_name, overrides=overrides)


def compose_error_message(e: Exception) -> str:
    msg = str(e).strip()
    cause = e.__cause__
    while cause is not None:  # Hydra's "Could not override 'x'" hides the "Key 'x' is not in struct" part
        msg += f"\n  {str(cause).strip().splitlines()[0]}"
        cause = cause.__cause__
    found = re.search(r"Could not override '([^']+)'", msg)
    if "not in struct" in msg and found:
        return (f"unknown config key {found.group(1)!r} (check the spelling; a genuinely new key needs a leading "
                f"'+'):\n  {msg}")
    return f"config composition failed: {msg}"


def summary(launch: Launch, cfg, checked) -> list[str]:
    """A short human summary of what the launch would run."""
    a, actor, r = checked.algorithm, checked.actor, checked.rollout
    loss = a.policy_loss
    d, t = cfg.data, cfg.trainer
    fg = a.filter_groups
    buf = cfg.reward.get("reward_kwargs", {}).get("overlong_buffer_cfg") or {}
    rpg = a.rpg
    if rpg.reference == "periodic":
        triggers = [f"every {rpg.reference_every} steps"] if rpg.reference_every else []
        if rpg.reference_kl_target:
            triggers.append(f"when avg(actor/rpg/kl) > {rpg.reference_kl_target} (decay {rpg.reference_kl_decay})")
        reference = "yes: periodic, refreshed from the current policy " + " or ".join(triggers)
    elif rpg.reference == "fixed":
        reference = "yes: fixed, the initial model"
    elif checked.uses_reference:
        reference = "yes: the initial model, for verl's KL loss / KL in reward"
    else:
        reference = "none (pi_ref = the sampling policy of the step; no reference model)"
    if loss.startswith("rpg_"):
        objective = f"{loss} (beta={rpg.beta} x k of {loss.rsplit('_', 1)[1]}, inside the loss)"
    elif rpg.kl.divergence:
        objective = (f"{loss} + {rpg.kl.beta} x {rpg.kl.divergence} (importance-weighted k with log-probs of theta, "
                     "old, ref)")
    else:
        objective = f"{loss}"
    kl = []
    kl.append(f"verl KL loss: {'%s, coef %s' % (actor.kl_loss_type, actor.kl_loss_coef) if actor.use_kl_loss else 'off'}")
    kl.append(f"KL in reward: {'%s, coef %s' % (a.kl_penalty, a.kl_ctrl.kl_coef) if a.use_kl_in_reward else 'off'}")
    steps_per_batch = d.train_batch_size // actor.ppo_mini_batch_size
    optim = actor.optim
    warm = f"warm-up {optim.lr_warmup_steps} steps, then constant"
    lines = [
        f"recipe dry run OK: {launch.settings['method']} ({launch.config_name}, backend {actor.strategy}, "
        f"context {launch.settings['context']})",
        f"  policy loss   {loss} (algorithm.policy_loss -> {ACTOR_KEY}.policy_loss.loss_mode; registered)",
        f"  objective     {objective}; reference: {rpg.reference}",
        f"  rpg           beta={a.rpg.beta} clip={a.rpg.clip}" if loss.startswith("rpg_") else
        "  rpg           not used by this loss",
        f"  clip          eps_low={actor.clip_ratio_low} eps_high={actor.clip_ratio_high} c={actor.clip_ratio_c}",
        f"  advantages    {a.adv_estimator} (norm_adv_by_std_in_grpo={a.norm_adv_by_std_in_grpo})",
        f"  KL            " + "; ".join(kl),
        f"  reference     {reference}; critic {'yes' if checked.uses_critic else 'none'}",
        f"  batch         {d.train_batch_size} prompts x {r.n} responses; mini-batch {actor.ppo_mini_batch_size} "
        f"prompts ({steps_per_batch} optimizer steps per step); dynamic bsz "
        + (f"{actor.ppo_max_token_len_per_gpu} tokens/GPU" if actor.use_dynamic_bsz else "off")
        + f"; loss agg {actor.loss_agg_mode}",
        f"  lengths       prompt {d.max_prompt_length}, response {d.max_response_length}; overlong buffer "
        + (f"{buf.get('len')} tokens, penalty {buf.get('penalty_factor')}" if buf.get("enable") else "off"),
        "  sampling      "
        + (f"DAPO dynamic sampling: groups filtered on {fg.metric}, up to {fg.max_inflight_gen_batches} x "
           f"{d.train_batch_size} prompts in flight" if fg is not None and fg.enable else "no group filtering")
        + f"; temperature {r.temperature}",
        f"  optimizer     {optim.get('optimizer', 'AdamW')} lr={optim.lr} weight_decay={optim.weight_decay} "
        f"clip_grad={optim.clip_grad}; {warm}",
        f"  steps         {t.total_training_steps}; validation every {t.test_freq} (before training: "
        f"{t.val_before_train}), {r.val_kwargs.n} samples/problem; checkpoint every {t.save_freq}, "
        f"resume {t.resume_mode}",
        f"  GPUs          {t.nnodes} node(s) x {t.n_gpus_per_node} = {checked.n_gpus}; rollout {r.name} "
        f"TP={r.tensor_model_parallel_size}",
        f"  model         {cfg.actor_rollout_ref.model.path}",
        "  data          "
        + "; ".join(f"{k}: {', '.join(v)}" for k, v in checked.data_files.items())
        + ("" if checked.data_checked else "  (existence not checked: --skip-data-check)"),
        f"  run dir       {launch.run_dir} (log {os.path.relpath(launch.log_file, launch.run_dir)}, "
        f"loggers {list(t.logger)})",
    ]
    from rpg_ext.kl_penalty import kl_in_reward_note

    note = kl_in_reward_note(a.kl_penalty) if a.use_kl_in_reward else None
    if note:
        lines.append(f"  note          {note}")
    lines += [f"  not checked   {item}" for item in checked.not_checked]
    return lines


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install counts as no GPU; the message says what is needed
        return 0


def real_run_needs(launch: Launch, cfg, script: str) -> str:
    t = cfg.trainer
    return (
        f"The real run of {launch.settings['method']} needs {t.nnodes} node(s) x {t.n_gpus_per_node} NVIDIA GPUs "
        "(the paper used 8 x H100 80GB), verl 0.9.1 with vLLM (`bash scripts/setup.sh` on a GPU host installs it"
        + (", RPG_EXTRAS=test,vllm,megatron for Megatron" if launch.settings["backend"] == "megatron" else "")
        + f"), the model ({cfg.actor_rollout_ref.model.path}) and the data files "
        "(`python scripts/prepare_data.py`, see the README). "
        f"Check that exact command here with:  bash {script} --dry-run --skip-data-check [overrides ...]"
    )


def cpu_run_paths(launch: Launch) -> tuple[str, str]:
    """The experiment name and run directory of a launch on a machine without a GPU."""
    name = f"cpu-{launch.settings['method']}{launch.settings.get('variant', '')}"
    return name, launch.settings.get("run_dir") or os.path.join(REPO, "runs", name)


def run_without_gpu(launch: Launch, cfg, script: str) -> int:
    """What a launch does on a machine without a GPU: verl's real trainer on the CPU (``rpg_ext.cpu.demo``), on the
    embedded tiny model and task, with this launch's algorithm (method, loss, KL, reference, clips, beta) and the
    command line's overrides; then ``scripts/make_tables.py`` on the run. Returns the exit status."""
    import subprocess

    from rpg_ext.cpu import demo

    name, run_dir = cpu_run_paths(launch)
    steps = launch.settings.get("steps", str(demo.DEFAULT_STEPS))
    log_file = os.path.join(run_dir, "logs", os.path.basename(launch.log_file))
    print(
        f"[launch] No GPU is visible: running verl's real trainer on this CPU instead, on the embedded tiny model "
        f"and task (a 148k-parameter Qwen2, one-digit additions in the paper's 'Answer:' format), with "
        f"{launch.settings['method']}'s algorithm ({' '.join(launch.algorithm_overrides)}) scaled down to "
        f"{demo.DEFAULT_PROMPTS_PER_STEP} prompts x {demo.DEFAULT_RESPONSES_PER_PROMPT} responses, responses of "
        f"<= {demo.MAX_RESPONSE_LENGTH} tokens and {steps} steps (STEPS=N changes it; the default takes ~7 minutes "
        f"on 2 cores). Run dir {run_dir}.",
        flush=True,
    )
    cmd = [sys.executable, "-m", "rpg_ext.cpu.demo", "--config", "recipe", "--name", name, "--run-dir", run_dir,
           "--log-path", log_file, "--steps", steps,
           *(f"--base-override={o}" for o in launch.algorithm_overrides), "--", *launch.user_overrides]
    rc = subprocess.call(cmd, cwd=REPO)
    if rc != 0:
        print(f"[launch] the CPU run failed (exit {rc}); its output is above, its metrics in {log_file}",
              file=sys.stderr)
        return rc
    report = os.path.join(run_dir, "report")
    tables = subprocess.call([sys.executable, os.path.join(REPO, "scripts", "make_tables.py"), "--run",
                              f"{name}={run_dir}", "--step", "last", "--out", report], cwd=REPO)
    print("\n".join([
        f"[launch] CPU run of {launch.settings['method']} done. Run directory {run_dir}:",
        f"  metrics (verl file logger)  {log_file}",
        f"  resolved config             {os.path.join(run_dir, 'resolved_config.yaml')}",
        f"  table and figures           {report}/table.md, table.csv, table.tex, *.png, *.pdf"
        if tables == 0 else f"  table and figures           not written: make_tables.py exited {tables} (above)",
        real_run_needs(launch, cfg, script),
    ]), flush=True)
    return tables


def start(launch: Launch, cfg) -> None:
    """Write the run directory and hand over to ``python -m recipe.rpg.main_rpg`` (does not return)."""
    from omegaconf import OmegaConf

    os.makedirs(os.path.join(launch.run_dir, "logs"), exist_ok=True)
    os.makedirs(os.path.join(launch.run_dir, "checkpoints"), exist_ok=True)
    if launch.tensorboard_dir:
        os.makedirs(launch.tensorboard_dir, exist_ok=True)
    OmegaConf.save(cfg, os.path.join(launch.run_dir, "resolved_config.yaml"), resolve=True)
    os.environ["VERL_FILE_LOGGER_PATH"] = launch.log_file
    if launch.tensorboard_dir:
        os.environ["TENSORBOARD_DIR"] = launch.tensorboard_dir
    stamp = os.path.splitext(os.path.basename(launch.log_file))[0]
    argv = [sys.executable, "-m", "recipe.rpg.main_rpg", "--config-name", launch.config_name, *launch.overrides,
            f"hydra.run.dir={_quote(os.path.join(launch.run_dir, 'hydra', stamp))}"]
    print(f"[launch] run dir {launch.run_dir}; metrics -> {launch.log_file}", flush=True)
    os.execv(sys.executable, argv)


def parse_args(argv: list[str]) -> tuple[dict, list[str]]:
    opts = {"dry_run": False, "dump_config": None, "check_data": True, "help": False}
    overrides = []
    it = iter(argv)
    for arg in it:
        if arg == "--dry-run":
            opts["dry_run"] = True
        elif arg == "--skip-data-check":
            opts["check_data"] = False
        elif arg == "--dump-config" or arg.startswith("--dump-config="):
            path = arg.partition("=")[2] if "=" in arg else next(it, None)
            if not path:
                raise LaunchError("--dump-config needs a path")
            opts["dump_config"] = path
        elif arg in ("-h", "--help"):
            opts["help"] = True
        elif arg.startswith("-") or "=" not in arg:
            raise LaunchError(f"unknown argument {arg!r}: expected --dry-run, --dump-config PATH, "
                              "--skip-data-check or Hydra key=value overrides")
        else:
            overrides.append(arg)
    return opts, overrides


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    script = env.get("RPG_PRESET_SCRIPT") or "scripts/launch.sh"
    try:
        opts, overrides = parse_args(sys.argv[1:] if argv is None else argv)
        if opts["help"]:
            print(USAGE)
            return 0
        launch = build_launch(env, overrides)
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from omegaconf import OmegaConf

    from recipe.rpg.checks import ConfigError, check_config

    try:
        cfg = compose(launch.config_name, launch.overrides)
    except Exception as e:  # hydra's OverrideParseException / ConfigCompositionException / MissingConfigException
        print(f"error: {compose_error_message(e)}", file=sys.stderr)
        return 2
    no_gpu = not opts["dry_run"] and gpu_count() == 0  # the run goes to the CPU trainer: no data files needed
    try:
        if opts["dump_config"]:
            path = os.path.abspath(opts["dump_config"])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            OmegaConf.save(cfg, path, resolve=True)
        checked = check_config(cfg, check_data=opts["check_data"] and not no_gpu)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # resolution errors while dumping
        print(f"error: the config cannot be resolved: {type(e).__name__}: {e}", file=sys.stderr)
        return 2

    if opts["dry_run"]:
        print("\n".join(summary(launch, cfg, checked)))
        if opts["dump_config"]:
            print(f"  config dumped {os.path.abspath(opts['dump_config'])}")
        return 0
    if no_gpu:
        return run_without_gpu(launch, cfg, script)
    if cfg.trainer.nnodes == 1 and gpu_count() < cfg.trainer.n_gpus_per_node:
        print(f"error: trainer.n_gpus_per_node={cfg.trainer.n_gpus_per_node} but this node has {gpu_count()} GPUs "
              "(set GPUS_PER_NODE)", file=sys.stderr)
        return 2
    start(launch, cfg)
    return 0  # not reached: start() replaces this process


if __name__ == "__main__":
    sys.exit(main())
