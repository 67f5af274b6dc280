"""The recipe's reward (recipe/rpg/reward.py): known answers, data sources, and the path through verl's
DAPO reward manager (overlong shaping) to the validation metric names.

Expected values are written by hand from the problem and from the scoring rule the module documents
(verl's math_dapo: last "Answer:" in the final 300 characters, else last \\boxed{} in the final 100,
normalized string comparison, +1/-1).
"""

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from recipe.rpg import data
from recipe.rpg.reward import DATA_SOURCES, MAX_GROUND_TRUTH_CHARS, compute_score
from tests.data_helpers import REPO, build_byte_tokenizer, shared_eval_dir

LONG_REASONING = "Let us consider the possible cases one at a time and check each. " * 200  # ~13k characters


def correct(data_source, response, ground_truth):
    result = compute_score(data_source, response, ground_truth)
    assert set(result) == {"score", "acc", "pred"}
    assert (result["score"], result["acc"]) in {(1.0, 1.0), (-1.0, 0.0)}
    return result["acc"] == 1.0


# --------------------------------------------------------------------------------------------------------
# Known answers. AIME 2024 I problem 4 style: the answer is the integer 540 (ground truth "540").


@pytest.mark.parametrize(
    "response, ground_truth, expected",
    [
        # correct integer answer on the last line
        ("We compute the maximum.\nAnswer: 540", "540", True),
        ("Answer:540", "540", True),
        ("answer: 540", "540", True),  # the "Answer:" match ignores case
        # wrong answer
        ("We compute the maximum.\nAnswer: 541", "540", False),
        ("Answer: 54", "540", False),
        # answer not on the last line: the last "Answer:" in the final 300 characters counts
        ("Answer: 540\nI double-checked this value.", "540", True),
        ("Answer: 12\nWait, that is wrong.\nAnswer: 540", "540", True),
        ("Answer: 540\nWait, that is wrong.\nAnswer: 12", "540", False),
        # missing "Answer:": no prediction, unless a \boxed{} ends the response
        ("The maximum is 540.", "540", False),
        ("So the maximum is \\boxed{540}", "540", True),
        ("So the maximum is \\boxed{541}", "540", False),
        # LaTeX forms after "Answer:"
        ("Answer: \\boxed{540}", "540", True),
        ("Answer: $540$", "540", True),
        ("Answer: $\\boxed{540}$", "540", True),
        ("Answer: x = 540", "540", True),  # the text after the last "=" is the answer
        ("Answer: 1,080", "1080", True),  # thousands separators
        # trailing period and units
        ("Answer: $540$.", "540", True),  # a period after $...$ is outside the answer
        ("Answer: 540.", "540", False),  # a bare trailing period stays part of the answer (paper's scorer)
        ("Answer: 540 degrees", "540", True),
        ("Answer: 540^\\circ", "540", True),
        ("Answer: 12 cm", "12", True),
        ("Answer: 12 apples", "12", False),  # only the scorer's fixed list of units is removed
        # very long responses: only the tail counts
        (LONG_REASONING + "\nAnswer: 540", "540", True),
        ("Answer: 540\n" + LONG_REASONING, "540", False),  # answer far before the end (> 300 characters)
        (LONG_REASONING, "540", False),  # truncated before any answer
        # empty response
        ("", "540", False),
    ],
)
def test_known_answers_integer(response, ground_truth, expected):
    for data_source in DATA_SOURCES:
        assert correct(data_source, response, ground_truth) is expected, (data_source, response[-60:])


