"""Rollout backend ``hf`` for verl's v1 agent loop: a Hugging Face ``transformers`` model served by a Ray actor.

verl 0.9.1 serves rollouts from vLLM / SGLang / TRT-LLM servers only. This backend provides the same three pieces
with plain ``transformers``, on whatever device verl's platform uses (a GPU, or the CPU of ``rpg_ext.cpu``):

``HFRolloutServer``  (Ray actor, one per replica)
    async token-in/token-out ``generate(prompt_ids, sampling_params, request_id)`` -> ``TokenOutput``.
    Concurrent requests are batched (left padding, KV cache); sampling applies temperature, top-k and top-p,
    and the returned log-probs are those of the processed distribution the token was drawn from (vLLM's
    ``processed_logprobs``). ``load_weights`` replaces every weight (strictly: unknown or missing names fail).
    The model lives on the device of its replica's worker (``cuda:0`` of a process that sees only that worker's
    GPU, or ``cpu``) in ``rollout.dtype``; ``sleep`` moves it to host memory and ``wake_up`` back (accelerators
    only, with ``rollout.free_cache_engine``), so one GPU trains and generates as verl's hybrid engine does.
``HFServerAdapter``  (``BaseRollout``, lives in the actor worker)
    verl's ``naive`` checkpoint-engine path calls ``resume(["weights"])`` and ``update_weights(generator)`` with
    the actor's full tensors after every step; the adapter wakes its server, gathers the tensors (to host
    memory) and pushes them to its replica's server.
``HFReplica``  (``RolloutReplica``)
    starts the server next to its worker (same node, same GPU), registered as rollout name ``hf`` by
    ``rpg_ext.rollouts`` (on every platform, through ``rpg_ext.plugin``).

Options: ``actor_rollout_ref.rollout.engine_kwargs.hf`` (``+...`` on the command line):
    ``max_batch_size`` (default: rollout.max_num_seqs)    requests generated together
    ``torch_threads`` (default 1)                           intra-op CPU threads of the server process
    ``freeze_weights`` (default false)                      NEGATIVE CONTROL ONLY: the adapter drops the weight
                                                             updates, so the rollout keeps its initial weights;
                                                             verl's ``training/rollout_probs_diff_*`` then shows it.
``rollout.load_format=dummy`` (verl's default) starts the server from random weights (fixed seed) instead of the
checkpoint, so a missing weight sync is visible from the first step.

Throughput: verl 0.9.1's v1 trainer has no path from a rollout server into its metrics (it reads a sample's
``extra_fields`` only for speculative-decoding counts). The server counts its own generated tokens and busy time;
:func:`collect_rollout_metrics` fetches them from the replicas (``perf/hf_rollout/*``) for a trainer to log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Generator, Iterable, Optional

from rpg_ext.rollouts import HF_ROLLOUT, require_verl_version

require_verl_version()  # the server protocol below is verl 0.9.1's

import ray  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from verl.plugin.platform import get_platform  # noqa: E402
from verl.utils.config import omega_conf_to_dataclass  # noqa: E402
from verl.utils.device import (  # noqa: E402
    get_device_name,
    get_resource_name,
    get_torch_device,
    get_visible_devices_keyword,
)
from verl.workers.config import HFModelConfig, RolloutConfig  # noqa: E402
from verl.workers.rollout.base import BaseRollout  # noqa: E402
from verl.workers.rollout.replica import RolloutMode, RolloutReplica, TokenOutput  # noqa: E402

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

ROLLOUT_NAME = HF_ROLLOUT
SERVER_NAME_PREFIX = "hf_rollout_server"
_KNOWN_OPTIONS = {"max_batch_size", "torch_threads", "freeze_weights"}
#: Where a sleeping server keeps its weights.
HOST_DEVICE = "cpu"


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
# Device placement (pure decisions; the Ray and torch calls that feed them are in the server and replica below)
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerPlacement:
    """Where a replica's server runs: its torch ``device``, the ``env_vars`` of its Ray actor, and the visible
    devices (``visible_devices_keyword`` = ``visible_devices``) it must see."""

    device: str
    env_vars: dict[str, str] = field(default_factory=dict)
    visible_devices_keyword: Optional[str] = None
    visible_devices: Optional[str] = None


def server_device(device_name: str) -> str:
    """The torch device of a server whose process sees only its replica's devices: ``cpu``, or the first visible
    accelerator (``cuda:0``, ``npu:0``, ...)."""
    return "cpu" if device_name == "cpu" else f"{device_name}:0"


def server_placement(
    device_name: str, accelerator_ids: list[str], visible_devices_keyword: str, noset_envvars: list[str]
) -> ServerPlacement:
    """The placement of a replica's server, from its worker's verl device name (``get_device_name()``), the Ray
    accelerator ids of the replica's workers (``get_accelerator_ids()[get_resource_name()]``), and the platform's
    visible-devices variable and ``RAY_EXPERIMENTAL_NOSET_*`` variables.

    As verl's vLLM server (``vLLMReplica.launch_servers``): the actor holds no Ray GPU (the worker's bundle does),
    Ray is told not to set the visible devices (``RAY_EXPERIMENTAL_NOSET_*=1``), and the visible devices are those
    of the replica's workers; the process then sees exactly those GPUs, the first as ``<device>:0``. Here the
    variable is set in the actor's environment (``runtime_env``) so that it is in place before torch initializes
    the device, because the model lives in the actor itself (vLLM's lives in the engine processes it spawns).
    On the CPU (verl platform ``cpu``, whose Ray GPUs are logical) nothing is set: the server runs on ``cpu``.
    """
    if device_name == "cpu":
        return ServerPlacement(device=server_device(device_name))
    ids = [str(i) for i in accelerator_ids]
    if not ids:
        raise RuntimeError(
            f"the hf rollout runs on the {device_name!r} device of its replica's worker, but the worker holds no "
            f"accelerator (Ray gave it none of {visible_devices_keyword})"
        )
    visible = ",".join(ids)
    env = {var: "1" for var in noset_envvars}
    env[visible_devices_keyword] = visible
    return ServerPlacement(
        device=server_device(device_name),
        env_vars=env,
        visible_devices_keyword=visible_devices_keyword,
        visible_devices=visible,
    )


def offloads_on_sleep(device: str | torch.device, free_cache_engine: bool) -> bool:
    """Whether ``sleep`` moves the model to host memory: on an accelerator, when verl frees the rollout's memory
    for training (``rollout.free_cache_engine``, verl's default true). On the CPU the model already is in host
    memory: sleep and wake_up do nothing."""
    return torch.device(device).type != "cpu" and bool(free_cache_engine)


def check_visible_devices(
    environ: dict, keyword: Optional[str], visible: Optional[str], device_initialized: bool
) -> None:
    """Make ``environ[keyword] == visible`` (the server's own process environment), refusing when the device
    runtime was initialized under another value (it would no longer take effect)."""
    if keyword is None or visible is None or environ.get(keyword) == visible:
        return
    if device_initialized:
        raise RuntimeError(
            f"the hf rollout server must see {keyword}={visible}, but its device runtime was initialized with "
            f"{keyword}={environ.get(keyword)!r}"
        )
    environ[keyword] = visible


def check_device_count(seen: int, visible: Optional[str]) -> None:
    """The server process must see exactly the devices of its replica (one, with one process per replica)."""
    if visible is None:
        return
    expected = len(visible.split(","))
    if seen != expected:
        raise RuntimeError(
            f"the hf rollout server sees {seen} devices, expected {expected} (its replica's worker's: {visible}); "
            "the visible-devices variable did not take effect in the server process"
        )


def _worker_placement_info(worker) -> tuple[str, str, list[str]]:
    """Run inside a replica's worker (``__ray_call__``): its node, verl device name and Ray accelerator ids."""
    context = ray.get_runtime_context()
    ids = context.get_accelerator_ids().get(get_resource_name(), [])
    return context.get_node_id(), get_device_name(), [str(i) for i in ids]


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


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


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
    """Generate a continuation of every prompt (left-padded into one batch, KV cache, one token per forward), on
    the device of ``model`` (``generator`` must be on that device too).

    A sequence ends after an eos token (included, as vLLM returns it) or ``max_tokens[i]`` tokens. Returns
    ``(token_ids, log_probs)`` per prompt, the log-probs of the processed distribution each token came from.
    Tokens stay on the device until the end: one host synchronization per step (the all-done test).
    """
    device = _model_device(model)
    n, width = len(prompts), max(len(p) for p in prompts)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        attention[i, width - len(p) :] = 1
    input_ids, attention = input_ids.to(device), attention.to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    limits = torch.tensor(max_tokens, device=device)
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long, device=device)
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1, :]
    next_pos = positions[:, -1] + 1
    step_tokens, step_log_probs, step_kept = [], [], []
    done = torch.zeros(n, dtype=torch.bool, device=device)
    for step in range(int(max(max_tokens))):
        tok, lp = sample_next(logits, temperature, top_k, top_p, generator)
        step_tokens.append(tok)
        step_log_probs.append(lp)
        step_kept.append(~done)  # a row keeps the token of this step if it was still generating
        done = done | torch.isin(tok, eos) | (step + 1 >= limits)
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
    tokens = torch.stack(step_tokens, dim=1).cpu()
    log_probs = torch.stack(step_log_probs, dim=1).float().cpu()
    kept = torch.stack(step_kept, dim=1).cpu()
    return [(tokens[i][kept[i]].tolist(), log_probs[i][kept[i]].tolist()) for i in range(n)]


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
# Throughput
# ----------------------------------------------------------------------------------------------------------------

#: Prefix of the server's own throughput metrics (next to verl's ``perf/throughput``).
METRIC_PREFIX = "perf/hf_rollout"


@dataclass
class GenerationStats:
    """What a server generated since the last :meth:`HFRolloutServer.get_stats` with ``reset``."""

    generated_tokens: int = 0
    prompt_tokens: int = 0
    requests: int = 0
    batches: int = 0
    busy_s: float = 0.0  # wall time of the batched generation calls

    def add(self, prompt_tokens: int, generated_tokens: int, requests: int, seconds: float) -> None:
        self.prompt_tokens += prompt_tokens
        self.generated_tokens += generated_tokens
        self.requests += requests
        self.batches += 1
        self.busy_s += seconds


def throughput_metrics(stats: Iterable[dict]) -> dict[str, float]:
    """verl-style metrics of the servers' stats (one dict per replica, as ``GenerationStats`` fields):

    ``perf/hf_rollout/gen_tokens_per_s``  generated tokens per second of generation time, per replica (the
                                          replicas' tokens over their summed busy time; one GPU per replica)
    ``perf/hf_rollout/generated_tokens``  tokens generated by all replicas
    ``perf/hf_rollout/prompt_tokens``     prompt tokens prefilled by all replicas
    ``perf/hf_rollout/busy_s``            the busiest replica's generation time
    ``perf/hf_rollout/mean_batch_size``   requests per batched generation call

    Empty when nothing was generated.
    """
    stats = [s for s in stats if s and s.get("batches", 0) > 0]
    if not stats:
        return {}
    tokens = sum(s["generated_tokens"] for s in stats)
    busy = sum(s["busy_s"] for s in stats)
    return {
        f"{METRIC_PREFIX}/gen_tokens_per_s": tokens / busy if busy > 0 else 0.0,
        f"{METRIC_PREFIX}/generated_tokens": float(tokens),
        f"{METRIC_PREFIX}/prompt_tokens": float(sum(s["prompt_tokens"] for s in stats)),
        f"{METRIC_PREFIX}/busy_s": max(s["busy_s"] for s in stats),
        f"{METRIC_PREFIX}/mean_batch_size": sum(s["requests"] for s in stats) / sum(s["batches"] for s in stats),
    }


def collect_rollout_metrics(replicas: Iterable[RolloutReplica], reset: bool = True) -> dict[str, float]:
    """:func:`throughput_metrics` of the hf replicas among ``replicas`` (others are ignored), since the previous
    collection when ``reset``. For a trainer: ``self.llm_server_manager.get_replicas()``; call it once before
    the step's generation (discarding validation's tokens) and once after it."""
    servers = [s for r in replicas if isinstance(r, HFReplica) for s in r.servers]
    if not servers:
        return {}
    return throughput_metrics(ray.get([s.get_stats.remote(reset=reset) for s in servers]))


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


_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
           "float32": torch.float32, "fp32": torch.float32}


