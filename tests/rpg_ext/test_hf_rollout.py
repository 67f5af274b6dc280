"""The hf rollout (rpg_ext.hf_rollout, registered by rpg_ext.rollouts) without Ray or a GPU: its sampler, batched
KV-cache generation, refused sampling parameters, the device decisions (placement of a replica's server,
sleep/wake offload) on fake inputs, the server's serving protocol on a tiny model, throughput metrics, the
registration on a non-CPU platform in fresh processes, and the vLLM pre-flight helper."""

import asyncio
import json
import math
import os
import subprocess
import sys
import textwrap
import types

import pytest
import torch

from rpg_ext import rollouts
from rpg_ext.hf_rollout import (
    HFReplica,
    HFRolloutServer,
    HFServerAdapter,
    ServerPlacement,
    check_device_count,
    check_sampling_params,
    check_visible_devices,
    collect_rollout_metrics,
    generate_batch,
    offloads_on_sleep,
    process_logits,
    sample_next,
    server_placement,
    throughput_metrics,
)

PY = sys.executable


# -- sampling (moved from test_cpu.py) -----------------------------------------------------------------------------


def test_process_logits_filters_against_hand_computed_sets():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    # top-p 0.7: sorted 0.5, 0.3, 0.15, 0.05; mass before 0.3 is 0.5 < 0.7 (kept), before 0.15 is 0.8 (dropped)
    kept = torch.isfinite(process_logits(logits, 1.0, -1, 0.7))
    assert kept.tolist() == [[False, True, False, True]]
    kept = torch.isfinite(process_logits(logits, 1.0, 3, 1.0))  # top-k 3 drops the smallest
    assert kept.tolist() == [[False, True, True, True]]
    kept = torch.isfinite(process_logits(logits, 1.0, 2, 0.95))  # both: top-k leaves 0.5, 0.3
    assert kept.tolist() == [[False, True, False, True]]
    # temperature 2: p_i^(1/2) / sum_j p_j^(1/2)
    got = torch.softmax(process_logits(logits, 2.0, -1, 1.0), -1)
    root = probs.sqrt()
    torch.testing.assert_close(got, root / root.sum())


def test_sample_next_log_prob_is_that_of_the_renormalized_filtered_distribution():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(50):
        tok, lp = sample_next(probs.log(), 1.0, -1, 0.7, gen)
        t = int(tok)
        seen.add(t)
        assert t in (1, 3)  # only the nucleus is sampled
        assert math.isclose(float(lp), math.log(float(probs[0, t]) / 0.8), rel_tol=1e-5)
    assert seen == {1, 3}
    tok, lp = sample_next(probs.log(), 0.0, -1, 1.0, gen)  # greedy
    assert int(tok) == 1 and math.isclose(float(lp), math.log(0.5), rel_tol=1e-5)


def _tiny_config(vocab=37):
    from transformers import Qwen2Config

    cfg = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    cfg._attn_implementation = "sdpa"
    return cfg


def _tiny_model(vocab=37, seed=0):
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    return Qwen2ForCausalLM(_tiny_config(vocab)).eval()


def test_batched_kv_cache_generation_matches_per_sequence_full_forward():
    """Left padding, position ids and the KV cache: every generated token's log-prob equals the one of a
    plain forward pass over that sequence alone (no padding, no cache)."""
    model = _tiny_model()
    prompts = [[3, 4, 5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15]]
    eos = {2}
    out = generate_batch(model, prompts, [6, 4, 6], temperature=1.0, top_k=-1, top_p=1.0, eos_ids=eos, pad_id=0,
                         generator=torch.Generator().manual_seed(1))
    for prompt, limit, (tokens, log_probs) in zip(prompts, [6, 4, 6], out):
        assert 1 <= len(tokens) <= limit and len(log_probs) == len(tokens)
        assert all(t not in eos for t in tokens[:-1])  # generation stops at the first eos
        assert tokens[-1] in eos or len(tokens) == limit
        with torch.no_grad():
            full = model(input_ids=torch.tensor([prompt + tokens])).logits[0].log_softmax(-1)
        ref = [float(full[len(prompt) - 1 + j, t]) for j, t in enumerate(tokens)]
        assert log_probs == pytest.approx(ref, abs=1e-4)