@pytest.mark.parametrize(
    "response, ground_truth, expected",
    [
        # fractions
        ("Answer: \\frac{3}{4}", "\\frac{3}{4}", True),
        ("Answer: $\\frac{3}{4}$", "\\frac{3}{4}", True),
        ("Answer: \\frac34", "\\frac{3}{4}", True),  # TeX shorthand \fracab
        ("Answer: \\frac{3}{4}", "$\\frac{3}{4}$", True),  # ground truth written in $...$
        ("Answer: \\frac{4}{3}", "\\frac{3}{4}", False),
        ("Answer: 3/4", "\\frac{3}{4}", False),  # no symbolic equivalence
        ("Answer: 0.75", "\\frac{3}{4}", False),
        ("Answer: \\dfrac{3}{4}", "\\frac{3}{4}", False),  # \dfrac is not rewritten
        # radicals
        ("Answer: 2\\sqrt{3}", "2\\sqrt{3}", True),
        ("Answer: 2\\sqrt3", "2\\sqrt{3}", True),  # TeX shorthand \sqrta
        ("Answer: 2 \\sqrt{3}", "2\\sqrt{3}", True),  # spaces are removed
        ("Answer: $4\\sqrt{2}$", "4\\sqrt{2}", True),
        ("Answer: \\sqrt{12}", "2\\sqrt{3}", False),
        ("Answer: \\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt{3}}{2}", True),
        # negative integers (AMC 2023 has one: -1)
        ("Answer: -1", "-1", True),
        ("Answer: 1", "-1", False),
        # degrees in the ground truth (AIME 2025 has 336^\circ)
        ("Answer: 336", "336^\\circ", True),
        ("Answer: 336^\\circ", "336^\\circ", True),
        ("Answer: 336^{\\circ}", "336^\\circ", True),
        ("Answer: 335", "336^\\circ", False),
    ],
)
def test_known_answers_fractions_radicals(response, ground_truth, expected):
    for data_source in ("amc23", "minerva", "olympiadbench", "aime2025"):
        assert correct(data_source, response, ground_truth) is expected, (data_source, response)


def test_prediction_and_score_values():
    assert compute_score("aime2024", "Answer: $540$", "540") == {"score": 1.0, "acc": 1.0, "pred": "540"}
    assert compute_score("aime2024", "no answer here", "540") == {"score": -1.0, "acc": 0.0, "pred": "[INVALID]"}


# --------------------------------------------------------------------------------------------------------
# The released evaluation files' ground truths


def released_ground_truths(file_name):
    df = pd.read_parquet(shared_eval_dir() / file_name)
    return sorted({rm["ground_truth"] for rm in df["reward_model"]})


def test_released_amc_ground_truths_are_integers_and_score():
    """Data fact: the released AMC 2023 file states every answer as an integer (problems asking for a fraction
    or radical ask for e.g. m+n); -1 is the only negative one. Each scores right when answered, wrong otherwise."""
    gts = released_ground_truths("amc-23.parquet")
    assert all(re.fullmatch(r"-?\d+", gt) for gt in gts), gts
    assert [gt for gt in gts if gt.startswith("-")] == ["-1"]
    for gt in gts:
        assert correct("amc_23", f"Thus the answer follows.\nAnswer: {gt}", gt)
        assert correct("amc23", f"Answer: $\\boxed{{{gt}}}$", gt)
        assert not correct("amc23", f"Answer: {int(gt) + 1}", gt)


def test_released_aime_ground_truths_score():
    gts_2024 = released_ground_truths("aime-2024.parquet")
    gts_2025 = released_ground_truths("aime25.parquet")
    assert all(re.fullmatch(r"\d+", gt) for gt in gts_2024)
    assert [gt for gt in gts_2025 if not gt.isdigit()] == ["336^\\circ"]
    for data_source, gts in (("aime2024", gts_2024), ("math_dapo", gts_2024), ("aime2025", gts_2025)):
        for gt in gts:
            number = int(gt.replace("^\\circ", ""))
            assert correct(data_source, f"Answer: {number}", gt)
            assert not correct(data_source, f"Answer: {number + 1}", gt)


# --------------------------------------------------------------------------------------------------------
# Data sources and bad inputs


def test_amc_23_alias_and_default_router_gap():
    from verl.utils.reward_score import default_compute_score

    with pytest.raises(NotImplementedError):  # why the recipe needs its own reward function
        default_compute_score("amc_23", "Answer: 7", "7")
    assert correct("amc_23", "Answer: 7", "7")


@pytest.mark.parametrize("data_source", ["gsm8k", "aime", "AMC23", ""])
def test_unknown_data_source_raises_with_name(data_source):
    with pytest.raises(ValueError, match=re.escape(repr(data_source))):
        compute_score(data_source, "Answer: 7", "7")


@pytest.mark.parametrize("ground_truth", [None, "", "  ", 7, ["7"]])
def test_bad_ground_truth_raises(ground_truth):
    with pytest.raises(ValueError, match="ground_truth"):
        compute_score("amc23", "Answer: 7", ground_truth)


# --------------------------------------------------------------------------------------------------------
# Bounded time per response: verl's normalizer is quadratic in the ground truth's length


