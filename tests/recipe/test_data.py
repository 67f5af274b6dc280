"""recipe/rpg/data.py (scripts/prepare_data.py): the paper's evaluation files and DAPO-Math-17k (English) in verl's RL format.

Fixtures are small local files written by the tests; expected outputs are written by hand from the fixtures.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.data_helpers import REPO, build_byte_tokenizer, shared_eval_dir

from recipe.rpg import data as prepare_data  # scripts/prepare_data.py is its command line

PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'


def templated(problem):
    return PREFIX + problem + SUFFIX


def run(capsys, *args):
    rc = prepare_data.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def read_rows(path):
    return pq.read_table(path).to_pylist()


# --------------------------------------------------------------------------------------------------------
# Evaluation files


def test_released_eval_files_facts():
    """What the released files hold (checked independently of the script): 30/30/40 problems x 32 repeats."""
    expected = {
        "aime-2024.parquet": ("math_dapo", 30),
        "aime25.parquet": ("aime2025", 30),
        "amc-23.parquet": ("amc_23", 40),
    }
    for name, (data_source, problems) in expected.items():
        df = pd.read_parquet(shared_eval_dir() / name)
        raw = df["extra_info"].map(lambda e: e["raw_problem"])
        assert len(df) == problems * 32
        assert set(df["data_source"]) == {data_source}
        assert raw.nunique() == problems and (raw.value_counts() == 32).all()
        content = df["prompt"].map(lambda p: p[0]["content"])
        assert (content == PREFIX + raw + SUFFIX).all()  # the template is applied once in the release


def test_eval_files_one_row_per_problem(tmp_path, capsys):
    rc, out, err = run(capsys, "--eval-from", shared_eval_dir(), "--skip-train", "--out", tmp_path)
    assert rc == 0, err
    assert sorted(os.listdir(tmp_path)) == ["aime2024.parquet", "aime2025.parquet", "amc23.parquet"]
    for data_source, released, problems in [
        ("aime2024", "aime-2024.parquet", 30),
        ("aime2025", "aime25.parquet", 30),
        ("amc23", "amc-23.parquet", 40),
    ]:
        rows = read_rows(tmp_path / f"{data_source}.parquet")
        assert len(rows) == problems
        assert f"{data_source}.parquet: data_source {data_source}" in out
        repeats = problems * 31
        assert f"read {problems * 32}, kept {problems}, dropped {repeats} (duplicate {repeats})" in out
        src = pd.read_parquet(shared_eval_dir() / released)
        released_pairs = {
            (e["raw_problem"], rm["ground_truth"]) for e, rm in zip(src["extra_info"], src["reward_model"])
        }
        assert {(r["extra_info"]["raw_problem"], r["reward_model"]["ground_truth"]) for r in rows} == released_pairs
        for i, r in enumerate(rows):
            raw = r["extra_info"]["raw_problem"]
            assert r["data_source"] == data_source and r["ability"] == "MATH"
            assert r["prompt"] == [{"content": templated(raw), "role": "user"}]
            assert r["prompt"][0]["content"].count("Solve the following math problem") == 1
            assert r["reward_model"]["style"] == "rule-lighteval/MATH_v2"
            assert r["extra_info"]["index"] == i and r["extra_info"]["split"] == "test"
            sha = hashlib.sha256(raw.encode()).hexdigest()[:12]
            assert r["extra_info"]["problem_id"] == f"{data_source}-{sha}"


def test_reruns_are_byte_identical(tmp_path, capsys):
    train = tmp_path / "train.parquet"
    write_parquet(train, ORIGINAL_LIKE)
    args = ["--eval-from", shared_eval_dir(), "--train-from", train]
    assert run(capsys, *args, "--out", tmp_path / "a")[0] == 0
    assert run(capsys, *args, "--out", tmp_path / "b")[0] == 0
    first = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    assert run(capsys, *args, "--out", tmp_path / "a")[0] == 0  # again, over the existing files
    assert len(first) == 4
    for name, data in first.items():
        assert (tmp_path / "b" / name).read_bytes() == data
        assert (tmp_path / "a" / name).read_bytes() == data


# --------------------------------------------------------------------------------------------------------
# Training set: DAPO-Math-17k-like fixtures

E1 = "Find the number of positive divisors of $2024$."
E2 = "Let $x$ be a real number with $x^2 = 49$ and $x > 0$. Find $x$."
E3 = "Compute $\\sum_{k=1}^{10} k$."
E4 = "In triangle $ABC$, $\\angle A = 90^\\circ$ and $AB = AC = \\sqrt{2}$. Find $BC$."
E5 = "Café owner Zoë sells $\\pi \\le 4$ pies, each for $3$ dollars; how many dollars for 5 pies?"
C1 = "已知 $x + 1 = 3$，求 $x$ 的值。"
C2 = "设 $n$ 是正整数，求 $n^2$ 的最小值。"

# (problem, ground truth): the original has each problem several times, in its own (the paper's) template
ORIGINAL_LIKE = [
    (E1, "12"), (E2, "7"), (C1, "2"), (E1, "12"), (E3, "55"), (E2, "7"),
    (C2, "1"), (E4, "2"), (C1, "2"), (E5, "15"), (E3, "55"), (E4, "2"), (E1, "12"),
]  # fmt: skip
ENGLISH = [(E1, "12"), (E2, "7"), (E3, "55"), (E4, "2"), (E5, "15")]  # expected output, in first-seen order


def verl_row(problem, gt, index, template=True):
    return {
        "data_source": "math_dapo",
        "prompt": [{"content": templated(problem) if template else problem, "role": "user"}],
        "ability": "MATH",
        "reward_model": {"ground_truth": gt, "style": "rule-lighteval/MATH_v2"},
        "extra_info": {"index": f"{index:08x}-uuid"},
    }


def write_parquet(path, pairs, template=True):
    pq.write_table(pa.Table.from_pylist([verl_row(p, g, i, template) for i, (p, g) in enumerate(pairs)]), path)


def test_is_english_rule():
    english = [E1, E2, E3, E4, E5, "A，B and C：x", "Ｘ + Ｙ = 3", "Let $\\alpha, \\beta$ be angles; θ ≥ 0°."]
    for text in english:
        assert prepare_data.is_english(text), text
    non_english = [C1, C2, "Find x. 求解", "三角形", "ひらがなの問題", "カタカナ", "한국어 문제", "\U00020000"]
    for text in non_english:
        assert not prepare_data.is_english(text), text


def check_train(path, expected):
    rows = read_rows(path)
    assert [(r["extra_info"]["raw_problem"], r["reward_model"]["ground_truth"]) for r in rows] == expected
    for i, r in enumerate(rows):
        assert r["data_source"] == "math_dapo"
        assert r["prompt"] == [{"content": templated(r["extra_info"]["raw_problem"]), "role": "user"}]
        assert r["extra_info"]["index"] == i and r["extra_info"]["split"] == "train"


def test_train_from_original_like_copy(tmp_path, capsys):
    src = tmp_path / "dapo.parquet"
    write_parquet(src, ORIGINAL_LIKE)
    rc, out, err = run(capsys, "--skip-eval", "--train-from", src, "--out", tmp_path / "out")
    assert rc == 0, err
    assert os.listdir(tmp_path / "out") == ["dapo-math-17k-eng.parquet"]
    check_train(tmp_path / "out" / "dapo-math-17k-eng.parquet", ENGLISH)
    # 13 rows: 7 unique problems (6 repeats dropped), 2 of them Chinese
    assert "read 13, kept 5, dropped 8 (duplicate 6, non_english 2)" in out


def test_english_copies_give_the_same_file(tmp_path, capsys):
    """An English-filtered copy (no duplicates), as parquet with the template or as flat JSONL, gives the
    same bytes as the original-like copy."""
    original = tmp_path / "original.parquet"
    write_parquet(original, ORIGINAL_LIKE)
    english = tmp_path / "english.parquet"
    write_parquet(english, ENGLISH)
    flat = tmp_path / "english.jsonl"
    flat.write_text("".join(json.dumps({"problem": p, "answer": int(g)}) + "\n" for p, g in ENGLISH))
    outputs = []
    for src in (original, english, flat):
        out_dir = tmp_path / f"out-{src.suffix[1:]}-{src.stem}"
        rc, out, err = run(capsys, "--skip-eval", "--train-from", src, "--out", out_dir)
        assert rc == 0, err
        outputs.append((out_dir / "dapo-math-17k-eng.parquet").read_bytes())
    assert "read 5, kept 5, dropped 0" in out
    assert outputs[0] == outputs[1] == outputs[2]


def test_untemplated_prompts_get_the_template_once(tmp_path, capsys):
    src = tmp_path / "plain.parquet"
    write_parquet(src, ENGLISH, template=False)
    assert run(capsys, "--skip-eval", "--train-from", src, "--out", tmp_path / "out")[0] == 0
    check_train(tmp_path / "out" / "dapo-math-17k-eng.parquet", ENGLISH)


# --------------------------------------------------------------------------------------------------------
# Malformed rows

BAD_ROWS = {
    # reason: a row that has it
    "missing_problem": {"answer": "3"},
    "empty_problem": {"problem": "   ", "answer": "3"},
    "missing_ground_truth": {"problem": "What is $1+2$?"},
    "empty_ground_truth": {"problem": "What is $1+2$?", "answer": ""},
    "wrong_type": {"problem": "What is $1+2$?", "answer": 3.0},
    "template_mismatch": {"problem": PREFIX + "What is $1+2$?", "answer": "3"},
    "ambiguous_ground_truth": {"problem": "Find all $x$ with $x^2=1$.", "final_answer": ["1", "-1"]},
    "conflicting_ground_truth": {"problem": E1, "answer": "13"},
}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("reason", sorted(BAD_ROWS))
def test_malformed_row_is_an_error_naming_file_and_row(tmp_path, capsys, reason):
    src = tmp_path / "train.jsonl"
    good = [{"problem": E1, "answer": "12"}, {"problem": E2, "answer": "7"}, {"problem": E3, "answer": "55"}]
    write_jsonl(src, good + [BAD_ROWS[reason]])
    rc, out, err = run(capsys, "--skip-eval", "--train-from", src, "--out", tmp_path / "out")
    assert rc == 1
    assert f"{src}: row 3 (0-based) is malformed [{reason}]" in err
    assert "--skip-bad-rows" in err
    assert not (tmp_path / "out").exists()  # nothing written


def test_malformed_verl_rows(tmp_path, capsys):
    rows = [
        verl_row(E1, "12", 0),
        {**verl_row(E2, "7", 1), "prompt": [{"content": templated(E2), "role": "system"}]},
        {**verl_row(E3, "55", 2), "reward_model": {"ground_truth": None, "style": "rule"}},
        {**verl_row(E4, "2", 3), "extra_info": {"index": "x", "raw_problem": "another problem"}},
        {**verl_row(E5, "15", 4), "prompt": [{"content": PREFIX + SUFFIX, "role": "user"}]},
    ]
    src = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src)
    rc, out, err = run(capsys, "--skip-eval", "--train-from", src, "--out", tmp_path / "out")
    assert rc == 1 and f"{src}: row 1 (0-based) is malformed [bad_prompt]" in err
    rc, out, err = run(capsys, "--skip-eval", "--train-from", src, "--out", tmp_path / "out", "--skip-bad-rows")
    assert rc == 0, err
    assert (
        "read 5, kept 1, dropped 4 (bad_row:bad_prompt 1, bad_row:empty_problem 1, "
        "bad_row:missing_ground_truth 1, bad_row:raw_problem_mismatch 1)"
    ) in out
    check_train(tmp_path / "out" / "dapo-math-17k-eng.parquet", [(E1, "12")])


def test_skip_bad_rows_counts_by_reason(tmp_path, capsys):
    src = tmp_path / "train.jsonl"
    rows = [{"problem": E1, "answer": "12"}] + list(BAD_ROWS.values()) + [{"problem": E2, "answer": 7}]
    rows += [BAD_ROWS["wrong_type"], {"problem": C1, "answer": "2"}, {"problem": E2, "answer": "7"}]
    write_jsonl(src, rows)
    rc, out, err = run(capsys, "--skip-eval", "--train-from", src, "--out", tmp_path / "out", "--skip-bad-rows")
    assert rc == 0, err
    reasons = ", ".join(
        f"bad_row:{r} {2 if r == 'wrong_type' else 1}" for r in sorted(BAD_ROWS)
    )
    assert f"read 13, kept 2, dropped 11 ({reasons}, duplicate 1, non_english 1)" in out
    check_train(tmp_path / "out" / "dapo-math-17k-eng.parquet", [(E1, "12"), (E2, "7")])


# Text that cannot be written or scored: each its own reason (kept apart from BAD_ROWS, whose counts other
# tests state)
LIMIT = prepare_data.MAX_GROUND_TRUTH_CHARS
BAD_TEXT_ROWS = {
    "nul_character": {"problem": "What is $1+2$?\x00", "answer": "3"},
    "lone_surrogate": {"problem": "What is $1+2$?", "answer": "3\ud800"},  # JSON "3\\ud800": json.loads accepts it
    "ground_truth_too_long": {"problem": "What is $1+2$?", "answer": "3" * (LIMIT + 1)},
}


@pytest.mark.parametrize("reason", sorted(BAD_TEXT_ROWS))
def test_unwritable_or_unscorable_text_is_a_malformed_row(tmp_path, capsys, reason):
    src = tmp_path / "train.jsonl"
    good = [{"problem": E1, "answer": "12"}, {"problem": E2, "answer": "7"}, {"problem": E3, "answer": "55"}]
    write_jsonl(src, good + [BAD_TEXT_ROWS[reason]])
    rc, out, err = run(capsys, "--skip-eval", "--train-from", src, "--out", tmp_path / "out")
    assert rc == 1, out
    assert f"{src}: row 3 (0-based) is malformed [{reason}]" in err and "--skip-bad-rows" in err
    assert not (tmp_path / "out").exists()
    rc, out, err = run(capsys, "--skip-eval", "--train-from", src, "--out", tmp_path / "out", "--skip-bad-rows")
    assert rc == 0, err
    assert f"read 4, kept 3, dropped 1 (bad_row:{reason} 1)" in out
    check_train(tmp_path / "out" / "dapo-math-17k-eng.parquet", [(E1, "12"), (E2, "7"), (E3, "55")])


def test_text_row_messages(tmp_path, capsys):
    """What each message says: the field, where in it, the limit, the fix."""
    rows = [
        verl_row(E1, "12", 0),
        verl_row(E2, "7\x00", 1),  # NUL in the ground truth of a verl row
        verl_row("What is $2+2$?\ud83d", "4", 2),  # lone surrogate in the prompt
        verl_row(E3, "5" * LIMIT, 3),  # at the limit: kept
        verl_row(E4, "x" * (LIMIT + 1), 4),
    ]
    messages = {}
    for row_no in (1, 2, 4):
        src = tmp_path / f"bad{row_no}.jsonl"
        write_jsonl(src, [rows[0], rows[row_no]])
        rc, out, err = run(capsys, "--skip-eval", "--train-from", src, "--out", tmp_path / "out")
        assert rc == 1 and f"{src}: row 1 (0-based)" in err, err
        messages[row_no] = err
    assert "[nul_character]: reward_model.ground_truth holds a NUL character" in messages[1]
    assert "[lone_surrogate]: prompt content holds the lone UTF-16 surrogate '\\ud83d'" in messages[2]
    assert "UTF-8" in messages[2]
    assert (
        f"[ground_truth_too_long]: reward_model.ground_truth has {LIMIT + 1} characters" in messages[4]
        and f"over the limit of {LIMIT}" in messages[4]
    )
    src = tmp_path / "limit.parquet"
    pq.write_table(pa.Table.from_pylist([rows[0], rows[3]]), src)
    assert run(capsys, "--skip-eval", "--train-from", src, "--out", tmp_path / "out")[0] == 0
    check_train(tmp_path / "out" / "dapo-math-17k-eng.parquet", [(E1, "12"), (E3, "5" * LIMIT)])
    src = tmp_path / "nul.parquet"
    pq.write_table(pa.Table.from_pylist([rows[0], rows[1]]), src)  # parquet strings may hold NUL: read as is
    rc, out, err = run(capsys, "--skip-eval", "--train-from", src, "--out", tmp_path / "out2")
    assert rc == 1 and f"{src}: row 1 (0-based) is malformed [nul_character]" in err


def test_ground_truth_limit_is_far_above_real_answers():
    """Data fact: the longest ground truth of the released evaluation files is 336^\\circ (9 characters)."""
    longest = max(
        (rm["ground_truth"] for f, _ in prepare_data.EVAL_SETS.values()
         for rm in pd.read_parquet(shared_eval_dir() / f)["reward_model"]),
        key=len,
    )  # fmt: skip
    assert longest == "336^\\circ"
    assert LIMIT == 1000 and len(longest) * 100 < LIMIT


# --------------------------------------------------------------------------------------------------------
# Input files that are not UTF-8 or not readable

UTF8_ROWS = [{"problem": E1, "answer": "12"}, {"problem": E5, "answer": "15"}]  # E5: "Café owner Zoë"


@pytest.mark.parametrize(
    "suffix, encoding, line, guess",
    [
        (".jsonl", "latin-1", 2, "iconv -f LATIN1 -t UTF-8"),  # line 1 is ASCII, line 2 has é
        (".json", "latin-1", 3, "iconv -f LATIN1 -t UTF-8"),
        (".jsonl", "utf-16", 1, "iconv -f UTF-16 -t UTF-8"),  # byte-order mark
        (".json", "utf-16", 1, "iconv -f UTF-16 -t UTF-8"),
        (".jsonl", "utf-16-le", 1, "UTF-16"),  # no byte-order mark: NUL bytes
    ],
)
def test_input_not_utf8_names_file_and_line(tmp_path, capsys, suffix, encoding, line, guess):
    src = tmp_path / f"train{suffix}"
    if suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in UTF8_ROWS)
    else:
        text = "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in UTF8_ROWS) + "\n]\n"
    src.write_bytes(text.encode(encoding))
    rc, out, err = run(capsys, "--skip-eval", "--train-from", src, "--out", tmp_path / "out")
    assert rc == 1
    assert err.startswith(f"prepare_data: error: {src}: line {line} (1-based) is not"), err
    assert "must be UTF-8 encoded" in err and guess in err
    assert not (tmp_path / "out").exists()


def test_lone_surrogate_escape_in_json_file(tmp_path, capsys):
    src = tmp_path / "train.json"
    src.write_text('[{"problem": "Find $x$.", "answer": "\\ud800"}]')  # valid JSON, not valid Unicode text
    rc, out, err = run(capsys, "--skip-eval", "--train-from", src, "--out", tmp_path / "out")
    assert rc == 1
    assert f"{src}: row 0 (0-based) is malformed [lone_surrogate]: answer holds" in err and "UTF-8" in err
    assert not (tmp_path / "out").exists()


def corrupt_parquet(path, where):
    """A valid parquet file of 3,000 rows in 6 row groups, then 64 bytes overwritten in its middle or its footer."""
    rows = [{"problem": f"Problem {i}: compute ${i} + {i}$.", "answer": str(2 * i)} for i in range(3000)]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=500)
    data = bytearray(path.read_bytes())
    start = len(data) // 2 if where == "middle" else len(data) - 72
    data[start : start + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["middle", "footer"])
def test_corrupt_parquet_names_the_file(tmp_path, capsys, where):
    src = tmp_path / "train.parquet"
    corrupt_parquet(src, where)
    if where == "middle":
        assert pq.ParquetFile(src).metadata.num_row_groups == 6  # opens: the failure comes while reading rows
    rc, out, err = run(capsys, "--skip-eval", "--train-from", src, "--out", tmp_path / "out")
    assert rc == 1
    assert err.startswith(f"prepare_data: error: {src}: not a readable parquet file"), err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------------
# --out that cannot receive the files

def test_out_is_a_regular_file(tmp_path, capsys):
    src = tmp_path / "train.parquet"
    write_parquet(src, ENGLISH)
    out = tmp_path / "out"
    out.write_text("not a directory")
    rc, _, err = run(capsys, "--skip-eval", "--train-from", src, "--out", out)
    assert rc == 1 and f"prepare_data: error: --out {out} is a file, not a directory" in err, err
    rc, _, err = run(capsys, "--skip-eval", "--train-from", src, "--out", out / "sub")
    assert rc == 1 and f"--out {out / 'sub'}: {out} is a file, not a directory" in err, err
    assert out.read_text() == "not a directory"
    assert sorted(os.listdir(tmp_path)) == ["out", "train.parquet"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_out_unwritable_directory(tmp_path, capsys):
    src = tmp_path / "train.parquet"
    write_parquet(src, ENGLISH)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        rc, _, err = run(capsys, "--skip-eval", "--train-from", src, "--out", out)
        rc2, _, err2 = run(capsys, "--skip-eval", "--train-from", src, "--out", out / "sub")
    finally:
        out.chmod(0o755)
    assert rc == 1 and f"prepare_data: error: --out {out} is not writable" in err, err
    assert rc2 == 1 and f"--out {out / 'sub'}: its parent {out} is not writable" in err2, err2
    assert os.listdir(out) == []


def test_out_unwritable_as_seen_by_the_checks(tmp_path, capsys, monkeypatch):
    """The same for any user (root writes into a chmod 555 directory): the probe before reading, and a write
    that fails anyway (read-only file system, full disk), both end in a message and leave no file behind."""
    src = tmp_path / "train.parquet"
    write_parquet(src, ENGLISH)
    out = tmp_path / "out"
    assert run(capsys, "--skip-eval", "--train-from", src, "--out", out)[0] == 0
    target = out / "dapo-math-17k-eng.parquet"
    before = target.read_bytes()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as m:
        m.setattr(prepare_data.tempfile, "TemporaryFile", refuse)
        rc, _, err = run(capsys, "--skip-eval", "--train-from", src, "--out", out)
    assert rc == 1 and f"prepare_data: error: --out {out} is not writable (Permission denied)" in err, err

    def fail_mid_write(table, where, **kwargs):
        with open(where, "wb") as f:
            f.write(b"PAR1 half a file")
        raise OSError(28, "No space left on device", str(where))

    monkeypatch.setattr(prepare_data.pq, "write_table", fail_mid_write)
    rc, _, err = run(capsys, "--skip-eval", "--train-from", src, "--out", out)
    assert rc == 1 and f"prepare_data: error: {target}: cannot write (OSError: [Errno 28] No space left" in err, err
    assert os.listdir(out) == ["dapo-math-17k-eng.parquet"] and target.read_bytes() == before


# --------------------------------------------------------------------------------------------------------
# Temporary files of killed runs, SIGTERM

# Runs prepare_data in a child process whose writer sends the signal argv[1] to its own process once the
# temporary file is whole (before the rename).
SIGNAL_MID_WRITE = """
import os, signal, sys, time
from recipe.rpg import data

