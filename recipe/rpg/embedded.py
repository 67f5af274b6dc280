"""The embedded default of the CPU run (``machine=cpu``): a tiny causal LM, its tokenizer and a verifiable task.

``config/machine/cpu.yaml`` points verl at it through the resolver ``${rpg_embedded:model}`` (and ``train.parquet``,
``val.parquet``), which names the task folder without building it.

Everything is built locally (no hub downloads) from :data:`SPEC`. The repository ships the built task in
``recipe/rpg/embedded_task/`` (``python -m recipe.rpg.embedded --ship`` rebuilds it), so a first run starts at
once; when the spec or :data:`BUILD_VERSION` differs from the shipped copy's ``key``, :func:`ensure_task` builds the
task on first use (about a minute and a half on 2 cores, with progress lines) into ``$RPG_CPU_CACHE`` (default
``~/.cache/rpg-verl/cpu-task``), in a folder named by that key:

    <folder>/model                    Hugging Face folder (``actor_rollout_ref.model.path``): a Qwen2 causal LM
                                      and a byte-level BPE tokenizer trained on the task's text, with a ChatML
                                      chat template (eos ``<|im_end|>``) so verl's RLHFDataset and agent loop
                                      render prompts exactly as for a Qwen model
    <folder>/train.parquet            RL prompts in verl's RL parquet format (SPEC.n_train of the training pool)
    <folder>/val.parquet              held-out prompts (no problem text occurs in both files)
    <folder>/warm_start.json          the warm start's record (steps, seconds, probe accuracies)
    <folder>/key                      the spec's key (hash of SPEC and BUILD_VERSION)

The task: one-digit additions told as a short story ("Kim has 7 cards and gets 5 more. How many cards does Kim
have now?", 10 x 10 sums x 20 names x 10 objects), wrapped in the paper's prompt template, to be answered in the
paper's format (a last line ``Answer: 12``); ``data_source`` is ``math_dapo``, which both verl's default reward
router and the recipe's reward (``recipe/rpg/reward.py``) score with verl's ``math_dapo`` scorer (+1 right, -1
wrong or unparsable). 64 problems are held out for validation; their texts never occur in training (the sums
themselves do: there are only 100).

A randomly initialised model never writes ``Answer:``, so RL alone would have nothing to reinforce. The model is
warm-started the way a base model is pretrained: a short supervised pass over solved *training* problems in
which only 30% of the solutions use the required answer line and the others state the answer as a sentence
("The answer is 12.", which the verifier rejects). The base model thus knows the sums (greedy decoding states
the right one on about 95% of problems) but follows the required format only about a quarter of the time when
sampling, like base models often do: verl's validation (sampled, as the paper's Mean@k) starts near 0.2, and
RL from the verifiable reward raises it by teaching the format (and sharpening the sums).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from recipe.rpg.data import apply_template

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@dataclass(frozen=True)
class TaskSpec:
    seed: int = 1234
    max_operand: int = 9  # operands 0..max_operand
    n_val: int = 64
    n_train: int = 3000  # RL training prompts (the warm start sees every non-held-out problem)
    data_source: str = "math_dapo"
    # tokenizer / model
    vocab_size: int = 384
    hidden_size: int = 64
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_positions: int = 256
    # warm start (supervised, on training problems only): solutions end with the paper's "Answer: N" line with
    # probability answer_line_rate, else with the sentence "The answer is N." (which the verifier rejects); it
    # stops once greedy decoding gets the sum right on warm_target_sum_acc of a probe of training problems
    answer_line_rate: float = 0.3
    warm_target_sum_acc: float = 0.95
    warm_max_steps: int = 3000
    warm_check_every: int = 25
    warm_probe_size: int = 128
    warm_batch: int = 32
    warm_lr: float = 3e-3


SPEC = TaskSpec()

_NAMES = ["Ann", "Ben", "Cal", "Dee", "Eli", "Fay", "Gus", "Ivy", "Jon", "Kim", "Lea", "Max", "Ned", "Ola", "Pat",
          "Rex", "Sam", "Tia", "Uma", "Val"]
_THINGS = ["apples", "books", "coins", "cards", "pens", "shells", "stamps", "marbles", "cups", "keys"]


def problem_text(a: int, b: int, name: str, thing: str) -> str:
    return f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?"


def solution_text(a: int, b: int, answer_line: bool = True) -> str:
    """A solution: the paper's answer line ``Answer: N``, or the same answer as a sentence the verifier rejects."""
    return f"Answer: {a + b}" if answer_line else f"The answer is {a + b}."


def stated_number(text: str) -> int | None:
    """The last integer a response states, whatever its format (None when it states none)."""
    numbers = re.findall(r"-?\d+", text)
    return int(numbers[-1]) if numbers else None


