#!/usr/bin/env python
"""Build the paper's training and evaluation files in verl's RL parquet format.

    python scripts/prepare_data.py --eval-from ../shared/data/eval --train-from PATH [--out data]

writes into ``--out`` (default: ``data/`` in the repository, which git ignores):

* ``aime2024.parquet``, ``aime2025.parquet``, ``amc23.parquet`` from the paper's released evaluation files
  (``--eval-from DIR`` holding ``aime-2024.parquet``, ``aime25.parquet``, ``amc-23.parquet``): one row per
  unique problem (the released files repeat each problem 32 times; evaluate with
  ``actor_rollout_ref.rollout.val_kwargs.n=32`` for the paper's Mean@32);
* ``dapo-math-17k-eng.parquet`` from DAPO-Math-17k (``--train-from`` a local parquet/JSON/JSONL copy, either
  the original with its duplicated rows or an English-filtered copy; or ``--train-hub [NAME]``, downloaded with
  HF ``datasets``; with neither it is not built): exact duplicate problems removed (first kept) and non-English
  problems removed (rule: ``is_english``);
* with ``--extra minerva,olympiadbench``: ``minerva.parquet``, ``olympiadbench.parquet`` (appendix
  benchmarks) from ``--extra-from DIR`` (files ``minerva.{parquet,jsonl,json}`` ...) or from the hub.

Every output row: ``data_source``; ``prompt`` = one user message, the paper's template applied exactly once;
``ability`` ``MATH``; ``reward_model`` = ``{"ground_truth": str, "style": "rule-lighteval/MATH_v2"}``;
``extra_info`` = ``{"index": position in the file, "problem_id": "<data_source>-<sha256(problem)[:12]>",
"raw_problem": the problem text, "split": "train" | "test"}``. All files share one parquet schema, so verl
can concatenate them (``data.val_files=[...]``).

Input rows are either verl RL rows (``prompt`` list of one user message, with or without the template,
``reward_model.ground_truth``, optional ``extra_info.raw_problem``) or flat rows (``problem``/``question`` and
``answer``/``ground_truth``/``final_answer``). A malformed row stops the script with the file and row number
(0-based) unless ``--skip-bad-rows``, which drops it and counts it by reason. The hub is reached only for what
was asked for and not given locally. All local inputs are read and checked before anything is written; hub
sets follow one at a time, so a failed download keeps the files already written. Each output is written to a
temporary file and renamed into place (no partial file after an interrupt), and the same inputs give
byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]

#: The paper's prompt template (the DAPO one): PROMPT_PREFIX + problem + PROMPT_SUFFIX.
PROMPT_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
PROMPT_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'
REWARD_STYLE = "rule-lighteval/MATH_v2"
ABILITY = "MATH"

#: Evaluation sets: data_source -> (released file name, number of unique problems in the paper's set).
EVAL_SETS = {
    "aime2024": ("aime-2024.parquet", 30),
    "aime2025": ("aime25.parquet", 30),
    "amc23": ("amc-23.parquet", 40),
}
TRAIN_DATA_SOURCE = "math_dapo"
TRAIN_FILE = "dapo-math-17k-eng.parquet"
#: Public hub copy of the English-filtered training set (the original is BytedTsinghua-SIA/DAPO-Math-17k).
DEFAULT_TRAIN_HUB = "math-dataset/DAPO-17k-Eng"
#: Appendix benchmarks: data_source -> (hub dataset, split).
EXTRA_SETS = {
    "minerva": ("math-ai/minervamath", "test"),
    "olympiadbench": ("math-ai/olympiadbench", "test"),
}
LOCAL_SUFFIXES = (".parquet", ".jsonl", ".json")

PROBLEM_COLUMNS = ("problem", "question")
ANSWER_COLUMNS = ("answer", "ground_truth", "final_answer")

SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("ground_truth", pa.string()), ("style", pa.string())])),
        (
            "extra_info",
            pa.struct(
                [
                    ("index", pa.int64()),
                    ("problem_id", pa.string()),
                    ("raw_problem", pa.string()),
                    ("split", pa.string()),
                ]
            ),
        ),
    ]
)

# Letters of the CJK scripts: Hangul Jamo, Hiragana, Katakana, Hangul compatibility Jamo, Han (extension A,
# unified, compatibility, supplementary planes) and Hangul syllables.
_CJK = re.compile(
    "[\u1100-\u11ff\u3040-\u309f\u30a0-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f]"
)


def is_english(problem: str) -> bool:
    """The English rule for DAPO-Math-17k: a problem is non-English iff it contains a CJK letter.

    DAPO-Math-17k is English and Chinese; Chinese problems always contain Han characters, and English ones
    contain only Latin letters, digits, LaTeX and math symbols (Greek letters, accents, full-width
    punctuation and the like do not make a problem non-English).
    """
    return _CJK.search(problem) is None


def apply_template(problem: str) -> str:
    return PROMPT_PREFIX + problem + PROMPT_SUFFIX


def problem_id(data_source: str, problem: str) -> str:
    return f"{data_source}-{hashlib.sha256(problem.encode('utf-8')).hexdigest()[:12]}"


class DataError(Exception):
    """A problem with the inputs that the user must fix (the message names file, row and value)."""


class BadRow(Exception):
    """A malformed input row; ``reason`` is the counter key used with --skip-bad-rows."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# ----------------------------------------------------------------------------------------------------------