real_write = data.pq.write_table

def write_then_signal(table, where, **kwargs):
    real_write(table, where, **kwargs)
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    time.sleep(600)  # interrupted by the signal
    raise AssertionError("the signal did not stop the write")

data.pq.write_table = write_then_signal
sys.exit(data.main(sys.argv[2:]))
"""


def run_signalled(sig, *args):
    """(pid, exit status, stderr) of the child; a hang guard: a child that does not stop fails the test."""
    command = [sys.executable, "-c", SIGNAL_MID_WRITE, sig, *map(str, args)]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        try:
            _, stderr = child.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            pytest.fail(f"prepare_data did not stop after {sig}")
    return child.pid, child.returncode, stderr


def test_sigterm_mid_write_removes_the_temporary_file(tmp_path, capsys):
    out = tmp_path / "out"
    src = tmp_path / "train.parquet"
    write_parquet(src, ENGLISH)
    assert run(capsys, "--skip-eval", "--train-from", src, "--out", out)[0] == 0
    target = out / "dapo-math-17k-eng.parquet"
    before = target.read_bytes()
    src2 = tmp_path / "train2.jsonl"  # a different input, so a finished write would change the file
    write_jsonl(src2, [{"problem": p, "answer": g} for p, g in ENGLISH[:2]])
    _, rc, err = run_signalled("SIGTERM", "--skip-eval", "--train-from", src2, "--out", out)
    assert rc == 128 + signal.SIGTERM, (rc, err)
    assert "prepare_data: error: terminated by signal SIGTERM: stopped, no partial output file left" in err
    assert "Traceback" not in err
    assert os.listdir(out) == ["dapo-math-17k-eng.parquet"]  # no temporary file left behind
    assert target.read_bytes() == before  # the old file, whole


def test_next_run_removes_temporary_files_of_killed_runs(tmp_path, capsys):
    out = tmp_path / "out"
    src = tmp_path / "train.parquet"
    write_parquet(src, ENGLISH)
    dead_pid, rc, err = run_signalled("SIGKILL", "--skip-eval", "--train-from", src, "--out", out)
    assert rc == -signal.SIGKILL, (rc, err)
    # what SIGKILL leaves: the whole temporary file, nothing renamed into place; its process is gone
    assert os.listdir(out) == [left := f".dapo-math-17k-eng.parquet.tmp-{dead_pid}"]
    living = out / f".aime2024.parquet.tmp-{os.getppid()}"  # a running process: maybe another run writing
    living.write_bytes(b"PAR1")
    not_ours = out / f".notes.txt.tmp-{dead_pid}"
    not_ours.write_bytes(b"notes")
    handler = signal.getsignal(signal.SIGTERM)
    rc, stdout, err = run(capsys, "--skip-eval", "--train-from", src, "--out", out)
    assert rc == 0, err
    assert signal.getsignal(signal.SIGTERM) is handler  # main put the caller's handler back
    assert f"removed stale temporary file {out / left} (" in stdout and f"of process {dead_pid}" in stdout
    assert f"kept temporary file {living}: process {os.getppid()} is running" in stdout
    assert sorted(os.listdir(out)) == sorted([living.name, not_ours.name, "dapo-math-17k-eng.parquet"])
    check_train(out / "dapo-math-17k-eng.parquet", ENGLISH)


# --------------------------------------------------------------------------------------------------------
# Atomic output, hub path, command line


def test_interrupted_write_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    src = tmp_path / "train.parquet"
    write_parquet(src, ENGLISH)
    assert run(capsys, "--skip-eval", "--train-from", src, "--out", out)[0] == 0
    target = out / "dapo-math-17k-eng.parquet"
    before = target.read_bytes()

    def interrupted_write(table, where, **kwargs):
        with open(where, "wb") as f:
            f.write(b"PAR1 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_data.pq, "write_table", interrupted_write)
    src2 = tmp_path / "train2.jsonl"  # a different input, so a finished write would change the file
    write_jsonl(src2, [{"problem": p, "answer": g} for p, g in ENGLISH[:2]])
    with pytest.raises(KeyboardInterrupt):
        prepare_data.main(["--skip-eval", "--train-from", str(src2), "--out", str(out)])
    assert os.listdir(out) == ["dapo-math-17k-eng.parquet"]  # no temporary file left behind
    assert target.read_bytes() == before  # the old file, whole


def test_bad_input_writes_nothing(tmp_path, capsys):
    """All inputs are checked before any file is written: a bad training file stops the eval files too."""
    src = tmp_path / "train.jsonl"
    write_jsonl(src, [{"problem": E1}])
    rc, out, err = run(capsys, "--eval-from", shared_eval_dir(), "--train-from", src, "--out", tmp_path / "out")
    assert rc == 1 and "[missing_ground_truth]" in err
    assert not (tmp_path / "out").exists()


def test_hub_download_without_network_fails_clearly(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, out, err = run(capsys, "--skip-eval", "--train-hub", "--out", tmp_path / "out")
    assert rc == 1
    assert "could not download 'math-dataset/DAPO-17k-Eng'" in err and "--train-from" in err
    assert not (tmp_path / "out").exists()


def no_hub(monkeypatch):
    def refuse(repo, split):
        raise AssertionError(f"the hub was reached for {repo}")
        yield  # a generator, like the real one

    monkeypatch.setattr(prepare_data, "iter_hub_rows", refuse)


def test_eval_from_alone_stays_offline(tmp_path, capsys, monkeypatch):
    # only the evaluation files were asked for: built from local inputs, the hub never reached
    no_hub(monkeypatch)
    rc, out, err = run(capsys, "--eval-from", shared_eval_dir(), "--out", tmp_path / "out")
    assert rc == 0, err
    assert sorted(os.listdir(tmp_path / "out")) == ["aime2024.parquet", "aime2025.parquet", "amc23.parquet"]
    assert "dapo-math-17k-eng.parquet not built: pass --train-from PATH" in out


def test_a_failed_download_keeps_the_local_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, out, err = run(capsys, "--eval-from", shared_eval_dir(), "--train-hub", "--out", tmp_path / "out")
    assert rc == 1 and "could not download" in err
    assert sorted(os.listdir(tmp_path / "out")) == ["aime2024.parquet", "aime2025.parquet", "amc23.parquet"]
    assert "written before the error" in err and "amc23.parquet" in err


def test_command_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        prepare_data.main(["--out", str(tmp_path)])  # neither --eval-from nor --skip-eval
    assert "--eval-from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        prepare_data.main(["--skip-eval", "--skip-train", "--extra", "gsm8k"])
    assert "gsm8k" in capsys.readouterr().err
    rc, out, err = run(capsys, "--eval-from", tmp_path / "nowhere", "--skip-train", "--out", tmp_path / "o")
    assert rc == 1 and "nowhere" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, out, err = run(capsys, "--eval-from", empty, "--skip-train", "--out", tmp_path / "o")
    assert rc == 1 and "aime-2024.parquet" in err


def test_extra_sets_from_local_copies(tmp_path, capsys):
    extra = tmp_path / "extra"
    extra.mkdir()
    minerva = [
        {"question": "Compute the speed of light in km/s to one significant figure.", "answer": "3 \\times 10^5"},
        {"question": "What is $\\frac{1}{2}+\\frac{1}{4}$?", "answer": "\\frac{3}{4}"},
    ]
    write_jsonl(extra / "minerva.jsonl", minerva)
    olympiad = [
        {"id": 1, "question": "Find $a$ with $a^2 = 12$, $a > 0$.", "final_answer": ["$2\\sqrt{3}$"]},
        {"id": 2, "question": "Find $b$ with $2b = 1$.", "final_answer": ["$\\frac{1}{2}$"]},
    ]
    pq.write_table(pa.Table.from_pylist(olympiad), extra / "olympiadbench.parquet")
    rc, out, err = run(
        capsys, "--skip-eval", "--skip-train", "--extra", "minerva,olympiadbench", "--extra-from", extra,
        "--out", tmp_path / "out",
    )  # fmt: skip
    assert rc == 0, err
    for name, src, key in (("minerva", minerva, "answer"), ("olympiadbench", olympiad, "final_answer")):
        rows = read_rows(tmp_path / "out" / f"{name}.parquet")
        assert [r["data_source"] for r in rows] == [name, name]
        expected = [(s["question"], s[key] if isinstance(s[key], str) else s[key][0]) for s in src]
        assert [(r["extra_info"]["raw_problem"], r["reward_model"]["ground_truth"]) for r in rows] == expected
        assert rows[0]["prompt"][0]["content"] == templated(src[0]["question"])


# --------------------------------------------------------------------------------------------------------
# verl's RL dataset reads the files


def test_files_load_with_verl_rlhf_dataset(tmp_path, capsys):
    from omegaconf import OmegaConf
    from verl.utils import hf_tokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    src = tmp_path / "dapo.parquet"
    write_parquet(src, ORIGINAL_LIKE)
    out = tmp_path / "data"
    rc, _, err = run(capsys, "--eval-from", shared_eval_dir(), "--train-from", src, "--out", out)
    assert rc == 0, err
    tokenizer = hf_tokenizer(str(build_byte_tokenizer(tmp_path / "tok")))
    config = OmegaConf.create(
        {
            "prompt_key": "prompt",
            "max_prompt_length": 4096,
            "filter_overlong_prompts": True,
            "filter_overlong_prompts_workers": 1,
            "truncation": "error",
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    val_files = [str(out / f) for f in ("aime2024.parquet", "aime2025.parquet", "amc23.parquet")]
    val = RLHFDataset(val_files, tokenizer, config)
    assert len(val) == 100  # 30 + 30 + 40, none filtered as too long
    train = RLHFDataset(str(out / "dapo-math-17k-eng.parquet"), tokenizer, config)
    assert len(train) == 5
    item = val[30]
    assert item["data_source"] == "aime2025"
    raw = item["extra_info"]["raw_problem"]
    assert item["raw_prompt"] == [{"content": templated(raw), "role": "user"}]
    assert item["index"] == 0
    text = tokenizer.apply_chat_template(item["raw_prompt"], add_generation_prompt=True, tokenize=False)
    assert text == f"<|user|>{templated(raw)}<|eos|><|assistant|>"
    batch = collate_fn([train[i] for i in range(len(train))])
    assert list(batch["data_source"]) == ["math_dapo"] * 5
    assert [rm["ground_truth"] for rm in batch["reward_model"]] == [g for _, g in ENGLISH]
