"""The recipe's config, composed in-process exactly as the launchers compose it (Hydra compose API).

Every preset x context length x backend passes the pre-launch checks, and its resolved config carries the
paper's values. The expected values are typed here from the paper (Appendix H, Section 5) and issue 3, not read
back from the recipe's yaml.
"""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from recipe.rpg import launch
from recipe.rpg.main_rpg import compose
from recipe.rpg.checks import ConfigError, check_config
from rpg_ext import RPG_LOSS_NAMES
from rpg_ext.config import RPGAlgoConfig, RPGAlgorithmConfig, RPGPolicyLossConfig

PRESETS = {
    # script -> its method config (recipe/rpg/config/method/<METHOD>.yaml)
    "run_rpg_fkl.sh": "rpg_fkl",
    "run_rpg_rkl.sh": "rpg_rkl",
    "run_rpg_ufkl.sh": "rpg_ufkl",
    "run_rpg_urkl.sh": "rpg_urkl",
    "run_rpg_reinforce_fkl.sh": "rpg_reinforce_fkl",
    "run_rpg_reinforce_rkl.sh": "rpg_reinforce_rkl",
    "run_rpg_reinforce_ufkl.sh": "rpg_reinforce_ufkl",
    "run_rpg_reinforce_urkl.sh": "rpg_reinforce_urkl",
    "run_grpo.sh": "grpo",
    "run_grpo_corrected.sh": "grpo_corrected",
    "run_dapo.sh": "dapo",
    "run_reinforce_pp.sh": "reinforce_pp",
    "run_reinforce_pp_baseline.sh": "reinforce_pp_baseline",
}
# Appendix H: max prompt = max response = 2048 / 4096 / 8192; overlong buffer = a quarter of the response length.
CONTEXT_TOKENS = {"2k": 2048, "4k": 4096, "8k": 8192}
OVERLONG_BUFFER = {"2k": 512, "4k": 1024, "8k": 2048}


