"""The recipe's trainer: verl's synchronous v1 PPO trainer plus RPG's reference management and KL regularizer.

It is verl's ``PPOTrainerSync`` with

- the recipe's actor loss installed on the actor workers (verl's ``set_loss_fn``): ``rpg_ext.actor_loss.ActorLoss``,
  verl's ``ppo_loss`` plus the batch's ``ref_log_prob`` handed to the RPG losses, the optional RPG KL regularizer and
  the importance weight at the start of each step (``actor/rpg/step_start_iw_*``); with ``algorithm.rpg.reference=
  sampling`` and no regularizer the loss is verl's ``ppo_loss`` unchanged;
- a reference model (``fixed``: the initial model; ``periodic``: refreshed from the current policy) although verl's
  own KL loss / KL-in-reward are off: verl only loads one for those (``need_reference_policy``);
- for ``periodic``: after each step's actor update, ``rpg_ext.reference.ReferenceSchedule`` decides whether to
  refresh, and the actor's weights are copied into the reference model inside each worker (no disk round trip); the
  schedule's state and, once refreshed, the reference weights are saved with every checkpoint and restored on resume;
- verl's replay buffer polling every 0.1 s instead of 2 s.

verl picks its trainer class by ``trainer.v1.trainer_mode``, whose value ("sync") also selects verl's sync replay
buffer and checkpoint behaviour. :class:`RPGTaskRunner` therefore runs verl's own TaskRunner with this class in
place of the "sync" entry of verl's trainer registry, in the TaskRunner's own process only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

import ray
import torch
from verl.single_controller.base.decorator import Dispatch, register
from verl.trainer.main_ppo import TaskRunnerV1
from verl.trainer.ppo.utils import Role
from verl.trainer.ppo.v1 import trainer_base
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.debug import marked_timer
from verl.workers.engine_workers import ActorRolloutRefWorker

from rpg_ext.actor_loss import ActorLoss, ActorLossSettings
from rpg_ext.config import RPGAlgorithmConfig
from rpg_ext.hf_rollout import collect_rollout_metrics
from rpg_ext.reference import KL_METRIC, ReferenceSchedule, copy_module_weights, load_shard_state, shard_state

logger = logging.getLogger(__name__)

REFERENCE_DIR = "rpg_reference"
REPLAY_POLL_INTERVAL_S = 0.1  # inside global_step_N/: schedule.json and, once refreshed, the reference weights


def _modules(engine) -> list[torch.nn.Module]:
    module = engine.module  # FSDP engine: one module; Megatron engine: a list of model chunks
    return list(module) if isinstance(module, list | tuple) else [module]


class RPGActorRolloutRefWorker(ActorRolloutRefWorker):
    """verl's actor/rollout/ref worker plus the reference refresh, save and load."""

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def mark_step_start(self) -> None:
        """The next call of the recipe's actor loss is the step's first micro-batch (step-start metrics)."""
        if isinstance(getattr(self.actor, "loss_fn", None), ActorLoss):
            self.actor.loss_fn.new_step()

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def refresh_reference(self) -> int:
        """ref <- actor, parameter by parameter on this rank's shards."""
        return copy_module_weights(_modules(self.actor.engine), _modules(self.ref.engine))

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def save_reference(self, directory: str) -> None:
        """This rank's reference shards to ``directory/rank_<r>.pt`` (resume needs the same world size)."""
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        os.makedirs(directory, exist_ok=True)
        state = {"world_size": world, "tensors": shard_state(_modules(self.ref.engine))}
        tmp = os.path.join(directory, f".rank_{rank}.pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, os.path.join(directory, f"rank_{rank}.pt"))

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def load_reference(self, directory: str) -> None:
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        path = os.path.join(directory, f"rank_{rank}.pt")
        if not os.path.exists(path):
            raise FileNotFoundError(f"the checkpoint's reference weights are missing: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["world_size"] != world:
            raise RuntimeError(
                f"reference weights in {directory} were saved by {state['world_size']} ranks, resuming with {world}"
            )
        load_shard_state(_modules(self.ref.engine), state["tensors"])


class RPGTrainer(PPOTrainerSync):
    """verl's sync v1 trainer with RPG's reference management (see the module docstring)."""

    def __init__(self, config):
        super().__init__(config)
        algorithm = omega_conf_to_dataclass(config.algorithm)  # rpg_ext.config.RPGAlgoConfig (validated)
        # verl's own AlgoConfig (a config without the recipe's algorithm block): verl's sync trainer, unchanged
        self.rpg = getattr(algorithm, "rpg", None) or RPGAlgorithmConfig()
        if self.rpg.uses_reference_model:
            self.use_reference_policy = True
        self.reference_schedule = (
            ReferenceSchedule(self.rpg.reference_every, self.rpg.reference_kl_target, self.rpg.reference_kl_decay)
            if self.rpg.reference == "periodic"
            else None
        )
        self.loss_settings = ActorLossSettings(
            use_reference_model=self.rpg.uses_reference_model,
            kl_divergence=self.rpg.kl.divergence,
            kl_beta=self.rpg.kl.beta,
        )

    def _build_replay_buffer(self):
        # verl's sync replay buffer polls for finished groups every 2 s (a constructor default with no config key):
        # up to 2 s lost per wait, several waits per step with DAPO's one-prompt-at-a-time refills. 0.1 s is plenty.
        # Upstream fix that removes this: a trainer.v1.sampler.poll_interval key passed to ReplayBuffer.
        replay_buffer = super()._build_replay_buffer()
        if hasattr(replay_buffer, "poll_interval"):
            replay_buffer.poll_interval = min(replay_buffer.poll_interval, REPLAY_POLL_INTERVAL_S)
        return replay_buffer

    def _init_resource_pool_mgr(self):
        super()._init_resource_pool_mgr()
        roles = [r for r in (Role.ActorRollout, Role.ActorRolloutRef) if r in self.role_worker_mapping]
        if len(roles) != 1:
            raise RuntimeError(f"the RPG trainer needs verl's colocated actor/rollout worker, got {list(self.role_worker_mapping)}")
        role = Role.ActorRolloutRef if self.use_reference_policy else roles[0]
        pool = self.mapping.pop(roles[0])
        self.role_worker_mapping.pop(roles[0])
        self.role_worker_mapping[role] = ray.remote(RPGActorRolloutRefWorker)
        self.mapping[role] = pool

    def _setup(self):
        super()._setup()
        if self.rpg.reference == "periodic" and self.ref_in_actor:
            raise ValueError("algorithm.rpg.reference=periodic cannot refresh a LoRA reference (the base model)")
        rpg_extras = self.loss_settings.use_reference_model or self.loss_settings.kl_divergence
        if self.use_teacher_policy:  # verl's distillation loss stays; the RPG reference / regularizer cannot join it
            if rpg_extras:
                raise ValueError("the RPG reference / KL regularizer cannot be combined with verl's distillation loss")
            return
        actor_config = omega_conf_to_dataclass(self.config.actor_rollout_ref.actor)
        self.actor_rollout_wg.set_loss_fn(ActorLoss(actor_config, self.loss_settings))

    def step(self, metrics: dict, timing_raw: dict):
        if not self.use_teacher_policy:
            self.actor_rollout_wg.mark_step_start()
        # the hf rollout's own generation throughput (verl has no path from a rollout server to the step's metrics);
        # the first call drops what validation generated
        replicas = self.llm_server_manager.get_replicas() if self.config.actor_rollout_ref.rollout.name == "hf" else []
        collect_rollout_metrics(replicas)
        batch = super().step(metrics, timing_raw)
        metrics.update(collect_rollout_metrics(replicas))
        schedule = self.reference_schedule
        if schedule is not None:
            if schedule.observe(self.global_steps, metrics.get(KL_METRIC)):
                with marked_timer("reference_refresh", timing_raw, color="purple"):
                    self.actor_rollout_wg.refresh_reference()
            metrics.update(schedule.metrics())
        return batch

    def _save_checkpoint(self):
        # before verl's save, which writes latest_checkpointed_iteration.txt last (a checkpoint is then complete)
        if self.reference_schedule is not None:
            folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}", REFERENCE_DIR)
            os.makedirs(folder, exist_ok=True)
            if self.reference_schedule.refreshes > 0:
                self.actor_rollout_wg.save_reference(os.path.join(folder, "weights"))
            with open(os.path.join(folder, "schedule.json"), "w") as f:
                json.dump(self.reference_schedule.state_dict(), f)
        super()._save_checkpoint()

    def _load_checkpoint(self):
        super()._load_checkpoint()
        if self.reference_schedule is None or self.global_steps == 0:
            return
        if self.config.trainer.resume_mode == "resume_path":
            folder = self.config.trainer.resume_from_path
        else:
            folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
        if not os.path.isabs(folder):
            folder = os.path.join(os.getcwd(), folder)
        state_file = os.path.join(folder, REFERENCE_DIR, "schedule.json")
        if not os.path.exists(state_file):
            raise FileNotFoundError(
                f"resuming a periodic-reference run from {folder}, but it has no {REFERENCE_DIR}/schedule.json "
                "(the checkpoint was not written by the RPG trainer with algorithm.rpg.reference=periodic)"
            )
        with open(state_file) as f:
            self.reference_schedule.load_state_dict(json.load(f))
        if self.reference_schedule.refreshes > 0:
            self.actor_rollout_wg.load_reference(os.path.join(folder, REFERENCE_DIR, "weights"))
        logger.info("restored reference schedule %s", self.reference_schedule.state_dict())


@contextlib.contextmanager
def _as_sync_trainer(cls):
    registry = trainer_base.TRAINER_REGISTRY
    original = registry["sync"]
    registry["sync"] = cls
    try:
        yield
    finally:
        registry["sync"] = original


class _RPGTaskRunner(TaskRunnerV1.__ray_actor_class__):
    """verl's v1 TaskRunner, building :class:`RPGTrainer` for ``trainer.v1.trainer_mode=sync``."""

    def run(self, config):
        mode = config.trainer.v1.trainer_mode
        if mode != "sync":
            raise ValueError(f"the RPG recipe runs verl's synchronous v1 trainer: trainer.v1.trainer_mode={mode!r}")
        with _as_sync_trainer(RPGTrainer):
            return super().run(config)


RPGTaskRunner = ray.remote(_RPGTaskRunner)
