"""The embedded task of the CPU run (recipe/rpg/embedded.py): the shipped copy is the spec's, its model does what the
warm start promised, and the builder builds."""

import dataclasses
import json
import random

import pandas as pd
import pytest

from recipe.rpg import embedded
from recipe.rpg.data import apply_template


def test_the_shipped_task_is_built_from_the_spec():
    shipped = embedded.SHIPPED
    assert (shipped / "done").is_file(), "recipe/rpg/embedded_task is missing: python -m recipe.rpg.embedded --ship"
    assert (shipped / "key").read_text().strip() == embedded.cache_key(), (
        "the shipped embedded task was built from another spec or builder: run python -m recipe.rpg.embedded --ship")
    assert embedded.task_dir() == shipped and embedded.ensure_task() == shipped  # no build on first use
    train, val = embedded.make_problems()
    spec = embedded.SPEC
    for name, problems, split in (("train", train[: spec.n_train], "train"), ("val", val, "val")):
        rows = pd.read_parquet(shipped / f"{name}.parquet").to_dict("records")
        expected = embedded.rl_rows(problems, split, spec.data_source)
        assert len(rows) == len(expected) == (spec.n_train if name == "train" else spec.n_val)
        for got, want in zip(rows, expected, strict=True):
            assert got["prompt"][0]["content"] == want["prompt"][0]["content"]
            assert got["reward_model"]["ground_truth"] == want["reward_model"]["ground_truth"]
            assert got["data_source"] == "math_dapo"
    train_texts = {p["raw_problem"] for p in pd.read_parquet(shipped / "train.parquet")["extra_info"]}
    val_texts = {p["raw_problem"] for p in pd.read_parquet(shipped / "val.parquet")["extra_info"]}
    assert not train_texts & val_texts  # held out
    assert all(apply_template(t) for t in val_texts)


def test_the_shipped_model_states_the_sums_but_rarely_in_the_required_format():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(embedded.SHIPPED / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(embedded.SHIPPED / "model")
    train, _ = embedded.make_problems()
    probe_set = random.Random(embedded.SPEC.seed + 1).sample(train, embedded.SPEC.warm_probe_size)
    greedy = embedded.probe(model, tokenizer, probe_set, seed=0, temperature=0.0)
    sampled = embedded.probe(model, tokenizer, probe_set, seed=1, temperature=1.0)
    record = json.loads((embedded.SHIPPED / "warm_start.json").read_text())
    assert greedy["sum_acc"] >= embedded.SPEC.warm_target_sum_acc
    assert greedy["sum_acc"] == pytest.approx(record["probe_greedy_sum_acc"])
    assert sampled["answer_line_acc"] < 0.6  # RL has the format to teach


def test_the_builder_builds_a_spec_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RPG_CPU_CACHE", str(tmp_path))
    spec = dataclasses.replace(embedded.SPEC, seed=7, n_train=50, hidden_size=16, intermediate_size=32,
                               warm_target_sum_acc=0.0, warm_check_every=5, warm_probe_size=8, warm_batch=8)
    assert embedded.task_dir(spec) == tmp_path / embedded.cache_key(spec)  # not the shipped one: another spec
    lines = []
    folder = embedded.ensure_task(spec, log=lines.append)
    assert folder == tmp_path / embedded.cache_key(spec) and (folder / "done").is_file()
    assert (folder / "key").read_text().strip() == embedded.cache_key(spec)
    assert len(pd.read_parquet(folder / "train.parquet")) == 50
    assert json.loads((folder / "warm_start.json").read_text())["warm_steps"] == 5
    assert lines[0].startswith("building the embedded model and task once") and "warm start step 5" in lines[1]
    assert embedded.ensure_task(spec, log=lines.append) == folder and len(lines) == 2  # built once