def paper_values(method: str, context: str) -> dict:
    """The issue's / paper's settings of one run, as {dotted key: value}."""
    L = CONTEXT_TOKENS[context]
    v = {
        "actor_rollout_ref.model.path": "Qwen/Qwen3-4B",
        "data.train_batch_size": 512,
        "actor_rollout_ref.rollout.n": 16,
        "actor_rollout_ref.rollout.temperature": 1.0,
        "actor_rollout_ref.rollout.name": "vllm",
        "actor_rollout_ref.actor.ppo_mini_batch_size": 32,
        "actor_rollout_ref.actor.use_dynamic_bsz": True,
        "actor_rollout_ref.actor.loss_agg_mode": "token-mean",
        "actor_rollout_ref.actor.optim.weight_decay": 0.1,
        "actor_rollout_ref.actor.optim.clip_grad": 1.0,
        "actor_rollout_ref.actor.optim.lr_warmup_steps": 10,
        "data.max_prompt_length": L,
        "data.max_response_length": L,
        "actor_rollout_ref.rollout.prompt_length": L,
        "actor_rollout_ref.rollout.response_length": L,
        "reward.reward_manager.name": "dapo",
        "reward.reward_kwargs.max_resp_len": L,
        "reward.reward_kwargs.overlong_buffer_cfg.enable": True,
        "reward.reward_kwargs.overlong_buffer_cfg.len": OVERLONG_BUFFER[context],
        "reward.reward_kwargs.overlong_buffer_cfg.penalty_factor": 1.0,
        "reward.custom_reward_function.name": "compute_score",
        "algorithm.filter_groups.enable": True,
        "algorithm.filter_groups.metric": "acc",
        "algorithm.filter_groups.max_inflight_gen_batches": 3,
        "trainer.total_training_steps": 400,
        "trainer.test_freq": 10,
        "trainer.val_before_train": True,
        "trainer.save_freq": 20,
        "trainer.resume_mode": "auto",
        "trainer.use_v1": True,
        "trainer.n_gpus_per_node": 8,
        "trainer.nnodes": 1,
        "actor_rollout_ref.rollout.val_kwargs.n": 32,
        "actor_rollout_ref.rollout.val_kwargs.do_sample": True,
    }
    if method.startswith("rpg_"):
        v.update({
            "algorithm.policy_loss": method,
            "actor_rollout_ref.actor.policy_loss.loss_mode": method,
            "actor_rollout_ref.actor.policy_loss.rpg.beta": 1e-4,
            "actor_rollout_ref.actor.policy_loss.rpg.clip": "dual",
            "algorithm.adv_estimator": "grpo",
            "algorithm.norm_adv_by_std_in_grpo": False,
            "actor_rollout_ref.actor.clip_ratio_low": 0.2,
            "actor_rollout_ref.actor.clip_ratio_high": 0.28,
            "actor_rollout_ref.actor.clip_ratio_c": 10.0,
            "actor_rollout_ref.actor.use_kl_loss": False,
            "algorithm.use_kl_in_reward": False,
            "actor_rollout_ref.actor.optim.lr": 5e-7 if method.startswith("rpg_reinforce_") else 1e-6,
        })
    elif method in ("grpo", "grpo_corrected"):
        v.update({
            "actor_rollout_ref.actor.policy_loss.loss_mode": "vanilla",
            "algorithm.adv_estimator": "grpo",
            "algorithm.norm_adv_by_std_in_grpo": True,
            "actor_rollout_ref.actor.clip_ratio_low": 0.2,
            "actor_rollout_ref.actor.clip_ratio_high": 0.2,
            "actor_rollout_ref.actor.use_kl_loss": True,
            "actor_rollout_ref.actor.kl_loss_type": "low_var_kl",
            "actor_rollout_ref.actor.kl_loss_coef": 1e-3,
            "algorithm.use_kl_in_reward": False,
            "actor_rollout_ref.actor.optim.lr": 1e-6,
        })
        if method == "grpo_corrected":  # Section 2.2: GRPO's KL importance-weighted (urkl), fixed initial reference
            v.update({
                "actor_rollout_ref.actor.use_kl_loss": False,
                "algorithm.rpg.kl.divergence": "urkl",
                "algorithm.rpg.kl.beta": 1e-3,
                "algorithm.rpg.reference": "fixed",
            })
    elif method == "dapo":
        v.update({
            "actor_rollout_ref.actor.policy_loss.loss_mode": "vanilla",
            "algorithm.adv_estimator": "grpo",
            "algorithm.norm_adv_by_std_in_grpo": True,
            "actor_rollout_ref.actor.clip_ratio_low": 0.2,
            "actor_rollout_ref.actor.clip_ratio_high": 0.28,
            "actor_rollout_ref.actor.clip_ratio_c": 10.0,
            "actor_rollout_ref.actor.use_kl_loss": False,
            "algorithm.use_kl_in_reward": False,
            "actor_rollout_ref.actor.optim.lr": 1e-6,
        })
    else:  # REINFORCE++ / REINFORCE++-baseline: verl's estimators with verl's token-level KL in the reward
        v.update({
            "actor_rollout_ref.actor.policy_loss.loss_mode": "vanilla",
            "algorithm.adv_estimator": {"reinforce_pp": "reinforce_plus_plus",
                                        "reinforce_pp_baseline": "reinforce_plus_plus_baseline"}[method],
            "algorithm.use_kl_in_reward": True,
            "actor_rollout_ref.actor.use_kl_loss": False,
            "actor_rollout_ref.actor.optim.lr": 1e-6,
        })
    return v


def uses_reference(method: str) -> bool:
    return method in ("grpo", "grpo_corrected", "reinforce_pp", "reinforce_pp_baseline")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A DATA_DIR with the default file names (the checks only require that they exist)."""
    d = tmp_path_factory.mktemp("data")
    for name in ("dapo-math-17k-eng.parquet", "aime2024.parquet", "aime2025.parquet", "amc23.parquet"):
        (d / name).write_bytes(b"")
    return d


def compose_preset(env: dict, overrides=()):
    """The launcher's one compose (as on a GPU host): the Launch (run paths) and its config."""
    spec = launch.prepare(list(overrides), env, on_cpu=False)
    return spec, spec.cfg


def assert_values(cfg, expected: dict):
    wrong = {}
    for key, want in expected.items():
        got = OmegaConf.select(cfg, key, default="<missing>")  # the value, interpolations resolved
        if isinstance(want, float) and isinstance(got, int | float) and not isinstance(got, bool):
            ok = abs(got - want) <= 1e-12 * max(1.0, abs(want))
        else:
            ok = got == want and type(got) is type(want)
        if not ok:
            wrong[key] = (got, want)
    assert not wrong, "key: (config, paper) -> " + repr(wrong)