# Reading rows


def iter_file_rows(path: Path) -> Iterator[dict]:
    """Rows of a local parquet, JSONL or JSON (list of objects) file, as plain dicts."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            parquet = pq.ParquetFile(path)
        except Exception as e:  # noqa: BLE001 - any reader error is a user-facing data error
            raise DataError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from e
        for batch in parquet.iter_batches(batch_size=8192):
            yield from batch.to_pylist()
    elif suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: line {line_no + 1} is not valid JSON ({e})") from e
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of row objects, got {type(data).__name__}")
        yield from data
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r} (use .parquet, .jsonl or .json)")


def iter_hub_rows(repo: str, split: str) -> Iterator[dict]:
    """Rows of a public hub dataset (HF ``datasets``); a clear DataError when it cannot be downloaded."""
    try:
        import datasets
    except ImportError as e:
        raise DataError(f"downloading {repo} needs the `datasets` package ({e})") from e
    try:
        dataset = datasets.load_dataset(repo, split=split)
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, auth: all end here with the cause
        raise DataError(
            f"could not download {repo!r} (split {split!r}) from the Hugging Face hub: {type(e).__name__}: {e}. "
            "Without network access, pass a local copy instead (--train-from PATH / --extra-from DIR)."
        ) from e
    yield from dataset


# ----------------------------------------------------------------------------------------------------------
# Parsing one row into (problem, ground truth)


def _non_empty_string(value: Any, what: str, missing_reason: str) -> str:
    if value is None:
        raise BadRow(missing_reason, f"{what} is missing")
    if not isinstance(value, str):
        raise BadRow("wrong_type", f"{what} must be a string, got {type(value).__name__} {value!r:.80}")
    if not value.strip():
        raise BadRow(missing_reason.replace("missing", "empty"), f"{what} is empty")
    return value


def _problem_from_content(content: str) -> str:
    """The problem inside a prompt: strips the paper's template if present (so it is applied exactly once)."""
    has_prefix = content.startswith(PROMPT_PREFIX)
    has_suffix = content.endswith(PROMPT_SUFFIX)
    if has_prefix and has_suffix and len(content) >= len(PROMPT_PREFIX) + len(PROMPT_SUFFIX):
        return content[len(PROMPT_PREFIX) : len(content) - len(PROMPT_SUFFIX)]
    if has_prefix or has_suffix or PROMPT_PREFIX.strip() in content or PROMPT_SUFFIX.strip() in content:
        raise BadRow("template_mismatch", "prompt holds part of the paper's template but not exactly the template")
    return content


def _ground_truth(value: Any, what: str) -> str:
    if isinstance(value, list | tuple):  # e.g. OlympiadBench's final_answer: a list with one answer
        if len(value) != 1:
            raise BadRow("ambiguous_ground_truth", f"{what} must hold exactly one answer, got {value!r:.120}")
        value = value[0]
    if isinstance(value, int) and not isinstance(value, bool):  # an integer answer is unambiguous as text
        value = str(value)
    return _non_empty_string(value, what, "missing_ground_truth")