class HFRolloutServer:
    """One rollout replica: a ``transformers`` causal LM generating batched requests with a KV cache."""

    def __init__(
        self,
        config: RolloutConfig | DictConfig,
        model_config: HFModelConfig | DictConfig,
        rollout_mode: RolloutMode,
        replica_rank: int,
        node_rank: int = 0,
        device: Optional[str] = None,
        visible_devices_keyword: Optional[str] = None,
        visible_devices: Optional[str] = None,
        **kwargs: Any,
    ):
        from transformers import AutoConfig, AutoModelForCausalLM

        # before anything initializes the device runtime of this process
        check_visible_devices(os.environ, visible_devices_keyword, visible_devices, _device_initialized())
        self.config: RolloutConfig = omega_conf_to_dataclass(config, dataclass_type=RolloutConfig)
        model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.rollout_mode = rollout_mode
        self.replica_rank = replica_rank
        self.node_rank = node_rank
        opts = hf_options(self.config)
        check_sampling_params({k: getattr(self.config, k) for k in NEUTRAL_SAMPLING if hasattr(self.config, k)})
        torch.set_num_threads(int(opts.get("torch_threads", 1)))
        self.max_batch_size = int(opts.get("max_batch_size", self.config.max_num_seqs))

        dtype = _DTYPES.get(str(self.config.dtype))
        if dtype is None:
            raise ValueError(f"actor_rollout_ref.rollout.dtype={self.config.dtype!r} is not supported by the hf rollout")
        self.device = torch.device(device if device is not None else server_device(get_device_name()))
        if self.device.type != "cpu":
            check_device_count(get_torch_device().device_count(), visible_devices)
        path = model_config.local_path
        hf_config = AutoConfig.from_pretrained(path, trust_remote_code=model_config.trust_remote_code)
        hf_config._attn_implementation = "sdpa"
        seed = self.config.seed + replica_rank
        if self.config.load_format == "dummy":
            # verl's convention: the rollout starts from dummy weights and receives the real ones from the actor
            torch.manual_seed(seed + 10_007)
            with torch.device(self.device):  # initialized on the device (fast for a large model)
                model = AutoModelForCausalLM.from_config(hf_config, torch_dtype=dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, config=hf_config, torch_dtype=dtype)
        model = model.to(self.device).eval()

        gen_cfg = model_config.generation_config
        eos = getattr(gen_cfg, "eos_token_id", None) if gen_cfg is not None else None
        if eos is None:
            eos = model_config.tokenizer.eos_token_id if model_config.tokenizer is not None else hf_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list | tuple) else [eos]) - {None}
        if not eos_ids:
            raise ValueError(f"the model at {path} defines no eos_token_id: generation could not stop")
        pad = model_config.tokenizer.pad_token_id if model_config.tokenizer is not None else None
        self._init_runtime(
            model,
            dtype=dtype,
            eos_ids=eos_ids,
            pad_id=pad if pad is not None else min(eos_ids),
            seed=seed,
            tied=bool(getattr(hf_config, "tie_word_embeddings", False)),
        )

    def _init_runtime(self, model, *, dtype, eos_ids: set[int], pad_id: int, seed: int, tied: bool) -> None:
        """The serving state of a loaded model (``self.config`` and ``self.device`` are set)."""
        self.model = model
        self.dtype = dtype
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.tied = tied
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.offload_on_sleep = offloads_on_sleep(self.device, self.config.free_cache_engine)
        self.global_steps: Optional[int] = None
        self.stats = GenerationStats()
        self._pending: list[_Request] = []
        self._wakeup = asyncio.Event()
        self._awake = asyncio.Event()  # cleared while the model sleeps in host memory
        self._awake.set()
        self._model_lock = asyncio.Lock()
        self._loop_task: Optional[asyncio.Task] = None
        self._aborting = False

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
        """Token-in/token-out generation of one request (batched with the requests that arrive meanwhile).
        A request that arrives while the server sleeps waits for ``wake_up``."""
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
                await self._awake.wait()
                async with self._model_lock:
                    if not self._awake.is_set() or not self._pending:  # put to sleep meanwhile
                        continue
                    key = self._pending[0].sampling_key
                    batch = [r for r in self._pending if r.sampling_key == key][: self.max_batch_size]
                    taken = set(map(id, batch))
                    self._pending = [r for r in self._pending if id(r) not in taken]
                    start = time.perf_counter()
                    try:
                        results = await asyncio.to_thread(self._generate_batch, batch)
                    except Exception as e:  # report to every caller, keep serving
                        logger.exception("hf rollout batch failed")
                        for r in batch:
                            if not r.future.done():
                                r.future.set_exception(e)
                        continue
                    self.stats.add(
                        prompt_tokens=sum(len(r.prompt_ids) for r in batch),
                        generated_tokens=sum(len(res[0]) for res in results),
                        requests=len(batch),
                        seconds=time.perf_counter() - start,
                    )
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

    async def get_stats(self, reset: bool = True) -> dict:
        """The generation counters (``GenerationStats`` fields) since the last reset."""
        stats = dict(vars(self.stats))
        if reset:
            self.stats = GenerationStats()
        return stats

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

    # -- life cycle (verl's replica protocol) -------------------------------------------------------------------
    # On an accelerator with rollout.free_cache_engine: sleep moves the model to host memory (after the running
    # batch) and frees the device cache, wake_up moves it back; requests that arrive meanwhile wait. KV caches
    # exist only during a batch, so the kv_cache tags and calls have nothing to free. On the CPU: no-ops.

    def _move_model(self, device: torch.device | str) -> None:
        self.model.to(device)
        if torch.device(device).type == HOST_DEVICE:
            get_torch_device().empty_cache()

    @property
    def asleep(self) -> bool:
        return not self._awake.is_set()

    async def wake_up(self, tags: list[str] | None = None):
        if not self.offload_on_sleep or (tags is not None and "weights" not in tags):
            return None
        async with self._model_lock:
            if self._awake.is_set():
                return None
            await asyncio.to_thread(self._move_model, self.device)
            self._awake.set()
        return None

    async def sleep(self):
        if not self.offload_on_sleep or not self._awake.is_set():
            return None
        await self.wait_for_requests_to_drain()
        async with self._model_lock:
            if not self._awake.is_set():
                return None
            self._awake.clear()
            await asyncio.to_thread(self._move_model, HOST_DEVICE)
        return None

    async def clear_kv_cache(self):
        return None  # caches live only for the duration of one batch

    async def release_kv_cache(self):
        return None

    async def resume_kv_cache(self):
        return None

    async def wait_for_requests_to_drain(self):
        while (self._pending and self._awake.is_set()) or self._model_lock.locked():
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