def make_problems(spec: TaskSpec = SPEC) -> tuple[list[dict], list[dict]]:
    """All problems, split into (train, val) with disjoint problem texts; each a dict a, b, name, thing, answer."""
    rng = random.Random(spec.seed)
    problems = [
        dict(a=a, b=b, name=name, thing=thing, answer=a + b)
        for a in range(spec.max_operand + 1)
        for b in range(spec.max_operand + 1)
        for name in _NAMES
        for thing in _THINGS
    ]
    rng.shuffle(problems)
    return problems[spec.n_val :], problems[: spec.n_val]


def rl_rows(problems: list[dict], split: str, data_source: str) -> list[dict]:
    """verl RL parquet rows (the layout of shared/data/eval/*.parquet)."""
    rows = []
    for i, p in enumerate(problems):
        problem = problem_text(p["a"], p["b"], p["name"], p["thing"])
        rows.append(
            {
                "data_source": data_source,
                "prompt": [{"role": "user", "content": apply_template(problem)}],
                "ability": "MATH",
                "reward_model": {"ground_truth": str(p["answer"]), "style": "rule-lighteval/MATH_v2"},
                "extra_info": {"index": i, "raw_problem": problem, "split": split},
            }
        )
    return rows


#: Bumped whenever the builder's code changes what it builds (the spec's values are hashed themselves).
BUILD_VERSION = 1
#: The embedded task as built and shipped with the repository (``python -m recipe.rpg.embedded --ship``).
SHIPPED = Path(__file__).resolve().parent / "embedded_task"


def cache_key(spec: TaskSpec = SPEC) -> str:
    h = hashlib.sha256(json.dumps({"spec": asdict(spec), "build": BUILD_VERSION}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    return Path(os.environ.get("RPG_CPU_CACHE", Path.home() / ".cache" / "rpg-verl" / "cpu-task")).expanduser()


def build_tokenizer(texts: list[str], spec: TaskSpec):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = spec.max_positions
    return fast


def build_model(tokenizer, spec: TaskSpec):
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        architectures=["Qwen2ForCausalLM"],
    )
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config).float()
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=True
    )
    return model


def task_dir(spec: TaskSpec = SPEC) -> Path:
    """The task folder of ``spec``: the shipped one when it was built from ``spec``, else the cache's (which may not
    be built yet)."""
    if (SHIPPED / "done").is_file() and (SHIPPED / "key").read_text().strip() == cache_key(spec):
        return SHIPPED
    return cache_root() / cache_key(spec)


#: The OmegaConf resolver of ``config/machine/cpu.yaml``: ``${rpg_embedded:model}`` -> ``<task folder>/model``.
RESOLVER = "rpg_embedded"


def register_resolver() -> None:
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver(RESOLVER, lambda part: str(task_dir() / part), replace=True)


def announce_and_build() -> Path:
    """The launcher's CPU hand-over: say what runs, and build the embedded task if it is not there yet."""
    print("[launch] No GPU is visible: verl's real trainer runs on this CPU, on the embedded tiny model and task, "
          "with the preset's algorithm (machine=cpu).", flush=True)
    return ensure_task(log=lambda line: print(f"[launch] {line}", flush=True))


def ensure_task(spec: TaskSpec = SPEC, log=None) -> Path:
    """Build (once) and return the cached task folder; see the module docstring for its layout. ``log`` gets a
    line per stage of a build (``print`` in the launcher)."""
    final = task_dir(spec)
    if (final / "done").exists():
        return final
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        _build(spec, tmp, log or (lambda line: None))
        (tmp / "key").write_text(cache_key(spec) + "\n")
        (tmp / "done").write_text("ok\n")
        try:
            tmp.rename(final)
        except OSError:  # built concurrently by another process: keep theirs
            if not (final / "done").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _build(spec: TaskSpec, out: Path, log) -> None:
    import pandas as pd

    log(f"building the embedded model and task once (cached in {out.parent}): tokenizer, model, warm start")
    train, val = make_problems(spec)
    corpus = [apply_template(problem_text(p["a"], p["b"], p["name"], p["thing"])) for p in train + val]
    corpus += [solution_text(a, b, line) for a in range(spec.max_operand + 1) for b in range(spec.max_operand + 1)
               for line in (True, False)]
    tokenizer = build_tokenizer(corpus, spec)
    model = build_model(tokenizer, spec)
    record = warm_start(model, tokenizer, train, spec, log)
    model_dir = out / "model"
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" of a 600 kB model
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    pd.DataFrame(rl_rows(train[: spec.n_train], "train", spec.data_source)).to_parquet(out / "train.parquet")
    pd.DataFrame(rl_rows(val, "val", spec.data_source)).to_parquet(out / "val.parquet")
    (out / "warm_start.json").write_text(json.dumps(record, indent=1) + "\n")