@pytest.mark.parametrize("backend", ["fsdp", "megatron"])
@pytest.mark.parametrize("context", ["2k", "4k", "8k"])
@pytest.mark.parametrize("script", sorted(PRESETS))
def test_every_preset_dry_runs_with_the_paper_values(script, context, backend, data_dir):
    method = PRESETS[script]
    spec, cfg = compose_preset({"METHOD": method, "CONTEXT": context, "BACKEND": backend, "DATA_DIR": str(data_dir)})
    checked = check_config(cfg, check_data=True)
    assert_values(cfg, paper_values(method, context))
    # backend
    assert cfg.actor_rollout_ref.actor.strategy == backend
    optim = cfg.actor_rollout_ref.actor.optim
    if backend == "fsdp":  # torch AdamW, constant after warm-up
        assert (optim.optimizer_impl, optim.optimizer, optim.lr_scheduler_type) == ("torch.optim", "AdamW", "constant")
    else:  # Megatron's adam (decoupled weight decay), constant after warm-up
        assert (optim.optimizer, optim.lr_decay_style) == ("adam", "constant")
    # reference model exactly when the baseline's KL is against the initial model
    assert checked.uses_reference is uses_reference(method)
    assert checked.uses_critic is False
    # typed sections
    assert isinstance(checked.algorithm, RPGAlgoConfig)
    assert isinstance(checked.actor.policy_loss, RPGPolicyLossConfig)
    assert checked.actor.policy_loss.loss_mode == checked.algorithm.policy_loss
    # the run directory convention: named from the resolved config, one log per launch
    assert spec.run_dir.name == cfg.trainer.experiment_name
    assert spec.run_dir.name.startswith(method + ("" if method.startswith("rpg_") else "-vanilla"))
    assert spec.run_dir.name.endswith(f"qwen3-4b-{context}" + ("-megatron" if backend == "megatron" else ""))
    assert spec.log_path.parent == spec.run_dir / "logs" and spec.log_path.suffix == ".jsonl"
    assert cfg.trainer.default_local_dir == str(spec.run_dir / "checkpoints")
    assert cfg.ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH == str(spec.log_path)
    assert list(cfg.trainer.logger) == ["console", "file"]
    assert list(cfg.data.val_files) == [str(data_dir / f) for f in ("aime2024.parquet", "aime2025.parquet",
                                                                    "amc23.parquet")]