def parse_row(row: Any) -> tuple[str, str]:
    """(problem, ground_truth) of one input row; raises BadRow with the reason."""
    if not isinstance(row, dict):
        raise BadRow("wrong_type", f"row must be an object, got {type(row).__name__}")
    if "prompt" in row and "reward_model" in row:  # verl RL row
        prompt = row["prompt"]
        if hasattr(prompt, "tolist"):
            prompt = prompt.tolist()
        if not isinstance(prompt, list) or len(prompt) != 1 or not isinstance(prompt[0], dict):
            raise BadRow("bad_prompt", f"prompt must be a list of one message, got {prompt!r:.120}")
        if prompt[0].get("role") != "user":
            raise BadRow("bad_prompt", f"prompt message role must be 'user', got {prompt[0].get('role')!r}")
        content = _non_empty_string(prompt[0].get("content"), "prompt content", "missing_problem")
        problem = _problem_from_content(content)
        _non_empty_string(problem, "problem inside the template", "missing_problem")
        extra = row.get("extra_info")
        raw = extra.get("raw_problem") if isinstance(extra, dict) else None
        if raw is not None and raw != problem:
            raise BadRow("raw_problem_mismatch", "extra_info.raw_problem differs from the problem in the prompt")
        reward_model = row["reward_model"]
        if not isinstance(reward_model, dict):
            raise BadRow("wrong_type", f"reward_model must be an object, got {type(reward_model).__name__}")
        ground_truth = _ground_truth(reward_model.get("ground_truth"), "reward_model.ground_truth")
        return problem, ground_truth
    problem_key = next((k for k in PROBLEM_COLUMNS if k in row), None)
    answer_key = next((k for k in ANSWER_COLUMNS if k in row), None)
    if problem_key is None:
        raise BadRow(
            "missing_problem",
            f"no problem: expected a verl row (prompt, reward_model) or one of the columns {PROBLEM_COLUMNS}; "
            f"row has {sorted(row)}",
        )
    if answer_key is None:
        raise BadRow("missing_ground_truth", f"no ground truth: expected one of the columns {ANSWER_COLUMNS}")
    problem = _problem_from_content(_non_empty_string(row[problem_key], problem_key, "missing_problem"))
    _non_empty_string(problem, f"problem inside the template ({problem_key})", "missing_problem")
    return problem, _ground_truth(row[answer_key], answer_key)


# ----------------------------------------------------------------------------------------------------------
# Building one output file


@dataclass
class Built:
    """One output file in memory, with its counts for the report."""

    name: str
    data_source: str
    source: str
    rows: list[dict]
    read: int
    dropped: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)

    def report(self) -> str:
        dropped = sum(self.dropped.values())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items()))
        line = (
            f"{self.name}: data_source {self.data_source}, from {self.source}: read {self.read}, "
            f"kept {len(self.rows)}, dropped {dropped}" + (f" ({reasons})" if reasons else "")
        )
        return "\n".join([line] + [f"  WARNING: {w}" for w in self.warnings])