def test_ground_truth_length_limit():
    assert MAX_GROUND_TRUTH_CHARS is data.MAX_GROUND_TRUTH_CHARS == 1000  # one limit, defined in data.py
    at_limit = "1" * MAX_GROUND_TRUTH_CHARS
    assert not correct("aime2024", "Answer: 1", at_limit)  # scored (about 10 ms)
    assert correct("aime2024", "Answer: " + "2" * 250, "2" * 250)
    too_long = "7" * (MAX_GROUND_TRUTH_CHARS + 1)
    with pytest.raises(ValueError) as error:
        compute_score("amc23", "Answer: 7", too_long, {"index": 3})
    message = str(error.value)
    assert f"ground_truth has {MAX_GROUND_TRUTH_CHARS + 1} characters" in message
    assert f"over the limit of {MAX_GROUND_TRUTH_CHARS}" in message
    assert "data_source 'amc23'" in message and "{'index': 3}" in message and "prepare_data.py" in message


# In a child process: a regression hangs it (100k characters of ground truth take verl's normalizer far more
# than ten minutes), and the test fails instead of hanging.
HUGE_INPUTS = r"""
from recipe.rpg.reward import compute_score

try:
    compute_score("amc23", "Answer: 7", "7" * 100_000)
except ValueError as e:
    print("refused:", e)
# the response side: verl reads only its final 300 characters, whatever comes before
for response in ("\\boxed{" * 2_000_000 + "Answer: 540", "Let $x = " * 1_000_000 + "so \\boxed{540}"):
    print(len(response), compute_score("aime2024", response, "540"))
"""


def test_huge_ground_truth_and_response_return_promptly():
    try:
        child = subprocess.run(
            [sys.executable, "-c", HUGE_INPUTS], cwd=REPO, capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.fail("compute_score did not return within 120 s on a 100k-character ground truth or a long response")
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert lines[0].startswith("refused: recipe.rpg.reward.compute_score: ground_truth has 100000 characters")
    assert "data_source 'amc23'" in lines[0]
    assert lines[1:] == [
        "14000011 {'score': 1.0, 'acc': 1.0, 'pred': '540'}",
        "9000014 {'score': 1.0, 'acc': 1.0, 'pred': '540'}",
    ]


# --------------------------------------------------------------------------------------------------------
# Through verl: custom_reward_function + the DAPO reward manager (overlong shaping) + validation metrics

MAX_RESP_LEN = 32
OVERLONG_LEN = 8  # penalty starts after MAX_RESP_LEN - OVERLONG_LEN = 24 response tokens


def reward_config(tokenizer_dir, path, log_overlong):
    from omegaconf import OmegaConf

    return OmegaConf.create(
        {
            "actor_rollout_ref": {"model": {"path": str(tokenizer_dir), "tokenizer_path": None}},
            "reward": {
                "num_workers": 1,
                "custom_reward_function": {"path": path, "name": "compute_score"},
                "reward_manager": {
                    "source": "register",
                    "name": "dapo",
                    "module": {"path": None, "name": "custom_reward_manager"},
                },
                "reward_model": {"enable": False},
                "sandbox_fusion": {"url": None},
                "reward_kwargs": {
                    "overlong_buffer_cfg": {
                        "enable": True,
                        "len": OVERLONG_LEN,
                        "penalty_factor": 1.0,
                        "log": log_overlong,
                    },
                    "max_resp_len": MAX_RESP_LEN,
                },
            },
        }
    )


def make_batch(tokenizer, samples):
    """DataProto as the rollout hands it to the reward loop: left-padded prompts, right-padded responses."""
    import torch
    from verl import DataProto

    prompt_len = 4
    n = len(samples)
    pad = tokenizer.pad_token_id
    prompts = torch.full((n, prompt_len), pad)
    responses = torch.full((n, MAX_RESP_LEN), pad)
    attention = torch.zeros(n, prompt_len + MAX_RESP_LEN, dtype=torch.long)
    for i, (_, _, response, *_) in enumerate(samples):
        p = tokenizer.encode("hi")
        prompts[i, prompt_len - len(p) :] = torch.tensor(p)
        attention[i, prompt_len - len(p) : prompt_len] = 1
        r = tokenizer.encode(response)
        assert len(r) == len(response.encode()) <= MAX_RESP_LEN  # byte tokenizer: one token per byte
        if r:
            responses[i, : len(r)] = torch.tensor(r)
            attention[i, prompt_len : prompt_len + len(r)] = 1
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": attention},
        non_tensors={
            "data_source": np.array([s[0] for s in samples], dtype=object),
            "uid": np.array([s[1] for s in samples], dtype=object),
            "reward_model": np.array([{"ground_truth": s[3], "style": "rule"} for s in samples], dtype=object),
            "extra_info": np.array([{"index": i} for i in range(n)], dtype=object),
        },
    )


