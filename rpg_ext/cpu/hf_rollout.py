"""Rollout backend ``hf`` for verl's v1 agent loop: a Hugging Face ``transformers`` model served by a Ray actor.

verl 0.9.1 serves rollouts from vLLM / SGLang / TRT-LLM servers only; none runs without a GPU. This backend
provides the same three pieces with plain ``transformers`` on the CPU:

``HFRolloutServer``  (Ray actor, one per replica)
    async token-in/token-out ``generate(prompt_ids, sampling_params, request_id)`` -> ``TokenOutput``.
    Concurrent requests are batched (left padding, KV cache); sampling applies temperature, top-k and top-p,
    and the returned log-probs are those of the processed distribution the token was drawn from (vLLM's
    ``processed_logprobs``). ``load_weights`` replaces every weight (strictly: unknown or missing names fail).
``HFServerAdapter``  (``BaseRollout``, lives in the actor worker)
    verl's ``naive`` checkpoint-engine path calls ``update_weights(generator)`` with the actor's full tensors
    after every step; the adapter gathers them and pushes them to its replica's server.
``HFReplica``  (``RolloutReplica``)
    starts the server next to its worker, registered as ``RolloutReplicaRegistry`` name ``hf``.

Options: ``actor_rollout_ref.rollout.engine_kwargs.hf`` (``+...`` on the command line):
    ``max_batch_size`` (default: rollout.max_num_seqs)    requests generated together
    ``torch_threads`` (default 1)                           intra-op threads of the server process
    ``freeze_weights`` (default false)                      NEGATIVE CONTROL ONLY: the adapter drops the weight
                                                             updates, so the rollout keeps its initial weights;
                                                             verl's ``training/rollout_probs_diff_*`` then shows it.
``rollout.load_format=dummy`` (verl's default) starts the server from random weights (fixed seed) instead of the
checkpoint, so a missing weight sync is visible from the first step.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any, Generator, Optional

import ray
import torch
from omegaconf import DictConfig, OmegaConf

from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import HFModelConfig, RolloutConfig
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutMode, RolloutReplica, TokenOutput

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

ROLLOUT_NAME = "hf"
SERVER_NAME_PREFIX = "hf_rollout_server"
_KNOWN_OPTIONS = {"max_batch_size", "torch_threads", "freeze_weights"}


def hf_options(config: RolloutConfig | DictConfig) -> dict[str, Any]:
    """The validated ``rollout.engine_kwargs.hf`` block."""
    engine_kwargs = config.engine_kwargs if config.engine_kwargs is not None else {}
    opts = engine_kwargs.get(ROLLOUT_NAME, None) or {}
    if isinstance(opts, DictConfig):
        opts = OmegaConf.to_container(opts, resolve=True)
    opts = dict(opts)
    unknown = sorted(set(opts) - _KNOWN_OPTIONS)
    if unknown:
        raise ValueError(
            f"actor_rollout_ref.rollout.engine_kwargs.hf has unknown keys {unknown}; known: {sorted(_KNOWN_OPTIONS)}"
        )
    return opts


def server_name(replica_rank: int, node_rank: int = 0) -> str:
    return f"{SERVER_NAME_PREFIX}_{replica_rank}_{node_rank}"


# ----------------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------------


def process_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Logits ``(B, V)`` of the distribution a token is sampled from: scaled by 1/temperature, then the
    top-k and nucleus (top-p) filters set the excluded entries to -inf. ``temperature == 0`` means greedy and
    leaves the logits as they are."""
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the mass strictly before it already reaches top_p (the first token is always kept)
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row of ``logits (B, V)``; returns ``(tokens (B,), log_probs (B,))``."""
    processed = process_logits(logits, temperature, top_k, top_p)
    log_probs = torch.log_softmax(processed, dim=-1)
    if temperature > 0:
        tokens = torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(-1)
    else:
        tokens = processed.argmax(dim=-1)
    return tokens, log_probs.gather(-1, tokens[:, None]).squeeze(-1)


@torch.no_grad()
def generate_batch(
    model,
    prompts: list[list[int]],
    max_tokens: list[int],
    *,
    temperature: float,
    top_k: int,
    top_p: float,
    eos_ids: set[int],
    pad_id: int,
    generator: torch.Generator,
    should_stop=lambda: False,
) -> list[tuple[list[int], list[float]]]:
    """Generate a continuation of every prompt (left-padded into one batch, KV cache, one token per forward).

    A sequence ends after an eos token (included, as vLLM returns it) or ``max_tokens[i]`` tokens. Returns
    ``(token_ids, log_probs)`` per prompt, the log-probs of the processed distribution each token came from.
    """
    n, width = len(prompts), max(len(p) for p in prompts)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        attention[i, width - len(p) :] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    limits = torch.tensor(max_tokens)
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1, :]
    next_pos = positions[:, -1] + 1
    tokens: list[list[int]] = [[] for _ in prompts]
    log_probs: list[list[float]] = [[] for _ in prompts]
    done = torch.zeros(n, dtype=torch.bool)
    for step in range(int(limits.max())):
        tok, lp = sample_next(logits, temperature, top_k, top_p, generator)
        for i in torch.nonzero(~done).flatten().tolist():
            tokens[i].append(int(tok[i]))
            log_probs[i].append(float(lp[i]))
        done = done | torch.tensor([t in eos_ids for t in tok.tolist()]) | (step + 1 >= limits)
        if bool(done.all()) or should_stop():
            break
        # finished rows keep stepping on a masked pad token so the batch stays rectangular
        attention = torch.cat([attention, (~done).long()[:, None]], dim=-1)
        step_ids = torch.where(done, torch.full_like(tok, pad_id), tok)
        out = model(
            input_ids=step_ids[:, None],
            attention_mask=attention,
            position_ids=next_pos[:, None],
            past_key_values=past,
            use_cache=True,
        )
        past, logits = out.past_key_values, out.logits[:, -1, :]
        next_pos = next_pos + 1
    return list(zip(tokens, log_probs, strict=True))


#: Sampling parameters the server implements, and those it accepts only at their neutral value.
SAMPLING_KEYS = {"temperature", "top_k", "top_p", "logprobs", "max_tokens", "max_new_tokens"}
NEUTRAL_SAMPLING = {"repetition_penalty": 1.0, "ignore_eos": False}


def check_sampling_params(sampling_params: dict[str, Any]) -> None:
    """Refuse what the hf rollout does not implement instead of silently sampling something else."""
    unknown = sorted(set(sampling_params) - SAMPLING_KEYS - set(NEUTRAL_SAMPLING))
    if unknown:
        raise ValueError(f"the hf rollout does not implement the sampling parameters {unknown} "
                         f"(it implements {sorted(SAMPLING_KEYS)})")
    for key, neutral in NEUTRAL_SAMPLING.items():
        if key in sampling_params and sampling_params[key] != neutral:
            raise ValueError(f"the hf rollout implements {key}={neutral!r} only, got {sampling_params[key]!r}")


# ----------------------------------------------------------------------------------------------------------------
# Server
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Request:
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    want_logprobs: bool
    future: asyncio.Future

    @property
    def sampling_key(self) -> tuple:
        return (self.temperature, self.top_k, self.top_p)


class HFRolloutServer:
    """One rollout replica: a ``transformers`` causal LM generating batched requests with a KV cache."""

    def __init__(
        self,
        config: RolloutConfig | DictConfig,
        model_config: HFModelConfig | DictConfig,
        rollout_mode: RolloutMode,
        replica_rank: int,
        node_rank: int = 0,
        **kwargs: Any,
    ):
        from transformers import AutoConfig, AutoModelForCausalLM

        self.config: RolloutConfig = omega_conf_to_dataclass(config, dataclass_type=RolloutConfig)
        model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.rollout_mode = rollout_mode
        self.replica_rank = replica_rank
        self.node_rank = node_rank
        opts = hf_options(self.config)
        check_sampling_params({k: getattr(self.config, k) for k in NEUTRAL_SAMPLING if hasattr(self.config, k)})
        torch.set_num_threads(int(opts.get("torch_threads", 1)))
        self.max_batch_size = int(opts.get("max_batch_size", self.config.max_num_seqs))

        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "fp32": torch.float32,
                 "bf16": torch.bfloat16}.get(str(self.config.dtype))
        if dtype is None:
            raise ValueError(f"actor_rollout_ref.rollout.dtype={self.config.dtype!r} is not supported by the hf rollout")
        path = model_config.local_path
        hf_config = AutoConfig.from_pretrained(path, trust_remote_code=model_config.trust_remote_code)
        hf_config._attn_implementation = "sdpa"
        seed = self.config.seed + replica_rank
        if self.config.load_format == "dummy":
            # verl's convention: the rollout starts from dummy weights and receives the real ones from the actor
            torch.manual_seed(seed + 10_007)
            self.model = AutoModelForCausalLM.from_config(hf_config, torch_dtype=dtype)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(path, config=hf_config, torch_dtype=dtype)
        self.model.eval()
        self.dtype = dtype
        self.generator = torch.Generator().manual_seed(seed)

        gen_cfg = model_config.generation_config
        eos = getattr(gen_cfg, "eos_token_id", None) if gen_cfg is not None else None
        if eos is None:
            eos = model_config.tokenizer.eos_token_id if model_config.tokenizer is not None else hf_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list | tuple) else [eos]) - {None}
        if not self.eos_ids:
            raise ValueError(f"the model at {path} defines no eos_token_id: generation could not stop")
        pad = model_config.tokenizer.pad_token_id if model_config.tokenizer is not None else None
        self.pad_id = pad if pad is not None else min(self.eos_ids)

        self.global_steps: Optional[int] = None
        self._pending: list[_Request] = []
        self._wakeup = asyncio.Event()
        self._model_lock = asyncio.Lock()
        self._loop_task: Optional[asyncio.Task] = None
        self._aborting = False
        self.tied = bool(getattr(hf_config, "tie_word_embeddings", False))

    # -- generation ---------------------------------------------------------------------------------------------

    def _max_tokens(self, prompt_len: int, sampling_params: dict) -> int:
        max_model_len = self.config.max_model_len or (self.config.prompt_length + self.config.response_length)
        room = max_model_len - prompt_len
        if room < 1:
            raise ValueError(f"prompt of {prompt_len} tokens leaves no room to generate within {max_model_len} tokens")
        if "max_tokens" in sampling_params:
            max_tokens = sampling_params["max_tokens"]
        elif "max_new_tokens" in sampling_params:
            max_tokens = sampling_params["max_new_tokens"]
        else:
            max_tokens = min(self.config.response_length, room)
        return max(1, min(int(max_tokens), room))

    async def generate(
        self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str, **kwargs: Any
    ) -> TokenOutput:
        """Token-in/token-out generation of one request (batched with the requests that arrive meanwhile)."""
        media = [k for k in ("image_data", "video_data", "audio_data") if kwargs.get(k) is not None]
        if media:
            raise NotImplementedError(f"the hf rollout is text-only; request {request_id} carries {media}")
        check_sampling_params(sampling_params)
        prompt_ids = [int(t) for t in prompt_ids]
        top_k = sampling_params.get("top_k", -1)
        req = _Request(
            prompt_ids=prompt_ids,
            max_tokens=self._max_tokens(len(prompt_ids), sampling_params),
            temperature=float(sampling_params.get("temperature", 1.0)),
            top_k=-1 if top_k is None else int(top_k),
            top_p=float(sampling_params.get("top_p", 1.0)),
            want_logprobs=bool(sampling_params.get("logprobs", False)),
            future=asyncio.get_running_loop().create_future(),
        )
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._batch_loop())
        self._pending.append(req)
        self._wakeup.set()
        token_ids, log_probs, stop_reason = await req.future
        return TokenOutput(
            token_ids=token_ids,
            log_probs=log_probs if req.want_logprobs else None,
            stop_reason=stop_reason,
            extra_fields={"global_steps": self.global_steps},
        )

    async def _batch_loop(self):
        while True:
            await self._wakeup.wait()
            await asyncio.sleep(0.01)  # let the requests sent together arrive together
            self._wakeup.clear()
            while self._pending:
                key = self._pending[0].sampling_key
                batch = [r for r in self._pending if r.sampling_key == key][: self.max_batch_size]
                taken = set(map(id, batch))
                self._pending = [r for r in self._pending if id(r) not in taken]
                try:
                    async with self._model_lock:
                        results = await asyncio.to_thread(self._generate_batch, batch)
                except Exception as e:  # report to every caller, keep serving
                    logger.exception("hf rollout batch failed")
                    for r in batch:
                        if not r.future.done():
                            r.future.set_exception(e)
                    continue
                for r, res in zip(batch, results, strict=True):
                    if not r.future.done():
                        r.future.set_result(res)

    def _generate_batch(self, batch: list[_Request]) -> list[tuple[list[int], list[float], str]]:
        temperature, top_k, top_p = batch[0].sampling_key
        outputs = generate_batch(
            self.model,
            [r.prompt_ids for r in batch],
            [r.max_tokens for r in batch],
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            eos_ids=self.eos_ids,
            pad_id=self.pad_id,
            generator=self.generator,
            should_stop=lambda: self._aborting,
        )
        stop = "aborted" if self._aborting else "completed"
        return [(tokens, log_probs, stop) for tokens, log_probs in outputs]

    # -- weights ------------------------------------------------------------------------------------------------

    async def load_weights(self, named_tensors: dict[str, torch.Tensor], global_steps: Optional[int] = None) -> int:
        """Replace every weight of the model; names must match the model's exactly. Returns the count."""
        async with self._model_lock:
            state = self.model.state_dict()
            unknown = sorted(set(named_tensors) - set(state))
            if unknown:
                raise KeyError(f"hf rollout: weight update has names the model lacks: {unknown[:8]}")
            optional = {"lm_head.weight"} if self.tied else set()
            missing = sorted(set(state) - set(named_tensors) - optional)
            if missing:
                raise KeyError(f"hf rollout: weight update lacks {len(missing)} weights, e.g. {missing[:8]}")
            for name, tensor in named_tensors.items():
                if state[name].shape != tensor.shape:
                    raise ValueError(f"hf rollout: {name} has shape {tuple(tensor.shape)}, expected {tuple(state[name].shape)}")
                state[name].copy_(tensor.to(self.dtype))
            if self.tied:
                self.model.tie_weights()
            self.global_steps = global_steps
            return len(named_tensors)

    async def set_global_steps(self, global_steps: int):
        self.global_steps = global_steps

    # -- life cycle (verl's replica protocol; the model stays in host memory) -----------------------------------

    async def wake_up(self, tags: list[str] | None = None):
        return None

    async def sleep(self):
        return None

    async def clear_kv_cache(self):
        return None  # caches live only for the duration of one batch

    async def release_kv_cache(self):
        return None

    async def resume_kv_cache(self):
        return None

    async def wait_for_requests_to_drain(self):
        while self._pending or self._model_lock.locked():
            await asyncio.sleep(0.01)

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        self._aborting = True
        pending, self._pending = self._pending, []
        for r in pending:
            if not r.future.done():
                r.future.set_result(([], [], "aborted"))
        await self.wait_for_requests_to_drain()
        return {"aborted_count": len(pending), "request_ids": []}

    async def resume_generation(self):
        self._aborting = False

    async def abort_request(self, request_id: str, reset_prefix_cache: bool = True) -> dict:
        return {"aborted": False, "request_id": request_id, "error": "the hf rollout does not abort single requests"}

    async def start_profile(self, **kwargs):
        return None

    async def stop_profile(self):
        return None