def build(
    rows: Iterable[Any],
    *,
    name: str,
    data_source: str,
    source: str,
    split: str,
    english_only: bool,
    skip_bad_rows: bool,
) -> Built:
    """Dedup (exact problem text, first row kept), optional English filter, template, schema rows."""
    first_row: dict[str, tuple[int, str]] = {}  # problem -> (row number, ground truth)
    kept: list[tuple[str, str]] = []
    dropped: Counter = Counter()
    read = 0
    for row_no, row in enumerate(rows):
        read += 1
        try:
            problem, ground_truth = parse_row(row)
            if problem in first_row:
                first_no, first_gt = first_row[problem]
                if first_gt != ground_truth:
                    raise BadRow(
                        "conflicting_ground_truth",
                        f"ground truth {ground_truth!r} differs from {first_gt!r} "
                        f"of the same problem in row {first_no}",
                    )
                dropped["duplicate"] += 1
                continue
        except BadRow as e:
            if not skip_bad_rows:
                raise DataError(
                    f"{source}: row {row_no} (0-based) is malformed [{e.reason}]: {e.detail}. "
                    "Fix the file or pass --skip-bad-rows to drop such rows (they are counted)."
                ) from None
            dropped[f"bad_row:{e.reason}"] += 1
            continue
        first_row[problem] = (row_no, ground_truth)
        if english_only and not is_english(problem):
            dropped["non_english"] += 1
            continue
        kept.append((problem, ground_truth))

    out_rows = []
    ids = set()
    for index, (problem, ground_truth) in enumerate(kept):
        pid = problem_id(data_source, problem)
        if pid in ids:  # 48-bit hash prefix: a collision among distinct problems would be a real surprise
            raise DataError(f"{source}: problem id collision for {pid}; lengthen the id in problem_id()")
        ids.add(pid)
        out_rows.append(
            {
                "data_source": data_source,
                "prompt": [{"content": apply_template(problem), "role": "user"}],
                "ability": ABILITY,
                "reward_model": {"ground_truth": ground_truth, "style": REWARD_STYLE},
                "extra_info": {"index": index, "problem_id": pid, "raw_problem": problem, "split": split},
            }
        )
    return Built(name=name, data_source=data_source, source=source, rows=out_rows, read=read, dropped=dropped)


def _local_file(directory: Path, stem: str) -> Path:
    candidates = [directory / f"{stem}{suffix}" for suffix in LOCAL_SUFFIXES]
    found = [p for p in candidates if p.is_file()]
    if len(found) != 1:
        what = "none" if not found else ", ".join(map(str, found))
        raise DataError(f"{directory}: expected exactly one of {[p.name for p in candidates]}, found {what}")
    return found[0]


def build_eval(eval_dir: Path, skip_bad_rows: bool) -> list[Built]:
    if not eval_dir.is_dir():
        raise DataError(f"--eval-from {eval_dir}: no such directory")
    missing = [f for f, _ in EVAL_SETS.values() if not (eval_dir / f).is_file()]
    if missing:
        raise DataError(f"--eval-from {eval_dir}: missing released evaluation file(s) {missing}")
    built = []
    for data_source, (file_name, expected) in EVAL_SETS.items():
        path = eval_dir / file_name
        b = build(
            iter_file_rows(path),
            name=f"{data_source}.parquet",
            data_source=data_source,
            source=str(path),
            split="test",
            english_only=False,
            skip_bad_rows=skip_bad_rows,
        )
        if len(b.rows) != expected:
            b.warnings.append(f"{len(b.rows)} unique problems; the paper's {data_source} set has {expected}")
        built.append(b)
    return built


def build_train(train_from: Path | None, train_hub: str, skip_bad_rows: bool) -> Built:
    if train_from is not None:
        rows, source = iter_file_rows(train_from), str(train_from)
    else:
        rows, source = iter_hub_rows(train_hub, "train"), f"hub:{train_hub}"
    return build(
        rows,
        name=TRAIN_FILE,
        data_source=TRAIN_DATA_SOURCE,
        source=source,
        split="train",
        english_only=True,
        skip_bad_rows=skip_bad_rows,
    )


def build_extra(name: str, extra_from: Path | None, skip_bad_rows: bool) -> Built:
    hub_repo, hub_split = EXTRA_SETS[name]
    if extra_from is not None:
        path = _local_file(extra_from, name)
        rows, source = iter_file_rows(path), str(path)
    else:
        rows, source = iter_hub_rows(hub_repo, hub_split), f"hub:{hub_repo}"
    return build(
        rows,
        name=f"{name}.parquet",
        data_source=name,
        source=source,
        split="test",
        english_only=False,
        skip_bad_rows=skip_bad_rows,
    )


# ----------------------------------------------------------------------------------------------------------
# Writing


