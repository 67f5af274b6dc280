"""What a launch would run, in words: the dry run's summary, the compose error message, and what a real run needs."""

from __future__ import annotations

import re

from rpg_ext.kl_penalty import kl_in_reward_note

ACTOR = "actor_rollout_ref.actor"


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


def objective(checked) -> str:
    a = checked.algorithm
    loss, rpg = a.policy_loss, a.rpg
    if loss.startswith("rpg_"):
        return f"{loss} (beta={rpg.beta} x k of {loss.rsplit('_', 1)[1]}, inside the loss)"
    if rpg.kl.divergence:
        return f"{loss} + {rpg.kl.beta} x {rpg.kl.divergence} (importance-weighted k with log-probs of theta, old, ref)"
    return loss


def reference(checked) -> str:
    rpg = checked.algorithm.rpg
    if rpg.reference == "periodic":
        triggers = [f"every {rpg.reference_every} training steps"] if rpg.reference_every else []
        if rpg.reference_kl_target:
            triggers.append(f"when avg(actor/rpg/kl) > {rpg.reference_kl_target} (decay {rpg.reference_kl_decay})")
        return "yes: periodic, refreshed from the current policy " + " or ".join(triggers)
    if rpg.reference == "fixed":
        return "yes: fixed, the initial model"
    if checked.uses_reference:
        return "yes: the initial model, for verl's KL loss / KL in reward"
    return "none (pi_ref = the sampling policy of the step; no reference model)"


def summary(header: str, cfg, checked, run_dir: str) -> list[str]:
    """The dry run's lines: what the launch would run."""
    a, actor, r = checked.algorithm, checked.actor, checked.rollout
    d, t, optim = cfg.data, cfg.trainer, checked.actor.optim
    fg = a.filter_groups
    buf = cfg.reward.get("reward_kwargs", {}).get("overlong_buffer_cfg") or {}
    kl_loss = f"{actor.kl_loss_type}, coef {actor.kl_loss_coef}" if actor.use_kl_loss else "off"
    kl_reward = f"{a.kl_penalty}, coef {a.kl_ctrl.kl_coef}" if a.use_kl_in_reward else "off"
    sampling = (f"DAPO dynamic sampling: groups filtered on {fg.metric}, up to {fg.max_inflight_gen_batches} x "
                f"{d.train_batch_size} prompts in flight" if fg is not None and fg.enable else "no group filtering")
    lines = [
        header,
        f"  policy loss   {a.policy_loss} (algorithm.policy_loss -> {ACTOR}.policy_loss.loss_mode; registered)",
        f"  objective     {objective(checked)}; reference: {a.rpg.reference}",
        f"  rpg           beta={a.rpg.beta} clip={a.rpg.clip}" if a.policy_loss.startswith("rpg_") else
        "  rpg           not used by this loss",
        f"  clip          eps_low={actor.clip_ratio_low} eps_high={actor.clip_ratio_high} c={actor.clip_ratio_c}",
        f"  advantages    {a.adv_estimator} (norm_adv_by_std_in_grpo={a.norm_adv_by_std_in_grpo})",
        f"  KL            verl KL loss: {kl_loss}; KL in reward: {kl_reward}",
        f"  reference     {reference(checked)}; critic {'yes' if checked.uses_critic else 'none'}",
        f"  pi_old        {checked.pi_old}",
        f"  batch         {d.train_batch_size} prompts x {r.n} responses; mini-batch {actor.ppo_mini_batch_size} "
        f"prompts ({d.train_batch_size // actor.ppo_mini_batch_size} optimizer steps per step); dynamic bsz "
        + (f"{actor.ppo_max_token_len_per_gpu} tokens/GPU" if actor.use_dynamic_bsz else "off")
        + f"; loss agg {actor.loss_agg_mode}",
        f"  lengths       prompt {d.max_prompt_length}, response {d.max_response_length}; overlong buffer "
        + (f"{buf.get('len')} tokens, penalty {buf.get('penalty_factor')}" if buf.get("enable") else "off"),
        f"  sampling      {sampling}; temperature {r.temperature}",
        f"  optimizer     {optim.get('optimizer', 'AdamW')} lr={optim.lr} weight_decay={optim.weight_decay} "
        f"clip_grad={optim.clip_grad}; warm-up {optim.lr_warmup_steps} steps, then constant",
        f"  steps         {t.total_training_steps}; validation every {t.test_freq} (before training: "
        f"{t.val_before_train}), {r.val_kwargs.n} samples/problem; checkpoint every {t.save_freq}, "
        f"resume {t.resume_mode}",
        f"  GPUs          {t.nnodes} node(s) x {t.n_gpus_per_node} = {checked.n_gpus}; rollout {r.name} "
        f"TP={r.tensor_model_parallel_size}",
        f"  model         {cfg.actor_rollout_ref.model.path}",
        "  data          " + "; ".join(f"{k}: {', '.join(v)}" for k, v in checked.data_files.items())
        + ("" if checked.data_checked else "  (existence not checked)"),
        f"  run dir       {run_dir} (loggers {list(t.logger)})",
    ]
    note = kl_in_reward_note(a.kl_penalty) if a.use_kl_in_reward else None
    lines += [f"  note          {note}"] if note else []
    return lines + [f"  not checked   {item}" for item in checked.not_checked]


def real_run_needs(command: str) -> str:
    return (
        "The real run needs NVIDIA GPUs (the paper: 1 node x 8 H100 80GB), verl 0.9.1 with vLLM (`bash "
        "scripts/setup.sh` on a GPU host installs it; RPG_EXTRAS=test,vllm,megatron for Megatron), the model and the "
        "data files (`python scripts/prepare_data.py`, see the README). Check its exact config on this machine with:  "
        f"{command} --dry-run --skip-data-check"
    )