# ----------------------------------------------------------------------------------------------------------------
# Actor-side adapter and replica
# ----------------------------------------------------------------------------------------------------------------


class HFServerAdapter(BaseRollout):
    """Actor-side handle of the ``hf`` rollout: forwards weight updates and sleep/wake to this rank's server."""

    def __init__(self, config: RolloutConfig, model_config: HFModelConfig, device_mesh=None, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        world = _replica_world_size(self.config)
        rank = int(os.environ.get("RANK", "0"))
        self.replica_rank = rank // world if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % world
        self.is_leader_rank = self.rollout_rank == 0
        self.freeze_weights = bool(hf_options(self.config).get("freeze_weights", False))
        self._server = None

    def _server_handle(self):
        if self._server is None:
            self._server = ray.get_actor(server_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None

    @torch.no_grad()
    async def update_weights(
        self,
        weights: Generator[tuple[str, torch.Tensor], None, None],
        wire_format: str = "named_tensors",
        global_steps: Optional[int] = None,
        **kwargs: Any,
    ):
        if wire_format != "named_tensors":
            raise NotImplementedError(f"the hf rollout receives full tensors only, got wire_format={wire_format!r}")
        # Every rank drains the generator: it gathers FSDP shards collectively.
        named = {}
        if hasattr(weights, "__aiter__"):
            async for name, tensor in weights:
                named[name] = tensor.detach().to("cpu", copy=True)
        else:
            for name, tensor in weights:
                named[name] = tensor.detach().to("cpu", copy=True)
        if not self.is_leader_rank:
            return
        server = self._server_handle()
        if self.freeze_weights:
            logger.warning("hf rollout: engine_kwargs.hf.freeze_weights=true, the weight update is DROPPED")
            await server.set_global_steps.remote(global_steps)
            return
        await server.load_weights.remote(named, global_steps)


def _replica_world_size(config: RolloutConfig) -> int:
    world = config.tensor_model_parallel_size * config.data_parallel_size * config.pipeline_model_parallel_size
    if world != 1:
        raise ValueError(
            "the hf rollout runs one process per replica: set actor_rollout_ref.rollout.tensor_model_parallel_size=1, "
            f"data_parallel_size=1, pipeline_model_parallel_size=1 (got tp*dp*pp={world})"
        )
    return world


class HFReplica(RolloutReplica):
    """A replica of the ``hf`` rollout: one ``HFRolloutServer`` actor on its worker's node."""

    def __init__(self, replica_rank: int, config: RolloutConfig, model_config, gpus_per_node: int = 8, **kwargs):
        super().__init__(replica_rank, config, model_config, gpus_per_node, **kwargs)
        _replica_world_size(self.config)

    async def launch_servers(self):
        if self.is_reward_model or self.is_teacher_model:
            raise NotImplementedError("the hf rollout serves the policy only (no reward or teacher model servers)")
        node_ids = await asyncio.gather(
            *[w.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()) for w in self.workers]
        )
        name = server_name(self.replica_rank) + self.name_suffix
        server = (
            ray.remote(HFRolloutServer)
            .options(
                name=name,
                scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                    node_id=node_ids[0], soft=False
                ),
                max_concurrency=self.max_concurrency,
            )
            .remote(
                config=self.config,
                model_config=self.model_config,
                rollout_mode=self.rollout_mode,
                replica_rank=self.replica_rank,
            )
        )
        await server.set_global_steps.remote(None)  # waits until the model is loaded
        self.servers = [server]
        self._server_handle = server
        self._server_address = name  # no HTTP endpoint: the name keys verl's load balancer