# (data_source, uid, response, ground_truth, expected acc, expected reward)
# 24 tokens or fewer: no penalty; 28 tokens: -(28-24)/8 = -0.5; 32 tokens: -(32-24)/8 = -1.0.
SAMPLES = [
    ("aime2024", "p1", "Answer: 540", "540", 1.0, 1.0),
    ("aime2024", "p1", "Answer: 7", "540", 0.0, -1.0),
    ("aime2024", "p1", "x" * 16 + "\nAnswer: 540", "540", 1.0, 0.5),  # 28 tokens, correct
    ("aime2024", "p1", "So we keep going and going on", "540", 0.0, -1.625),  # 29 tokens: -1 - 5/8
    ("amc_23", "p2", "Answer: 7", "7", 1.0, 1.0),
    ("amc23", "p3", "Answer: -1", "-1", 1.0, 1.0),
    ("amc23", "p3", "Answer: 1", "-1", 0.0, -1.0),
    ("amc23", "p3", "", "-1", 0.0, -1.0),  # empty response
    ("amc23", "p3", ("Let me think " * 3)[:32], "-1", 0.0, -2.0),  # 32 tokens: truncated, -1 - 1
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return build_byte_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize("path", ["pkg://recipe.rpg.reward", "recipe/rpg/reward.py"])
@pytest.mark.parametrize("log_overlong", [False, True])
def test_dapo_reward_manager_and_val_metrics(tokenizer_dir, path, log_overlong, repo_root, monkeypatch):
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.experimental.reward_loop.reward_manager import DAPORewardManager
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer
    from verl.utils import hf_tokenizer

    monkeypatch.chdir(repo_root)  # the file path form is relative to the working directory
    assert len(SAMPLES[3][2]) == 29 and len(SAMPLES[8][2]) == 32 and len(SAMPLES[2][2]) == 28

    # verl's reward-loop worker (the class Ray runs remotely) with the recipe's settings
    worker = RewardLoopWorker(reward_config(tokenizer_dir, path, log_overlong))
    assert isinstance(worker.reward_manager, DAPORewardManager)
    tokenizer = hf_tokenizer(str(tokenizer_dir))
    batch = make_batch(tokenizer, SAMPLES)
    outputs = worker.loop.run_until_complete(worker.compute_score_batch(batch))

    for sample, out in zip(SAMPLES, outputs, strict=True):
        data_source, _, response, gt, acc, reward = sample
        info = out["reward_extra_info"]
        assert float(out["reward_score"]) == pytest.approx(reward), (response, out)
        assert info["acc"] == acc and info["score"] == (1.0 if acc else -1.0)
        if log_overlong:
            assert float(info["overlong_reward"]) == pytest.approx(reward - info["score"])
            assert bool(info["overlong"]) is (reward != info["score"])
        else:
            assert "overlong_reward" not in info

    # as RewardLoopManager.compute_rm_score and RayPPOTrainer._validate assemble them
    keys = list(outputs[0]["reward_extra_info"])
    extra = {k: np.array([o["reward_extra_info"][k] for o in outputs]) for k in keys}
    rm_scores = DAPORewardManager.assemble_rm_scores(batch, [o["reward_score"] for o in outputs])
    infos = {"reward": rm_scores.sum(-1).tolist()}
    infos.update({k: v.tolist() for k, v in extra.items()})
    metrics = RayPPOTrainer._val_metrics_update(
        None, batch.non_tensor_batch["data_source"], list(batch.non_tensor_batch["uid"]), infos, []
    )
    # aime2024: one prompt, 4 responses, 2 correct -> mean@4 = 0.5; amc23 (p3): 1 of 4 correct; amc_23: 1 of 1
    assert metrics["val-core/aime2024/acc/mean@4"] == pytest.approx(0.5)
    assert metrics["val-core/amc23/acc/mean@4"] == pytest.approx(0.25)
    assert metrics["val-core/amc_23/acc/mean@1"] == pytest.approx(1.0)
    assert metrics["val-aux/aime2024/reward/mean@4"] == pytest.approx((1.0 - 1.0 + 0.5 - 1.625) / 4)