def _greedy_reference(model, prompt, limit, eos_ids):
    tokens = []
    with torch.no_grad():
        while len(tokens) < limit:
            tokens.append(int(model(input_ids=torch.tensor([prompt + tokens])).logits[0, -1].argmax()))
            if tokens[-1] in eos_ids:
                break
    return tokens


def test_generation_stops_each_row_at_its_eos_and_limit():
    """Rows end at different steps (an eos for one, the length limit for another): each keeps exactly its own
    tokens, the eos included (finished rows keep stepping on masked pads), as greedy decoding of each alone."""
    model = _tiny_model()
    prompts, limits = [[3, 4], [6, 7, 8], [9]], [8, 3, 5]
    eos = {_greedy_reference(model, [3, 4], 2, set())[1]}  # row 0 ends on its second token
    out = generate_batch(model, prompts, limits, temperature=0.0, top_k=-1, top_p=1.0, eos_ids=eos, pad_id=0,
                         generator=torch.Generator().manual_seed(0))
    for prompt, limit, (tokens, log_probs) in zip(prompts, limits, out):
        assert tokens == _greedy_reference(model, prompt, limit, eos)
        assert len(log_probs) == len(tokens)
    assert len(out[0][0]) <= 2


def test_unimplemented_sampling_parameters_are_refused():
    check_sampling_params({"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True})
    with pytest.raises(ValueError, match="repetition_penalty"):
        check_sampling_params({"repetition_penalty": 1.1})
    with pytest.raises(ValueError, match="min_p"):
        check_sampling_params({"temperature": 1.0, "min_p": 0.1})


# -- device decisions (pure, fake inputs) ----------------------------------------------------------------------------


def test_server_placement_mirrors_verls_vllm_servers_on_cuda():
    from verl.plugin.platform.platform_cuda import PlatformCUDA

    cuda = PlatformCUDA()
    placement = server_placement("cuda", ["3"], cuda.visible_devices_envvar(), cuda.ray_noset_envvars())
    assert placement.device == "cuda:0"  # the only GPU the server process sees
    assert placement.env_vars == {"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1", "CUDA_VISIBLE_DEVICES": "3"}
    assert (placement.visible_devices_keyword, placement.visible_devices) == ("CUDA_VISIBLE_DEVICES", "3")


def test_server_placement_on_other_accelerators_and_without_one():
    noset = ["RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES"]
    npu = server_placement("npu", [1, 2], "ASCEND_RT_VISIBLE_DEVICES", noset)
    assert npu.device == "npu:0" and npu.env_vars["ASCEND_RT_VISIBLE_DEVICES"] == "1,2"
    with pytest.raises(RuntimeError, match="holds no accelerator"):
        server_placement("cuda", [], "CUDA_VISIBLE_DEVICES", [])


def test_server_placement_on_the_cpu_platform_sets_nothing():
    # rpg_ext.cpu's platform: logical Ray GPUs, CUDA_VISIBLE_DEVICES as its variable; the server stays on the CPU
    assert server_placement("cpu", ["0"], "CUDA_VISIBLE_DEVICES", []) == ServerPlacement(device="cpu")


def test_sleep_offloads_only_on_an_accelerator_with_free_cache_engine():
    assert offloads_on_sleep("cuda:0", True) and offloads_on_sleep(torch.device("cuda", 0), True)
    assert not offloads_on_sleep("cuda:0", False)
    assert not offloads_on_sleep("cpu", True) and not offloads_on_sleep("cpu", False)


def test_visible_devices_are_set_before_the_device_runtime_and_refused_after():
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    check_visible_devices(env, None, None, device_initialized=True)  # the CPU: nothing to do
    check_visible_devices(env, "CUDA_VISIBLE_DEVICES", "0,1,2,3", device_initialized=True)  # already right
    check_visible_devices(env, "CUDA_VISIBLE_DEVICES", "2", device_initialized=False)
    assert env == {"CUDA_VISIBLE_DEVICES": "2"}
    with pytest.raises(RuntimeError, match="initialized"):
        check_visible_devices(env, "CUDA_VISIBLE_DEVICES", "3", device_initialized=True)


def test_server_must_see_exactly_its_replicas_devices():
    check_device_count(1, "3")
    check_device_count(8, None)  # not pinned (the CPU)
    with pytest.raises(RuntimeError, match="sees 8 devices, expected 1"):
        check_device_count(8, "3")


# -- the replica launches its server where its worker is ---------------------------------------------------------


NODE_A, NODE_B = "a7" * 28, "b1" * 28  # Ray node ids (56 hex digits)


class _Awaitable:
    def __init__(self, value=None):
        self.value = value

    def __await__(self):
        if False:
            yield
        return self.value


class _FakeActorClass:
    def __init__(self, launched):
        self.launched = launched

    def options(self, **options):
        self.launched["options"] = options
        return self

    def remote(self, **kwargs):
        self.launched["kwargs"] = kwargs
        return types.SimpleNamespace(set_global_steps=types.SimpleNamespace(remote=lambda steps: _Awaitable()))


def _launch(monkeypatch, worker_info, platform):
    import ray

    from rpg_ext import hf_rollout
    from verl.workers.config import RolloutConfig
    from verl.workers.rollout.replica import RolloutMode

    launched = {}
    fake_ray = types.SimpleNamespace(util=ray.util, remote=lambda cls: _FakeActorClass(launched))
    monkeypatch.setattr(hf_rollout, "ray", fake_ray)
    monkeypatch.setattr(hf_rollout, "get_platform", lambda: platform)
    monkeypatch.setattr(hf_rollout, "get_visible_devices_keyword", platform.visible_devices_envvar)
    worker = types.SimpleNamespace(__ray_call__=types.SimpleNamespace(remote=lambda fn: _Awaitable(worker_info)))
    replica = HFReplica(replica_rank=2, config=RolloutConfig(name="hf", tensor_model_parallel_size=1),
                        model_config=None, gpus_per_node=1)
    replica.workers, replica.rollout_mode = [worker], RolloutMode.HYBRID
    asyncio.run(replica.launch_servers())
    return replica, launched


def test_replica_launches_its_server_on_its_workers_gpu(monkeypatch):
    from verl.plugin.platform.platform_cuda import PlatformCUDA

    replica, launched = _launch(monkeypatch, (NODE_A, "cuda", ["5"]), PlatformCUDA())
    options, kwargs = launched["options"], launched["kwargs"]
    assert options["name"] == "hf_rollout_server_2_0"
    assert options["scheduling_strategy"].node_id == NODE_A and options["scheduling_strategy"].soft is False
    assert "num_gpus" not in options and "resources" not in options  # the worker's bundle holds the GPU
    assert options["runtime_env"] == {
        "env_vars": {"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1", "CUDA_VISIBLE_DEVICES": "5"}
    }
    assert kwargs["device"] == "cuda:0" and kwargs["visible_devices"] == "5"
    assert kwargs["visible_devices_keyword"] == "CUDA_VISIBLE_DEVICES"
    assert replica.servers and replica.server_address == "hf_rollout_server_2_0"


def test_replica_on_the_cpu_platform_launches_as_before(monkeypatch):
    # rpg_ext.cpu.platform's values (not imported: that would register the cpu platform in this process)
    cpu = types.SimpleNamespace(visible_devices_envvar=lambda: "CUDA_VISIBLE_DEVICES", ray_noset_envvars=lambda: [])
    _, launched = _launch(monkeypatch, (NODE_B, "cpu", ["0"]), cpu)
    assert "runtime_env" not in launched["options"]
    assert launched["kwargs"]["device"] == "cpu" and launched["kwargs"]["visible_devices"] is None


# -- the server's protocol on a tiny model (no Ray; the CPU stands in for the device) -----------------------------


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from transformers import Qwen2ForCausalLM

    path = tmp_path_factory.mktemp("tiny_qwen2")
    torch.manual_seed(0)
    Qwen2ForCausalLM(_tiny_config()).save_pretrained(path)
    return str(path)


def _server(path, **rollout):
    from verl.workers.config import HFModelConfig, RolloutConfig
    from verl.workers.rollout.replica import RolloutMode

    config = RolloutConfig(name="hf", tensor_model_parallel_size=1, dtype="float32", prompt_length=16,
                           response_length=6, **rollout)
    model_config = HFModelConfig(path=path, load_tokenizer=False)
    return HFRolloutServer(config=config, model_config=model_config, rollout_mode=RolloutMode.HYBRID,
                           replica_rank=0, device="cpu")


PARAMS = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True, "repetition_penalty": 1.0}


def test_server_batches_concurrent_requests_and_counts_its_throughput(tiny_model_dir):
    server = _server(tiny_model_dir)
    assert server.device == torch.device("cpu") and not server.offload_on_sleep

    async def run():
        outs = await asyncio.gather(*[server.generate([3, 4, 5 + i], dict(PARAMS), f"r{i}") for i in range(3)])
        stats = await server.get_stats()
        return outs, stats, await server.get_stats()

    outs, stats, after_reset = asyncio.run(run())
    assert all(1 <= len(o.token_ids) <= 6 and len(o.log_probs) == len(o.token_ids) for o in outs)
    assert stats["batches"] == 1 and stats["requests"] == 3  # one batched call
    assert stats["generated_tokens"] == sum(len(o.token_ids) for o in outs) and stats["prompt_tokens"] == 9
    assert stats["busy_s"] > 0
    assert after_reset["batches"] == 0 and after_reset["generated_tokens"] == 0
    metrics = throughput_metrics([stats])
    assert metrics["perf/hf_rollout/gen_tokens_per_s"] == pytest.approx(stats["generated_tokens"] / stats["busy_s"])


def test_sleep_and_wake_are_no_ops_on_the_cpu(tiny_model_dir):
    server = _server(tiny_model_dir)
    moves = []
    server._move_model = moves.append

    async def run():
        await server.sleep()
        assert not server.asleep
        out = await server.generate([3, 4], dict(PARAMS), "r")  # served at once
        await server.wake_up()
        return out

    assert asyncio.run(run()).token_ids and moves == []


def test_sleep_offloads_and_requests_wait_for_wake_up_on_an_accelerator(tiny_model_dir):
    """As on a GPU (the moves are recorded, not made): sleep moves the model to host memory, a request that arrives
    meanwhile waits, wake_up(kv_cache) alone does not wake it, wake_up(weights) moves it back and serves."""
    server = _server(tiny_model_dir)
    server.offload_on_sleep = True  # what offloads_on_sleep("cuda:0", True) decides
    server.device = torch.device("meta")  # stands in for cuda:0 in the recorded moves
    moves = []
    server._move_model = lambda device: moves.append(str(device))

    async def run():
        await server.sleep()
        await server.sleep()  # idempotent
        assert server.asleep and moves == ["cpu"]
        request = asyncio.create_task(server.generate([3, 4], dict(PARAMS), "r"))
        await asyncio.sleep(0.3)
        assert not request.done()  # parked while asleep
        await server.wake_up(tags=["kv_cache"])
        await asyncio.sleep(0.1)
        assert not request.done() and server.asleep
        await server.wake_up(tags=["weights"])
        out = await asyncio.wait_for(request, 60)
        await server.wake_up()  # already awake
        return out

    assert asyncio.run(run()).token_ids
    assert moves == ["cpu", "meta"]  # to host memory, back to the device


def test_sleep_waits_for_the_running_batch(tiny_model_dir):
    server = _server(tiny_model_dir)
    server.offload_on_sleep = True
    moves = []
    server._move_model = lambda device: moves.append((str(device), len(server._pending), server.stats.batches))

    async def run():
        request = asyncio.create_task(server.generate([3, 4, 5], dict(PARAMS), "r"))
        await asyncio.sleep(0)  # queued
        await server.sleep()
        return await asyncio.wait_for(request, 60)

    assert asyncio.run(run()).stop_reason == "completed"
    assert moves == [("cpu", 0, 1)]  # moved only after the queued request's batch was generated


def test_adapter_forwards_resume_and_release_to_its_server_like_vllms(tiny_model_dir, monkeypatch):
    from rpg_ext import hf_rollout
    from verl.workers.config import HFModelConfig, RolloutConfig

    calls = []
    server = types.SimpleNamespace(
        wake_up=types.SimpleNamespace(remote=lambda tags=None: calls.append(("wake_up", tags)) or _Awaitable()),
        sleep=types.SimpleNamespace(remote=lambda: calls.append(("sleep",)) or _Awaitable()),
    )
    model_config = HFModelConfig(path=tiny_model_dir, load_tokenizer=False)
    for device, free_cache_engine, expected in (
        ("cuda", True, [("wake_up", ["weights"]), ("sleep",)]),
        ("cuda", False, []),
        ("cpu", True, []),  # rpg_ext.cpu: nothing to move, no call (as before)
    ):
        calls.clear()
        monkeypatch.setattr(hf_rollout, "get_device_name", lambda: device)
        config = RolloutConfig(name="hf", tensor_model_parallel_size=1, free_cache_engine=free_cache_engine)
        adapter = HFServerAdapter(config, model_config)
        adapter._server = server

        async def run():
            await adapter.resume(tags=["weights"])
            await adapter.release()

        asyncio.run(run())
        assert calls == expected


# -- throughput metrics ------------------------------------------------------------------------------------------


def test_throughput_metrics_against_hand_computed_values():
    stats = [
        {"generated_tokens": 300, "prompt_tokens": 1000, "requests": 8, "batches": 2, "busy_s": 2.0},
        {"generated_tokens": 100, "prompt_tokens": 500, "requests": 4, "batches": 2, "busy_s": 3.0},
        {"generated_tokens": 0, "prompt_tokens": 0, "requests": 0, "batches": 0, "busy_s": 0.0},  # idle replica
    ]
    assert throughput_metrics(stats) == {
        "perf/hf_rollout/gen_tokens_per_s": 400 / 5.0,
        "perf/hf_rollout/generated_tokens": 400.0,
        "perf/hf_rollout/prompt_tokens": 1500.0,
        "perf/hf_rollout/busy_s": 3.0,
        "perf/hf_rollout/mean_batch_size": 3.0,
    }
    assert throughput_metrics([]) == {} and throughput_metrics(stats[2:]) == {}


def test_collect_rollout_metrics_ignores_other_rollouts():
    other = types.SimpleNamespace(servers=[object()])  # e.g. a vLLM replica
    assert collect_rollout_metrics([other]) == {}


# -- registration on every platform (fresh processes) -------------------------------------------------------------


def _fresh(code, **env_extra):
    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    env.update(env_extra)
    r = subprocess.run([PY, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_plain_import_verl_registers_the_hf_rollout_lazily_on_a_non_cpu_platform(fresh_import_verl):
    info = fresh_import_verl
    assert not any(info["imported_by_import_verl"].values()), info  # nothing Ray/rollout-heavy at import verl
    assert info["hf_table"] == "rpg_ext.hf_rollout.HFServerAdapter"
    assert info["hf_replica"] == "rpg_ext.hf_rollout.HFReplica"
    assert info["hf_adapter"] == "rpg_ext.hf_rollout.HFServerAdapter"
    assert info["device"] == "cuda" and not info["cpu_registered"]  # verl's own platform, not rpg_ext.cpu


def test_registration_has_no_import_cycle_whatever_is_imported_first():
    # a verl rollout module first (verl's plugin loading runs inside it), the rollout module first, and the plugin
    # imported by hand after verl's tables (plugins disabled): registered in every case
    for first in ("import verl.workers.rollout.replica", "import rpg_ext.hf_rollout",
                  "from verl.workers.rollout.base import get_rollout_class"):
        info = _fresh(
            f"""
            import json
            {first}
            from rpg_ext.rollouts import hf_rollout_registered
            print(json.dumps({{"registered": hf_rollout_registered()}}))
            """
        )
        assert info["registered"], first
    info = _fresh(
        """
        import json
        import verl.workers.rollout.replica
        from rpg_ext.rollouts import hf_rollout_registered
        before = hf_rollout_registered()
        import rpg_ext.plugin
        print(json.dumps({"before": before, "after": hf_rollout_registered()}))
        """,
        VERL_USE_EXTERNAL_PLUGINS="none",
    )
    assert info == {"before": False, "after": True}


def test_another_verl_release_is_refused_when_hf_is_selected():
    info = _fresh(
        """
        import json, verl
        verl.__version__ = "0.9.2"
        from verl.workers.rollout.base import get_rollout_class
        from verl.workers.rollout.replica import get_rollout_replica_class
        errors = []
        for resolve in (lambda: get_rollout_replica_class("hf"), lambda: get_rollout_class("hf", "async")):
            try:
                resolve()
                errors.append(None)
            except RuntimeError as e:
                errors.append(str(e))
        print(json.dumps(errors))
        """
    )
    assert len(info) == 2
    for message in info:
        assert message and "written for verl==0.9.1" in message and "verl 0.9.2 is installed" in message


# -- can verl's vLLM rollout run here? -----------------------------------------------------------------------------


def test_vllm_rollout_check_decisions():
    missing = rollouts.VllmStatus(False, error="vllm is not installed")
    assert rollouts.vllm_rollout_check(gpu_visible=False, status=missing) == (False, None)  # CPU path: no vLLM
    assert rollouts.vllm_rollout_check(gpu_visible=True, status=rollouts.VllmStatus(True, "0.12.0")) == (True, None)
    usable, message = rollouts.vllm_rollout_check(gpu_visible=True, status=missing)
    assert not usable and "\n" not in message  # one paragraph
    for part in ("a GPU is visible", "vllm is not installed", "actor_rollout_ref.rollout.name=hf", "ROLLOUT=hf",
                 "tensor_model_parallel_size=1", "pip install -e '.[vllm]'"):
        assert part in message


def test_vllm_status_imports_vllm_in_a_fresh_process(tmp_path, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("vllm") is None:  # this host
        assert rollouts.vllm_status() == rollouts.VllmStatus(False, error="vllm is not installed")
    for name, body, expected in (
        ("broken", "raise ImportError('libcudart.so.12: cannot open shared object file')",
         rollouts.VllmStatus(False, error="ImportError: libcudart.so.12: cannot open shared object file")),
        ("good", "__version__ = '0.0.fake'", rollouts.VllmStatus(True, version="0.0.fake")),
    ):
        (tmp_path / name / "vllm").mkdir(parents=True)
        (tmp_path / name / "vllm" / "__init__.py").write_text(body + "\n")
        monkeypatch.syspath_prepend(str(tmp_path / name))
        monkeypatch.setenv("PYTHONPATH", str(tmp_path / name))
        sys.modules.pop("vllm", None)
        assert rollouts.vllm_status() == expected
        monkeypatch.undo()