def write_parquet_atomic(rows: list[dict], path: Path) -> None:
    """Write rows with SCHEMA to ``path`` via a temporary file + rename: never a half-written ``path``."""
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp, compression="snappy")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ----------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Build the paper's training/evaluation parquet files (verl RL format).",
    )
    p.add_argument("--out", type=Path, default=REPO / "data", help="output directory (default: data/ in the repo)")
    p.add_argument(
        "--eval-from",
        type=Path,
        help="directory with the released aime-2024.parquet, aime25.parquet, amc-23.parquet",
    )
    p.add_argument("--skip-eval", action="store_true", help="do not build the evaluation files")
    p.add_argument("--train-from", type=Path, help="local DAPO-Math-17k copy (.parquet/.jsonl/.json)")
    p.add_argument("--train-hub", nargs="?", const=DEFAULT_TRAIN_HUB, default=None, metavar="NAME",
                   help=f"download the training set from the hub instead (NAME defaults to {DEFAULT_TRAIN_HUB}); "
                        "without --train-from or --train-hub the training file is not built")
    p.add_argument("--skip-train", action="store_true", help="do not build the training file (the default "
                                                                 "without --train-from / --train-hub)")
    p.add_argument("--extra", default="", help=f"comma-separated appendix sets: {','.join(EXTRA_SETS)} (from "
                                               "--extra-from, else downloaded)")
    p.add_argument("--extra-from", type=Path, help="directory with <name>.parquet/.jsonl/.json for --extra")
    p.add_argument("--skip-bad-rows", action="store_true", help="drop malformed rows (counted) instead of failing")
    args = p.parse_args(argv)
    args.extra = [x.strip() for x in args.extra.split(",") if x.strip()]
    unknown = [x for x in args.extra if x not in EXTRA_SETS]
    if unknown:
        p.error(f"--extra: unknown set(s) {unknown}; choose from {list(EXTRA_SETS)}")
    if args.extra_from is not None and not args.extra:
        p.error("--extra-from needs --extra NAMES")
    if args.skip_eval and args.eval_from is not None:
        p.error("--skip-eval and --eval-from contradict each other")
    if args.skip_train and (args.train_from is not None or args.train_hub is not None):
        p.error("--skip-train contradicts --train-from / --train-hub")
    if args.train_from is not None and args.train_hub is not None:
        p.error("give either --train-from (local copy) or --train-hub (download), not both")
    if not args.skip_eval and args.eval_from is None:
        p.error(
            "the evaluation files are built from the paper's released files: pass --eval-from DIR "
            f"(holding {', '.join(f for f, _ in EVAL_SETS.values())}), or --skip-eval"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Local inputs first: all of them read and checked before anything is written. The hub is reached only for
    # what was asked for and not given locally (--train-hub, --extra without --extra-from), one set at a time after
    # the local files are written, so a failed download never loses them.
    local, remote = [], []
    if not args.skip_eval:
        local.append(lambda: build_eval(args.eval_from, args.skip_bad_rows))
    if args.train_from is not None:
        local.append(lambda: [build_train(args.train_from, None, args.skip_bad_rows)])
    elif args.train_hub is not None:
        remote.append(lambda: [build_train(None, args.train_hub, args.skip_bad_rows)])
    for name in args.extra:
        (local if args.extra_from is not None else remote).append(
            lambda name=name: [build_extra(name, args.extra_from, args.skip_bad_rows)])
    written: list[Path] = []
    try:
        built = [b for step in local for b in step()]
        write_all(built, args.out, written)
        for step in remote:
            write_all(step(), args.out, written)
    except DataError as e:
        print(f"prepare_data: error: {e}", file=sys.stderr)
        if written:
            print(f"prepare_data: written before the error: {', '.join(str(p) for p in written)}", file=sys.stderr)
        return 1
    if args.train_from is None and args.train_hub is None and not args.skip_train:
        print(f"{TRAIN_FILE} not built: pass --train-from PATH (a local DAPO-Math-17k copy) or --train-hub to "
              f"download {DEFAULT_TRAIN_HUB}")
    print(f"wrote {len(written)} file(s) to {args.out}")
    return 0


def write_all(built: list[Built], out: Path, written: list[Path]) -> None:
    """Check that every file has rows, then write them (atomically), appending each path to ``written``."""
    for b in built:
        if not b.rows:
            raise DataError(f"{b.source}: no rows left for {b.name} ({b.read} read, dropped {dict(b.dropped)})")
    if built:
        out.mkdir(parents=True, exist_ok=True)
    for b in built:
        write_parquet_atomic(b.rows, out / b.name)
        written.append(out / b.name)
        print(b.report())


if __name__ == "__main__":
    sys.exit(main())