def _encode_prompt(tokenizer, p: dict) -> list[int]:
    messages = [{"role": "user", "content": apply_template(problem_text(p["a"], p["b"], p["name"], p["thing"]))}]
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)[
        "input_ids"])


def probe(model, tokenizer, problems: list[dict], seed: int, temperature: float) -> dict:
    """On ``problems``, sampling at ``temperature`` (0: greedy): the fraction whose response states the right
    sum in any format (``sum_acc``) and the fraction answered exactly ``Answer: <sum>`` (``answer_line_acc``)."""
    import torch

    from rpg_ext.hf_rollout import generate_batch

    outputs = generate_batch(
        model, [_encode_prompt(tokenizer, p) for p in problems], [12] * len(problems), temperature=temperature,
        top_k=-1, top_p=1.0, eos_ids={tokenizer.eos_token_id}, pad_id=tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(seed),
    )
    texts = [tokenizer.decode(tokens, skip_special_tokens=True).strip() for tokens, _ in outputs]
    n = len(problems)
    return {
        "sum_acc": sum(stated_number(t) == p["a"] + p["b"] for t, p in zip(texts, problems, strict=True)) / n,
        "answer_line_acc": sum(t == solution_text(p["a"], p["b"]) for t, p in zip(texts, problems, strict=True)) / n,
    }


def warm_start(model, tokenizer, train: list[dict], spec: TaskSpec, log=lambda line: None) -> dict:
    """Supervised pass over solved training problems (loss on the response tokens, eos included).

    A solution ends with the paper's answer line with probability ``answer_line_rate``, else with the answer as
    a sentence: the model learns the sums and to use the required format only some of the time, as base models
    often do. Training stops at the first check where greedy decoding states the right sum (in either format)
    on ``warm_target_sum_acc`` of a fixed probe of training problems: stopping on a measured accuracy fixes
    where RL starts from, whatever the optimisation's path (small models learn such tables in sudden jumps, at
    seed-dependent steps)."""
    import time

    import torch

    rng = random.Random(spec.seed + 1)
    probe_set = rng.sample(train, spec.warm_probe_size)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.warm_lr, weight_decay=0.0)
    pad = tokenizer.pad_token_id
    start, losses, greedy = time.time(), [], {"sum_acc": 0.0}
    for step in range(1, spec.warm_max_steps + 1):
        model.train()
        seqs, masks = [], []
        for p in rng.sample(train, spec.warm_batch):
            prompt = _encode_prompt(tokenizer, p)
            text = solution_text(p["a"], p["b"], answer_line=rng.random() < spec.answer_line_rate)
            response = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
            seqs.append(prompt + response)
            masks.append([0] * len(prompt) + [1] * len(response))
        width = max(map(len, seqs))
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
        attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        loss_mask = torch.tensor([m + [0] * (width - len(m)) for m in masks])[:, 1:].float()
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        loss = (nll * loss_mask).sum() / loss_mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % spec.warm_check_every == 0:
            model.eval()
            greedy = probe(model, tokenizer, probe_set, seed=0, temperature=0.0)
            log(f"  warm start step {step}: greedy sum accuracy {greedy['sum_acc']:.2f} (stops at "
                f"{spec.warm_target_sum_acc}), {time.time() - start:.0f} s")
            if greedy["sum_acc"] >= spec.warm_target_sum_acc:
                break
    else:
        raise RuntimeError(
            f"warm start: after {spec.warm_max_steps} steps greedy decoding states the right sum on "
            f"{greedy['sum_acc']:.2f} of the probe, below the target {spec.warm_target_sum_acc}; the embedded task "
            "cannot be built as specified (recipe/rpg/embedded.py SPEC)"
        )
    model.eval()
    sampled = probe(model, tokenizer, probe_set, seed=1, temperature=1.0)
    return {"warm_steps": step, "final_loss": losses[-1], "seconds": round(time.time() - start, 1),
            "probe_greedy_sum_acc": greedy["sum_acc"], "probe_sampled_sum_acc": sampled["sum_acc"],
            "probe_sampled_answer_line_acc": sampled["answer_line_acc"]}


def ship(spec: TaskSpec = SPEC) -> Path:
    """Build the task into :data:`SHIPPED` (the repository's copy), replacing what is there."""
    tmp_cache = Path(tempfile.mkdtemp(prefix="rpg-embedded-"))
    os.environ["RPG_CPU_CACHE"] = str(tmp_cache)
    try:
        built = ensure_task(spec, log=print) if task_dir(spec) != SHIPPED else None
        if built is not None:
            shutil.rmtree(SHIPPED, ignore_errors=True)
            shutil.copytree(built, SHIPPED)
    finally:
        shutil.rmtree(tmp_cache, ignore_errors=True)
    return SHIPPED


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--ship"]:
        sys.exit("usage: python -m recipe.rpg.embedded --ship   (build the embedded task into recipe/rpg/embedded_task)")
    print(f"shipped: {ship()}")