@pytest.mark.parametrize("name", RPG_LOSS_NAMES)
def test_algorithm_policy_loss_is_what_the_actor_uses(name):
    """``algorithm.policy_loss=<name>`` (no '+'), composed like ``python -m recipe.rpg.main_rpg``."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.trainer.ppo.utils import need_reference_policy

    import rpg_ext.losses

    cfg, _ = compose("rpg_trainer", [f"algorithm.policy_loss={name}", "algorithm.rpg.beta=0.003"])
    checked = check_config(cfg, check_data=False)
    actor = checked.actor
    assert actor.policy_loss.loss_mode == name
    assert actor.policy_loss.rpg.beta == 0.003 and actor.policy_loss.rpg.clip == "dual"
    # no reference model, no verl KL on top of the loss's own
    assert need_reference_policy(cfg) is False and checked.uses_reference is False
    assert actor.use_kl_loss is False and checked.algorithm.use_kl_in_reward is False
    # the registry resolves the name to the RPG loss (the plugin's function), not a verl built-in
    fn = get_policy_loss_fn(actor.policy_loss.loss_mode)
    assert fn.__module__ == rpg_ext.losses.__name__


def test_a_verl_builtin_loss_is_selected_the_same_way():
    cfg, _ = compose("rpg_trainer", ["algorithm.policy_loss=gspo"])
    checked = check_config(cfg, check_data=False)
    assert checked.actor.policy_loss.loss_mode == "gspo"


def test_grpo_clip_is_one_variable(data_dir):
    _, cfg = compose_preset({"METHOD": "grpo", "CLIP": "0.1,0.1", "DATA_DIR": str(data_dir)})
    check_config(cfg)
    assert cfg.actor_rollout_ref.actor.clip_ratio_low == 0.1 and cfg.actor_rollout_ref.actor.clip_ratio_high == 0.1


def test_launcher_variables_reach_the_config(data_dir, tmp_path):
    env = {
        "METHOD": "rpg_reinforce_urkl", "MODEL": "Qwen/Qwen2.5-7B-Instruct", "CONTEXT": "4k", "BETA": "1e-3",
        "RPG_CLIP": "truncate", "LR": "3e-7", "STEPS": "7", "GPUS_PER_NODE": "4", "NNODES": "2", "ROLLOUT_TP": "1",
        "CLIP": "0.1,0.1", "CLIP_C": "5", "RUN_DIR": str(tmp_path / "run"),
        "DATA_DIR": str(data_dir), "EXP_NAME": "my exp", "PROJECT": "p",
    }
    spec, cfg = compose_preset(env, ["trainer.save_freq=5", "trainer.logger=[console,tensorboard,wandb]"])
    checked = check_config(cfg)
    assert_values(cfg, {
        "actor_rollout_ref.model.path": "Qwen/Qwen2.5-7B-Instruct",
        "algorithm.policy_loss": "rpg_reinforce_urkl",
        "actor_rollout_ref.actor.policy_loss.rpg.beta": 1e-3,
        "actor_rollout_ref.actor.policy_loss.rpg.clip": "truncate",
        "actor_rollout_ref.actor.optim.lr": 3e-7,
        "actor_rollout_ref.actor.clip_ratio_low": 0.1,
        "actor_rollout_ref.actor.clip_ratio_high": 0.1,
        "actor_rollout_ref.actor.clip_ratio_c": 5.0,
        "trainer.total_training_steps": 7,
        "trainer.n_gpus_per_node": 4,
        "trainer.nnodes": 2,
        "actor_rollout_ref.rollout.tensor_model_parallel_size": 1,
        "data.max_response_length": 4096,
        "trainer.experiment_name": "my exp",
        "trainer.project_name": "p",
        "trainer.save_freq": 5,
        "ray_kwargs.ray_init.runtime_env.env_vars.TENSORBOARD_DIR": str(tmp_path / "run" / "tensorboard"),
    })
    assert list(cfg.trainer.logger) == ["console", "tensorboard", "wandb", "file"]  # file: the launcher adds it
    assert checked.n_gpus == 8 and spec.run_dir == tmp_path / "run"


def test_typed_algorithm_block():
    algo = RPGAlgoConfig(policy_loss="rpg_reinforce_ufkl", rpg={"beta": 0.5, "clip": "truncate"})
    assert algo.rpg == RPGAlgorithmConfig(beta=0.5, clip="truncate")
    with pytest.raises(ValueError, match=r"algorithm.rpg has unknown keys \['betta'\]"):
        RPGAlgoConfig(policy_loss="rpg_rkl", rpg={"betta": 1.0})
    with pytest.raises(ValueError, match="algorithm.rpg.beta"):
        RPGAlgoConfig(policy_loss="rpg_rkl", rpg={"beta": float("nan")})
    with pytest.raises(ValueError, match="algorithm.use_kl_in_reward"):
        RPGAlgoConfig(policy_loss="rpg_rkl", use_kl_in_reward=True)
    with pytest.raises(ValueError, match="algorithm.policy_loss"):
        RPGAlgoConfig(policy_loss="")


ERRORS = [
    # (variables, overrides, message the user must see)
    ({}, ["algorithm.policy_loss=rpg_kl"], "unknown algorithm.policy_loss='rpg_kl'; registered policy losses: "),
    ({"BETA": "-0.1"}, [], "algorithm.rpg.beta must be a finite number >= 0"),
    ({"RPG_CLIP": "truncate"}, [], "algorithm.rpg.clip='truncate'"),
    ({}, ["algorithm.rpg.clip=both"], "algorithm.rpg.clip must be one of"),
    ({"CLIP_C": "0.9"}, [], "clip_ratio_c (dual-clip bound c) must be > 1"),
    ({"CLIP": "1.2,0.28"}, [], "clip_ratio_low (eps_low) must lie in (0, 1)"),
    ({}, ["actor_rollout_ref.actor.ppo_mini_batch_sise=32"], "unknown config key 'actor_rollout_ref.actor.ppo_mini_batch_sise'"),
    ({}, ["actor_rollout_ref.actor.ppo_mini_batch_size=48"], "data.train_batch_size (512) must be a multiple of"),
    ({"GPUS_PER_NODE": "3"}, [], "does not divide over 3 data-parallel ranks"),
    ({}, ["actor_rollout_ref.actor.use_kl_loss=True"], "use_kl_loss=True would add verl's KL loss"),
    ({}, ["algorithm.use_kl_in_reward=True"], "use_kl_in_reward=True would add verl's KL penalty"),
    ({}, ["actor_rollout_ref.actor.policy_loss.loss_mode=rpg_fkl"], "disagrees with algorithm.policy_loss='rpg_rkl'"),
    ({}, ["actor_rollout_ref.actor.ppo_max_token_len_per_gpu=8000"], "is below one full sequence"),
    ({}, ["actor_rollout_ref.actor.optim.optimizer_impl=schedulefree"], "is refused: schedule-free optimizers"),
    ({"CONTEXT": "16k"}, [], "Could not find 'context/16k'"),
    ({"METHOD": "ppo"}, [], "Could not find 'method/ppo'"),
    ({"CLIP": "0.2"}, [], "CLIP='0.2' needs 2 comma-separated values"),
    # values verl passes through that reverse, stop or break training, refused before Ray naming the key
    ({}, ["actor_rollout_ref.actor.optim.clip_grad=-1"], "actor_rollout_ref.actor.optim.clip_grad must be a finite number > 0"),
    ({}, ["actor_rollout_ref.actor.optim.lr=nan"], "actor_rollout_ref.actor.optim.lr must be a finite number > 0, got nan"),
    ({"LR": "-1e-6"}, [], "actor_rollout_ref.actor.optim.lr must be a finite number > 0, got -1e-06"),
    ({"LR": "fast"}, [], "actor_rollout_ref.actor.optim.lr must be a finite number > 0, got 'fast'"),
    ({}, ["actor_rollout_ref.actor.optim.weight_decay=-0.1"], "optim.weight_decay must be a finite number >= 0"),
    ({}, ["actor_rollout_ref.actor.optim.lr_warmup_steps=-5"], "optim.lr_warmup_steps must be null or -1"),
    ({}, ["actor_rollout_ref.actor.ppo_epochs=0"], "actor_rollout_ref.actor.ppo_epochs must be an integer >= 1"),
    ({"STEPS": "0"}, [], "trainer.total_training_steps must be null or an integer >= 1, got 0"),
    ({}, ["trainer.resume_mode=sometimes"], "trainer.resume_mode must be one of auto, disable, resume_path"),
    ({}, ["actor_rollout_ref.rollout.val_kwargs.n=0"], "actor_rollout_ref.rollout.val_kwargs.n must be an integer >= 1"),
    ({}, ["algorithm.adv_estimator=grpo2"], "unknown algorithm.adv_estimator='grpo2'; verl's estimators:"),
    ({}, ["actor_rollout_ref.rollout.name=vllm2"], "unknown actor_rollout_ref.rollout.name='vllm2'; registered rollouts:"),
    ({}, ["data.max_response_length=-1"], "data.max_response_length must be an integer >= 1 (tokens), got -1"),
    ({}, ["data.max_prompt_length=abc"], "data.max_prompt_length must be an integer >= 1 (tokens), got 'abc'"),
    # weak messages made exact
    ({"BETA": "nan"}, [], "algorithm.rpg.beta must be a finite number >= 0 (a KL strength), got nan"),
    ({}, ["+algorithm.rpg.foo=1"], "algorithm.rpg has unknown key(s) ['foo'] (rpg_ext.config.RPGAlgorithmConfig)"),
    ({"MODEL": "/nowhere/model"}, [], "actor_rollout_ref.model.path='/nowhere/model': no such local folder"),
    ({"MODEL": "not a model"}, [], "is neither a local folder nor a hub name of the form org/name"),
    ({"BACKEND": "jax"}, [], "BACKEND='jax'"),
]


@pytest.mark.parametrize("variables,overrides,message", ERRORS, ids=[e[2][:40] for e in ERRORS])
def test_errors_exit_nonzero_with_a_clear_message(variables, overrides, message, data_dir, capsys):
    env = {"METHOD": "rpg_rkl", "DATA_DIR": str(data_dir), **variables}
    rc = launch.main(["--dry-run", *overrides], env=env)
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err


def test_an_uncached_hub_model_is_refused_offline_before_a_launch(data_dir, monkeypatch):
    # HF_HUB_OFFLINE: the workers could not download the model; a launch (not a dry run) says so before Ray
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, cfg = compose_preset({"METHOD": "rpg_rkl", "DATA_DIR": str(data_dir), "MODEL": "nobody/no-such-model"})
    check_config(cfg, check_data=True)  # the dry run: not checked, and said so
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE is set and the model is not in the local Hugging Face cache"):
        check_config(cfg, check_data=True, launching=True)


def test_unknown_policy_loss_lists_the_registered_names(data_dir, capsys):
    assert launch.main(["--dry-run", "algorithm.policy_loss=nope"], env={"METHOD": "dapo", "DATA_DIR": str(data_dir)}) == 2
    listed = capsys.readouterr().err.split("registered policy losses: ")[1].strip().split(", ")
    assert set(RPG_LOSS_NAMES) <= set(listed) and {"vanilla", "gspo"} <= set(listed)


def test_missing_data_file_unless_skipped(tmp_path, capsys):
    env = {"METHOD": "rpg_urkl", "DATA_DIR": str(tmp_path)}
    assert launch.main(["--dry-run"], env=env) == 2
    err = capsys.readouterr().err
    assert "data file not found: data.train_files" in err and str(tmp_path / "dapo-math-17k-eng.parquet") in err
    assert launch.main(["--dry-run", "--skip-data-check"], env=env) == 0


def test_check_config_rejects_a_missing_val_file(data_dir):
    _, cfg = compose_preset({"METHOD": "rpg_rkl", "DATA_DIR": str(data_dir),
                             "VAL_FILES": f"{data_dir}/aime2024.parquet,{data_dir}/nope.parquet"})
    with pytest.raises(ConfigError, match="data.val_files contains .*nope.parquet"):
        check_config(cfg)


def test_a_gpu_host_without_vllm_stops_before_ray_or_says_it_uses_hf(data_dir, monkeypatch, capsys):
    # a launch (not a dry run) on a GPU host whose vLLM does not import: the vllm rollout is refused with the fix,
    # the hf rollout runs and the launch says so up front; no silent switch either way
    import rpg_ext.rollouts

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(rpg_ext.rollouts, "vllm_rollout_check",
                        lambda gpu_visible: (False, "vLLM does not import here: use ROLLOUT=hf"))
    _, cfg = compose_preset({"METHOD": "rpg_rkl", "DATA_DIR": str(data_dir)})
    with pytest.raises(ConfigError, match="vLLM does not import here: use ROLLOUT=hf"):
        check_config(cfg, check_data=True, launching=True)
    check_config(cfg, check_data=True)  # the dry run on a laptop does not check it, and says so
    _, cfg = compose_preset({"METHOD": "rpg_rkl", "DATA_DIR": str(data_dir), "ROLLOUT": "hf"},
                            ["actor_rollout_ref.rollout.tensor_model_parallel_size=1"])
    check_config(cfg, check_data=True, launching=True)
    assert "vLLM is not installed on this GPU host: the hf rollout generates" in capsys.readouterr().out


def test_a_plugin_disabled_for_verls_processes_fails_the_dry_run(data_dir, monkeypatch):
    # the dry run imports the plugin itself; verl's processes load only what VERL_USE_EXTERNAL_PLUGINS allows
    for policy in ("none", "some_other_plugin"):
        monkeypatch.setenv("VERL_USE_EXTERNAL_PLUGINS", policy)
        _, cfg = compose_preset({"METHOD": "rpg_rkl", "DATA_DIR": str(data_dir)})
        with pytest.raises(ConfigError, match=f"VERL_USE_EXTERNAL_PLUGINS='{policy}' keeps verl from loading the rpg"):
            check_config(cfg)
    monkeypatch.setenv("VERL_USE_EXTERNAL_PLUGINS", "rpg")
    check_config(compose_preset({"METHOD": "rpg_rkl", "DATA_DIR": str(data_dir)})[1])