def _device_initialized() -> bool:
    """Whether this process already initialized its accelerator runtime (the visible devices are then fixed)."""
    try:
        is_initialized = getattr(get_torch_device(), "is_initialized", None)
        return bool(is_initialized()) if callable(is_initialized) else False
    except Exception:
        return False


# ----------------------------------------------------------------------------------------------------------------
# Actor-side adapter and replica
# ----------------------------------------------------------------------------------------------------------------


class HFServerAdapter(BaseRollout):
    """Actor-side handle of the ``hf`` rollout: forwards weight updates and sleep/wake to this rank's server."""

    def __init__(self, config: RolloutConfig, model_config: HFModelConfig, device_mesh=None, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        world = replica_world_size(self.config)
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

    # As verl's vLLM ServerAdapter.resume / release (vllm_rollout.py): forwarded to the server when verl frees
    # rollout memory (rollout.free_cache_engine), on an accelerator (on the CPU the server has nothing to move).
    def _forwards_memory_calls(self) -> bool:
        return bool(self.config.free_cache_engine) and self.is_leader_rank and get_device_name() != "cpu"

    async def resume(self, tags: list[str]):
        if self._forwards_memory_calls():
            await self._server_handle().wake_up.remote(tags=tags)

    async def release(self):
        if self._forwards_memory_calls():
            await self._server_handle().sleep.remote()

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


def validate_rollout_config(config: RolloutConfig) -> None:
    """Everything the hf rollout refuses in a rollout config, checked before anything starts (the recipe's
    pre-flight; the server and the replica check the same at run time)."""
    replica_world_size(config)
    hf_options(config)
    check_sampling_params({k: getattr(config, k) for k in NEUTRAL_SAMPLING if hasattr(config, k)})


def replica_world_size(config: RolloutConfig) -> int:
    world = config.tensor_model_parallel_size * config.data_parallel_size * config.pipeline_model_parallel_size
    if world != 1:
        raise ValueError(
            "the hf rollout runs one process per replica: set actor_rollout_ref.rollout.tensor_model_parallel_size=1, "
            f"data_parallel_size=1, pipeline_model_parallel_size=1 (got tp*dp*pp={world})"
        )
    return world


class HFReplica(RolloutReplica):
    """A replica of the ``hf`` rollout: one ``HFRolloutServer`` actor on its worker's node and device."""

    def __init__(self, replica_rank: int, config: RolloutConfig, model_config, gpus_per_node: int = 8, **kwargs):
        super().__init__(replica_rank, config, model_config, gpus_per_node, **kwargs)
        replica_world_size(self.config)

    async def launch_servers(self):
        if self.is_reward_model or self.is_teacher_model:
            raise NotImplementedError("the hf rollout serves the policy only (no reward or teacher model servers)")
        infos = await asyncio.gather(*[w.__ray_call__.remote(_worker_placement_info) for w in self.workers])
        node_id, device_name = infos[0][0], infos[0][1]
        placement = server_placement(
            device_name,
            [i for info in infos for i in info[2]],
            get_visible_devices_keyword(),
            get_platform().ray_noset_envvars(),
        )
        name = server_name(self.replica_rank) + self.name_suffix
        options = dict(
            name=name,
            scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                node_id=node_id, soft=False
            ),
            max_concurrency=self.max_concurrency,
        )
        if placement.env_vars:
            options["runtime_env"] = {"env_vars": placement.env_vars}
        server = (
            ray.remote(HFRolloutServer)
            .options(**options)
            .remote(
                config=self.config,
                model_config=self.model_config,
                rollout_mode=self.rollout_mode,
                replica_rank=self.replica_rank,
                device=placement.device,
                visible_devices_keyword=placement.visible_devices_keyword,
                visible_devices=placement.visible_devices,
            )
        )
        await server.set_global_steps.remote(None)  # waits until the model is loaded
        self.servers = [server]
        self._server_handle = server
        self._server_address = name  # no HTTP endpoint: the name keys verl's load balancer
