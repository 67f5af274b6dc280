"""rpg_ext.cpu without a trainer: sampling of the hf rollout, its batched KV-cache generation, the runtime
patches, and that the CPU platform stays inert unless selected (simulated GPU host, broken plugin)."""

import math
import os
import stat
import subprocess
import sys
import textwrap

import pytest
import torch

from rpg_ext.cpu.hf_rollout import generate_batch, process_logits, sample_next
from rpg_ext.cpu.patches import dedupe_backend

PY = sys.executable


# -- sampling ----------------------------------------------------------------------------------------------------


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


def _tiny_model(vocab=37, seed=0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(cfg).eval()


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


def test_dedupe_backend():
    assert dedupe_backend("cpu:gloo,cpu:gloo") == "cpu:gloo"
    assert dedupe_backend("cpu:gloo,cuda:nccl") == "cpu:gloo,cuda:nccl"
    assert dedupe_backend("gloo") == "gloo" and dedupe_backend(None) is None


# -- platform selection ------------------------------------------------------------------------------------------

_PROBE = textwrap.dedent(
    """
    import json, torch.distributed as dist, verl
    from verl.plugin.platform import PlatformRegistry, get_platform
    from verl.plugin.platform.platform_manager import _detect_platform_name
    import rpg_ext.cpu as cpu
    info = {"device": get_platform().device_name, "active": cpu.is_active(),
            "registered": "cpu" in PlatformRegistry.registered_names(),
            "patched": bool(getattr(dist.init_process_group, "_rpg_cpu_patched", False)),
            "gpu_visible": cpu.gpu_visible()}
    import rpg_ext.cpu.platform  # registered explicitly, it is still never auto-detected
    info["detected_with_cpu_registered"] = _detect_platform_name()
    print(json.dumps(info))
    """
)


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    env.update(extra)
    return env


@pytest.fixture
def fake_gpu_path(tmp_path):
    """A PATH on which `nvidia-smi` exists and succeeds: what verl and rpg_ext see on a GPU host."""
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (fake)'\nexit 0\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    return f"{smi.parent}{os.pathsep}{os.environ.get('PATH', '')}"


def _probe(env):
    import json

    r = subprocess.run([PY, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_cpu_platform_is_not_selected_on_a_gpu_host(fake_gpu_path):
    info = _probe(_env(PATH=fake_gpu_path))
    assert info["gpu_visible"] is True
    assert info["device"] == "cuda"  # verl's own choice on a GPU host
    assert not info["active"] and not info["registered"] and not info["patched"]
    assert info["detected_with_cpu_registered"] == "nvidia"


def test_cpu_platform_is_inert_unless_requested_and_active_when_requested():
    info = _probe(_env())
    assert not info["active"] and not info["registered"] and not info["patched"]
    info = _probe(_env(VERL_PLATFORM="cpu"))
    assert info["device"] == "cpu" and info["active"] and info["registered"] and info["patched"]


def test_demo_refuses_to_run_where_a_gpu_is_visible(fake_gpu_path, tmp_path):
    r = subprocess.run([PY, "-m", "rpg_ext.cpu.demo", "--steps", "1", "--run-dir", str(tmp_path / "run")],
                       capture_output=True, text=True, env=_env(PATH=fake_gpu_path), timeout=300)
    assert r.returncode != 0
    assert "accelerator is visible" in r.stderr
    assert not (tmp_path / "run").exists()


# -- a broken CPU plugin is reported loudly -------------------------------------------------------------------------


@pytest.fixture
def broken_cpu_module(tmp_path):
    """A sitecustomize that makes `rpg_ext.cpu.hf_rollout` fail to import (as a broken dependency would)."""
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(
        """
        import sys
        class _Broken:
            def find_spec(self, name, path=None, target=None):
                if name == "rpg_ext.cpu.hf_rollout":
                    raise ImportError("simulated broken module rpg_ext.cpu.hf_rollout")
        sys.meta_path.insert(0, _Broken())
        """
    ))
    return str(tmp_path)


def _check(*args, env):
    return subprocess.run([PY, "-m", "rpg_ext", "check", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_check_passes_with_the_cpu_platform():
    r = _check("--cpu", env=_env())
    assert r.returncode == 0, r.stderr[-3000:]
    assert "CPU platform" in r.stdout


def test_check_reports_a_broken_cpu_plugin_loudly(broken_cpu_module):
    env = _env(PYTHONPATH=broken_cpu_module + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for r in (_check("--cpu", env=env), _check(env={**env, "VERL_PLATFORM": "cpu"})):
        assert r.returncode == 1
        assert "CPU platform was requested" in r.stderr
        assert "simulated broken module rpg_ext.cpu.hf_rollout" in r.stderr  # the hidden error, shown
    # the losses themselves still load, and without the CPU platform requested the check passes
    r = _check(env=env)
    assert r.returncode == 0, r.stderr[-3000:]


def test_patches_refuse_another_verl_release(monkeypatch):
    import verl

    from rpg_ext.cpu import patches

    monkeypatch.setattr(verl, "__version__", "0.9.2")
    with pytest.raises(RuntimeError, match=r"written for verl==0\.9\.1, but verl 0\.9\.2 is installed"):
        patches.patch_init_process_group()
    with pytest.raises(RuntimeError, match=r"0\.9\.2"):
        patches.patch_forward_only_offload()
    with pytest.raises(RuntimeError, match=r"0\.9\.2"):
        patches.patch_valuehead_attention()


def test_unimplemented_sampling_parameters_are_refused():
    from rpg_ext.cpu.hf_rollout import check_sampling_params

    check_sampling_params({"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True})
    with pytest.raises(ValueError, match="repetition_penalty"):
        check_sampling_params({"repetition_penalty": 1.1})
    with pytest.raises(ValueError, match="min_p"):
        check_sampling_params({"temperature": 1.0, "min_p": 0.1})
