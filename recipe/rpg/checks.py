"""Checks of a composed recipe config, run before anything starts (the dry run and ``main_rpg`` share them).

``check_config(cfg)`` runs what verl would run an hour into a cluster job, here and in seconds, without Ray:
verl's own ``validate_config``, the conversion of the actor, rollout and algorithm sections to verl's
dataclasses, the policy-loss registry lookup (and that the RPG plugin registered its losses), the wiring of
``algorithm.policy_loss`` / ``algorithm.rpg`` into the actor, batch sizes that must divide, token budgets, the
reward shaping settings and the data files. Every problem is a :class:`ConfigError` naming the key and value.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rpg_ext import RPG_LOSS_NAMES

ACTOR = "actor_rollout_ref.actor"
ROLLOUT = "actor_rollout_ref.rollout"
RPG_POLICY_LOSS_TARGET = "rpg_ext.config.RPGPolicyLossConfig"
RPG_ALGO_TARGET = "rpg_ext.config.RPGAlgoConfig"
#: Optimizer implementations verl 0.9.1 builds but cannot drive correctly (see README, "Limitations").
REFUSED_OPTIMIZER_IMPLS = ("schedulefree",)


class ConfigError(ValueError):
    """A recipe config that would fail (or silently do the wrong thing) once launched."""


@dataclass
class CheckedConfig:
    """What the checks established, for the dry-run summary."""

    algorithm: Any  # rpg_ext.config.RPGAlgoConfig
    actor: Any  # verl FSDPActorConfig / McoreActorConfig
    rollout: Any  # verl RolloutConfig
    uses_reference: bool  # a reference model is loaded (verl's KL, or algorithm.rpg.reference fixed / periodic)
    uses_critic: bool
    n_gpus: int
    data_files: dict[str, list[str]]
    data_checked: bool
    pi_old: str = "recomputed by the actor (one forward pass per step)"
    not_checked: list[str] = field(default_factory=list)


def _fail(msg: str) -> None:
    raise ConfigError(msg)


def registered_policy_losses() -> list[str]:
    """Names in verl's policy-loss registry as a Ray worker sees them: ``import verl`` loads the ``verl.plugins``
    entry points, whose ``rpg`` entry is ``rpg_ext.plugin``.

    The entry point must be installed and not disabled (``VERL_USE_EXTERNAL_PLUGINS``: the dry run itself imports the
    plugin, the workers would not), and the plugin module is imported here as verl imports it (a no-op when
    ``import verl`` already did; needed when this process imported ``rpg_ext.config`` before verl, which makes
    verl's own plugin import fail on the half-initialized module and hide the error).
    """
    import verl  # noqa: F401  (loads verl.plugins entry points)
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    from rpg_ext.check import plugin_disabled_reason

    reason = plugin_disabled_reason()  # what verl's processes will load, whatever this process imported
    if reason:
        _fail(reason)
    try:
        import rpg_ext.plugin  # noqa: F401
    except Exception as e:
        _fail(f"the rpg_ext plugin fails to import: {type(e).__name__}: {e} (see `python -m rpg_ext check`)")
    return sorted(POLICY_LOSS_REGISTRY)


def check_policy_loss(name: Any, registered: list[str]) -> None:
    missing_rpg = [n for n in RPG_LOSS_NAMES if n not in registered]
    if missing_rpg:
        _fail(
            f"the rpg_ext plugin did not register {missing_rpg} in verl's policy-loss registry; "
            "run `python -m rpg_ext check` to see why (verl hides plugin import errors)"
        )
    if name not in registered:
        _fail(f"unknown algorithm.policy_loss={name!r}; registered policy losses: {', '.join(registered)}")


def _resolve(cfg: DictConfig) -> DictConfig:
    """A resolved copy of ``cfg`` (interpolations evaluated once for every check below; "???" values of unused
    sections may stay)."""
    try:
        return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        _fail(f"config key {key} cannot be resolved: {type(e).__name__}: {e}".splitlines()[0])


def _to_dataclass(node: DictConfig, section: str) -> Any:
    from verl.utils.config import omega_conf_to_dataclass

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecations, Megatron layout notes
            return omega_conf_to_dataclass(node)
    except Exception as e:  # hydra wraps the dataclass' own ValueError/AssertionError
        cause = e
        while cause.__cause__ is not None:
            cause = cause.__cause__
        _fail(f"{section} is invalid: {type(cause).__name__}: {cause}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


#: Values of verl's keys that verl accepts but that reverse, stop or break training (key, rule, what it must be).
VALUE_RULES = [
    (f"{ACTOR}.optim.lr", lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    (f"{ACTOR}.optim.clip_grad", lambda v: _is_number(v) and v > 0,
     "a finite number > 0 (torch's clip_grad_norm_ with a max norm <= 0 reverses or zeroes every update)"),
    (f"{ACTOR}.optim.weight_decay", lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    (f"{ACTOR}.optim.lr_warmup_steps", lambda v: v is None or (_is_int(v) and v >= -1),
     "null or -1 (use lr_warmup_steps_ratio), or an integer >= 0"),
    (f"{ACTOR}.ppo_epochs", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("trainer.total_training_steps", lambda v: v is None or (_is_int(v) and v >= 1), "null or an integer >= 1"),
    ("trainer.resume_mode", lambda v: v in ("auto", "disable", "resume_path"), "one of auto, disable, resume_path"),
    (f"{ROLLOUT}.val_kwargs.n", lambda v: _is_int(v) and v >= 1, "an integer >= 1 (samples per held-out problem)"),
    ("data.max_prompt_length", lambda v: _is_int(v) and v >= 1, "an integer >= 1 (tokens)"),
    ("data.max_response_length", lambda v: _is_int(v) and v >= 1, "an integer >= 1 (tokens)"),
]


def _check_values(cfg: DictConfig) -> None:
    """verl's keys whose values verl passes through unchecked, and names that only fail after Ray starts."""
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY

    for key, ok, what in VALUE_RULES:
        value = OmegaConf.select(cfg, key)
        if not ok(value):
            _fail(f"{key} must be {what}, got {value!r}")
    estimator = cfg.algorithm.adv_estimator
    if estimator not in ADV_ESTIMATOR_REGISTRY:
        _fail(f"unknown algorithm.adv_estimator={estimator!r}; verl's estimators: {', '.join(sorted(ADV_ESTIMATOR_REGISTRY))}")
    rollouts = sorted({name for name, _ in _ROLLOUT_REGISTRY})
    if cfg.actor_rollout_ref.rollout.name not in rollouts:
        _fail(f"unknown {ROLLOUT}.name={cfg.actor_rollout_ref.rollout.name!r}; registered rollouts: {', '.join(rollouts)}")


def _check_typed_keys(node: Any, path: str) -> None:
    """Keys of a typed block (a node whose ``_target_`` is a dataclass) that its dataclass lacks: named here, before
    instantiation turns them into a TypeError that names a class (``+algorithm.rpg.foo=1``)."""
    if not OmegaConf.is_dict(node):
        return
    target = node.get("_target_")
    if isinstance(target, str):
        from hydra.utils import get_class

        try:
            fields = getattr(get_class(target), "__dataclass_fields__", None)
        except Exception:  # not importable: verl's own conversion reports it
            fields = None
        if fields is not None:
            unknown = sorted(k for k in node if k != "_target_" and k not in fields)
            if unknown:
                known = ", ".join(sorted(f for f in fields if not f.startswith("_")))
                _fail(f"{path} has unknown key(s) {unknown} ({target}); known: {known}")
    for key in node:
        if OmegaConf.is_dict(node._get_node(key)):
            _check_typed_keys(node[key], f"{path}.{key}")


def _check_model(cfg: DictConfig, uses_critic: bool, launching: bool) -> list[str]:
    """A model path must be a local Hugging Face folder or a hub name; when ``launching`` with ``HF_HUB_OFFLINE`` set, a
    hub name must be in the local cache (the workers could not download it). Returns what could not be checked."""
    unchecked = []
    for key in ["actor_rollout_ref.model.path"] + (["critic.model.path"] if uses_critic else []):
        path = str(OmegaConf.select(cfg, key))
        local = os.path.expanduser(path)
        if "://" in path:
            unchecked.append(f"{key}={path} (remote, copied by the workers)")
        elif path.startswith(("/", ".", "~")) or os.path.exists(local):
            if not os.path.isfile(os.path.join(local, "config.json")):
                _fail(f"{key}={path!r}: " + ("no config.json in that folder" if os.path.isdir(local) else
                                            "no such local folder") + " (a Hugging Face model folder, or a hub name "
                      "such as Qwen/Qwen3-4B)")
        elif not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", path):
            _fail(f"{key}={path!r} is neither a local folder nor a hub name of the form org/name")
        elif launching and os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
            from huggingface_hub import try_to_load_from_cache

            if not isinstance(try_to_load_from_cache(path, "config.json"), str):
                _fail(f"{key}={path!r}: HF_HUB_OFFLINE is set and the model is not in the local Hugging Face cache")
        else:
            unchecked.append(f"{key}={path} (a hub name: downloaded by the workers)")
    return unchecked


def _check_rollout_backend(cfg: DictConfig) -> None:
    """At a launch on a GPU host: verl's vLLM rollout needs vLLM; without it the launch stops here with the fix (the
    hf rollout, ``ROLLOUT=hf``), and with ``rollout.name=hf`` it says so up front. Never a silent switch."""
    from rpg_ext.cpu import gpu_visible
    from rpg_ext.rollouts import HF_ROLLOUT, vllm_rollout_check

    name = cfg.actor_rollout_ref.rollout.name
    if cfg.trainer.get("device") == "cpu" or name not in ("vllm", HF_ROLLOUT):
        return
    usable, message = vllm_rollout_check(gpu_visible())
    if name == "vllm" and message:
        _fail(message)
    if name == HF_ROLLOUT and message:
        print("[launch] vLLM is not installed on this GPU host: the hf rollout generates (Hugging Face model on the "
              "GPU, one process per replica; slower than vLLM)", flush=True)


def _check_pi_old(cfg: DictConfig) -> str:
    """Where pi_old comes from, and the combinations in which rollout log-probs cannot stand in for it."""
    corr = cfg.algorithm.get("rollout_correction") or {}
    if not corr.get("bypass_mode", False):
        return "recomputed by the actor (one forward pass per step)"
    key, rollout = "algorithm.rollout_correction", cfg.actor_rollout_ref.rollout
    if not rollout.calculate_log_probs:
        _fail(f"pi_old=rollout ({key}.bypass_mode=True) takes pi_old from the rollout's log-probs, but "
              f"{ROLLOUT}.calculate_log_probs=False asks the rollout for none: set it True (pi_old=rollout does)")
    for knob in ("rollout_is", "rollout_rs"):
        if corr.get(knob):
            _fail(f"{key}.{knob}={corr.get(knob)!r} needs pi_old recomputed by the actor (the weights / rejection compare "
                  f"pi_old with pi_rollout); with pi_old=rollout ({key}.bypass_mode=True) verl's v1 trainer skips it, so "
                  f"it would silently do nothing: use pi_old=recompute, or set {key}.{knob}=null")
    if (rollout.top_p is not None and rollout.top_p < 1) or (rollout.top_k is not None and rollout.top_k > 0):
        _fail(f"pi_old=rollout with {ROLLOUT}.top_p={rollout.top_p} / top_k={rollout.top_k}: the rollout's log-probs "
              "are those of the filtered distribution it sampled from, the trainer's are not, so w would compare two "
              "different distributions; use pi_old=recompute or unfiltered sampling (top_p=1, top_k=-1)")
    return "rollout log-probs, no recompute (algorithm.rollout_correction.bypass_mode)"


def _check_wiring(cfg: DictConfig) -> None:
    """``algorithm.policy_loss`` / ``algorithm.rpg`` must be what the actor uses (the yaml interpolates them)."""
    actor_pl = cfg.actor_rollout_ref.actor.policy_loss
    algo = cfg.algorithm
    if algo.get("_target_") != RPG_ALGO_TARGET:
        _fail(f"algorithm._target_ must be {RPG_ALGO_TARGET} (the recipe's typed algorithm block), got "
              f"{algo.get('_target_')!r}")
    if actor_pl.get("_target_") != RPG_POLICY_LOSS_TARGET:
        _fail(f"{ACTOR}.policy_loss._target_ must be {RPG_POLICY_LOSS_TARGET}, got {actor_pl.get('_target_')!r}")
    pairs = [
        ("algorithm.policy_loss", algo.policy_loss, f"{ACTOR}.policy_loss.loss_mode", actor_pl.loss_mode),
        ("algorithm.rpg.beta", algo.rpg.beta, f"{ACTOR}.policy_loss.rpg.beta", actor_pl.rpg.beta),
        ("algorithm.rpg.clip", algo.rpg.clip, f"{ACTOR}.policy_loss.rpg.clip", actor_pl.rpg.clip),
    ]
    for akey, aval, xkey, xval in pairs:
        if aval != xval:
            _fail(f"{xkey}={xval!r} disagrees with {akey}={aval!r}: set {akey} (the actor's key follows it)")


def _check_batches(cfg: DictConfig, actor: Any, n_gpus: int) -> None:
    data, rollout = cfg.data, cfg.actor_rollout_ref.rollout
    if n_gpus < 1:
        _fail(f"trainer.n_gpus_per_node x trainer.nnodes must be >= 1, got {n_gpus}")
    tbs, mini, n = data.train_batch_size, actor.ppo_mini_batch_size, rollout.n
    if tbs < 1 or mini < 1 or n < 1:
        _fail(f"batch sizes must be >= 1: data.train_batch_size={tbs}, {ACTOR}.ppo_mini_batch_size={mini}, "
              f"{ROLLOUT}.n={n}")
    if tbs % mini:
        _fail(f"data.train_batch_size ({tbs}) must be a multiple of {ACTOR}.ppo_mini_batch_size ({mini}) "
              "(prompts per optimizer step)")
    if actor.strategy == "megatron":
        m = cfg.actor_rollout_ref.actor.megatron
        model_parallel = m.tensor_model_parallel_size * m.pipeline_model_parallel_size * m.context_parallel_size
        if n_gpus % model_parallel:
            _fail(f"{n_gpus} GPUs are not divisible by Megatron TP x PP x CP = {model_parallel}")
        dp = n_gpus // model_parallel
    else:
        sp = actor.get("ulysses_sequence_parallel_size", 1) or 1
        if n_gpus % sp:
            _fail(f"{n_gpus} GPUs are not divisible by {ACTOR}.ulysses_sequence_parallel_size ({sp})")
        dp = n_gpus // sp
    if (mini * n) % dp:
        _fail(f"a mini-batch of {mini} prompts x {n} responses = {mini * n} sequences does not divide over "
              f"{dp} data-parallel ranks ({n_gpus} GPUs): change {ACTOR}.ppo_mini_batch_size, {ROLLOUT}.n "
              "or the GPU count")
    rollout_ranks = rollout.tensor_model_parallel_size * rollout.data_parallel_size * rollout.pipeline_model_parallel_size
    if n_gpus % rollout_ranks:
        _fail(f"{n_gpus} GPUs are not divisible by the rollout's TP x DP x PP = {rollout_ranks} "
              f"({ROLLOUT}.tensor_model_parallel_size={rollout.tensor_model_parallel_size})")
    seq_len = data.max_prompt_length + data.max_response_length
    if actor.use_dynamic_bsz and actor.ppo_max_token_len_per_gpu < seq_len:
        _fail(f"{ACTOR}.ppo_max_token_len_per_gpu ({actor.ppo_max_token_len_per_gpu}) is below one full sequence "
              f"(data.max_prompt_length + data.max_response_length = {seq_len})")


def _check_reward(cfg: DictConfig) -> None:
    reward = cfg.reward
    kwargs = reward.get("reward_kwargs") or {}
    buf = kwargs.get("overlong_buffer_cfg")
    if buf is not None and buf.get("enable", False):
        if reward.reward_manager.name != "dapo":
            _fail("reward.reward_kwargs.overlong_buffer_cfg.enable=True needs reward.reward_manager.name=dapo "
                  f"(verl's manager that applies it), got {reward.reward_manager.name!r}")
        max_len = cfg.data.max_response_length
        if kwargs.get("max_resp_len") != max_len:
            _fail(f"reward.reward_kwargs.max_resp_len ({kwargs.get('max_resp_len')}) must equal "
                  f"data.max_response_length ({max_len})")
        if not 0 < buf.len < max_len:
            _fail(f"reward.reward_kwargs.overlong_buffer_cfg.len must lie in (0, {max_len}), got {buf.len}")
    fg = cfg.algorithm.get("filter_groups")
    if fg is not None and fg.get("enable", False) and not fg.get("metric"):
        _fail("algorithm.filter_groups.enable=True needs algorithm.filter_groups.metric (for example acc)")


def _check_optimizer(cfg: DictConfig) -> None:
    optim = cfg.actor_rollout_ref.actor.optim
    impl, name = str(optim.get("optimizer_impl", "")), str(optim.get("optimizer", ""))
    if impl.split(".")[0] in REFUSED_OPTIMIZER_IMPLS or "schedulefree" in name.lower():
        _fail(
            f"{ACTOR}.optim optimizer_impl={impl!r} optimizer={name!r} is refused: schedule-free optimizers must be "
            "switched with optimizer.train() before each update and optimizer.eval() before evaluation, "
            "checkpointing and the weight push to the rollout; verl 0.9.1 builds the optimizer but never makes "
            "these calls (its first step would raise, and a patched run would serve the wrong weights). "
            "Use AdamW (the paper's default)."
        )


def data_file_lists(cfg: DictConfig) -> dict[str, list[str]]:
    out = {}
    for key in ("train_files", "val_files"):
        value = cfg.data[key]
        out[key] = [str(v) for v in value] if OmegaConf.is_list(value) or isinstance(value, list | tuple) else [
            str(value)
        ]
    return out


def _check_data(files: dict[str, list[str]]) -> None:
    for key, paths in files.items():
        if not paths:
            _fail(f"data.{key} is empty")
        for p in paths:
            if "://" in p:  # hdfs:// and similar: verl copies them at run time; not checkable here
                continue
            local = os.path.expanduser(p)
            if not os.path.isfile(local):
                _fail(
                    f"data file not found: data.{key} contains {p!r} (looked for {os.path.abspath(local)}). "
                    f"Create the paper's files with `python scripts/prepare_data.py --eval-from ../shared/data/eval "
                    f"--train-from PATH/TO/DAPO-Math-17k.parquet` (writes data/), pass data.{key}=..., "
                    "or skip this check with --skip-data-check"
                )


def check_config(cfg: DictConfig, check_data: bool = True, launching: bool = False) -> CheckedConfig:
    """Run every pre-launch check on a composed config; raise :class:`ConfigError` on the first problem.
    ``launching``: the run starts next (not a dry run): facts of this host that only a launch needs are checked too."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from rpg_ext.config import refuse_double_kl, resolve_params
    from rpg_ext.kl_penalty import check_kl_penalty_name

    cfg = _resolve(cfg)
    if not cfg.trainer.get("use_v1", False):
        _fail("trainer.use_v1=False: the recipe runs verl's v1 trainer (set trainer.use_v1=True); verl's legacy "
              "trainer would also replace the policy loss with its own 'bypass_mode' loss under pi_old=rollout")
    if cfg.trainer.v1.get("trainer_mode", "sync") != "sync":
        _fail(f"trainer.v1.trainer_mode={cfg.trainer.v1.trainer_mode!r}: the recipe's trainer is verl's synchronous "
              "v1 trainer (set trainer.v1.trainer_mode=sync)")
    registered = registered_policy_losses()
    _check_values(cfg)
    _check_typed_keys(cfg.algorithm, "algorithm")
    _check_typed_keys(cfg.actor_rollout_ref.actor.policy_loss, f"{ACTOR}.policy_loss")
    algorithm = _to_dataclass(cfg.algorithm, "algorithm")  # validates algorithm.rpg before the wiring compares it
    _check_wiring(cfg)
    check_policy_loss(cfg.algorithm.policy_loss, registered)
    _check_optimizer(cfg)
    actor = _to_dataclass(cfg.actor_rollout_ref.actor, ACTOR)
    rollout = _to_dataclass(cfg.actor_rollout_ref.rollout, ROLLOUT)

    loss = algorithm.policy_loss
    rpg = algorithm.rpg
    uses_reference = bool(need_reference_policy(cfg)) or rpg.uses_reference_model  # verl's KL, or algorithm.rpg
    try:
        check_kl_penalty_name(actor.kl_loss_type, f"{ACTOR}.kl_loss_type")
        if loss.startswith("rpg_"):
            resolve_params(actor, loss)  # what the loss reads on every call, and refuse_double_kl
        if rpg.kl.divergence:
            refuse_double_kl(actor, f"algorithm.rpg.kl.divergence={rpg.kl.divergence}")
    except ValueError as e:
        _fail(str(e))
    pi_old = _check_pi_old(cfg)
    if rollout.name == "hf":
        from rpg_ext.hf_rollout import validate_rollout_config

        try:
            validate_rollout_config(rollout)
        except ValueError as e:
            _fail(str(e))
    if rpg.uses_reference_model:
        lora = cfg.actor_rollout_ref.model.get("lora", {}) or {}
        if rpg.reference == "periodic" and (lora.get("rank", 0) or cfg.actor_rollout_ref.model.get("lora_rank", 0)):
            _fail("algorithm.rpg.reference=periodic cannot refresh a LoRA model's reference (the frozen base model); "
                  "use reference=fixed or full fine-tuning")

    n_gpus = cfg.trainer.n_gpus_per_node * cfg.trainer.nnodes
    _check_batches(cfg, actor, n_gpus)
    _check_reward(cfg)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # need_critic warns that a non-GAE estimator disables the critic
        uses_critic = bool(need_critic(cfg))
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the same conversion notes as above
            validate_config(cfg, use_reference_policy=uses_reference, use_critic=uses_critic)
    except (AssertionError, ValueError) as e:
        _fail(f"verl's validate_config: {e}")
    for line in printed.getvalue().splitlines():
        if line.strip() and "All configuration checks passed" not in line:
            print(line)

    files = data_file_lists(cfg)
    if check_data:
        _check_data(files)
    if launching:
        _check_rollout_backend(cfg)

    not_checked = [f"the model {m}" for m in _check_model(cfg, uses_critic, launching)]
    if actor.strategy == "megatron":
        not_checked.append(
            "Megatron itself (megatron-core / mbridge import, the model's layer and head counts against "
            "TP/PP/CP): needs the megatron extra, checked when the workers start"
        )
    if not launching:
        not_checked.append("that vLLM is installed (checked when a launch starts on a GPU host)")
    return CheckedConfig(
        algorithm=algorithm,
        actor=actor,
        rollout=rollout,
        uses_reference=uses_reference,
        uses_critic=uses_critic,
        n_gpus=n_gpus,
        data_files=files,
        data_checked=check_data,
        pi_old=pi_old,
        not_checked=not_checked,
    )
