"""The recipe's data: the paper's prompt template and data sources (defined here, once), and the preparation of
the training and evaluation files in verl's RL parquet format (``scripts/prepare_data.py`` is its command line).

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
``answer``/``ground_truth``/``final_answer``). Text must be UTF-8 (JSON/JSONL files; a file in another
encoding stops the script with the file and line). A malformed row stops the script with the file and row
number (0-based) unless ``--skip-bad-rows``, which drops it and counts it by reason; besides missing or
ill-typed fields, a row is malformed when its problem or ground truth holds a NUL character or a lone UTF-16
surrogate (a ``\\ud800`` JSON escape without its pair), or when its ground truth is longer than
``MAX_GROUND_TRUTH_CHARS`` (verl's answer normalizer takes time quadratic in that length; the reward refuses
such ground truths too). The hub is reached only for what was asked for and not given locally. ``--out`` is
checked first (a directory, or a path where one can be created, that this user can write into). All local
inputs are read and checked before anything is written; hub sets follow one at a time, so a failed download
keeps the files already written. Each output is written to a temporary file ``.<name>.tmp-<pid>`` and renamed
into place (no partial file after an interrupt: SIGINT and SIGTERM remove the temporary file; one left by a
killed run is removed by the next run once its process is gone), and the same inputs give byte-identical files.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import hashlib
import json
import os
import re
import signal
import sys
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]

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
#: Every data source of the recipe's files (the reward scores exactly these), and other names of the same sets
#: found in released files (``amc-23.parquet`` says ``amc_23``).
DATA_SOURCES = (TRAIN_DATA_SOURCE, *EVAL_SETS, *EXTRA_SETS)
DATA_SOURCE_ALIASES = {"amc_23": "amc23"}
LOCAL_SUFFIXES = (".parquet", ".jsonl", ".json")

PROBLEM_COLUMNS = ("problem", "question")
ANSWER_COLUMNS = ("answer", "ground_truth", "final_answer")

#: The longest ground truth accepted, in characters (data preparation rejects longer ones, the reward refuses
#: them). verl's math_dapo normalizer takes time quadratic in the ground truth's length (10k characters take
#: about a second, 100k do not finish in minutes; 1,000 take about 10 ms); real answers are far shorter (the
#: longest in the paper's evaluation files is ``336^\circ``, 9 characters).
MAX_GROUND_TRUTH_CHARS = 1000

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

#: Every file name this script writes into --out (the stale temporary files it cleans up are named after these).
OUTPUT_NAMES = frozenset(
    [f"{name}.parquet" for name in EVAL_SETS] + [TRAIN_FILE] + [f"{name}.parquet" for name in EXTRA_SETS]
)
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.tmp-(?P<pid>[0-9]+)")

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
    """The paper's prompt for a problem (the DAPO template)."""
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
        yield from _iter_parquet_rows(path)
    elif suffix == ".jsonl":
        yield from _iter_jsonl_rows(path)
    elif suffix == ".json":
        yield from _json_rows(path)
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r} (use .parquet, .jsonl or .json)")


def _iter_parquet_rows(path: Path) -> Iterator[dict]:
    """Rows of a parquet file; a file that cannot be opened or whose data cannot be read (a corrupt row group,
    found only when it is reached) is a DataError naming the file and the rows read before the failure."""
    try:
        parquet = pq.ParquetFile(path, page_checksum_verification=True)
    except Exception as e:  # noqa: BLE001 - any reader error is a user-facing data error
        raise DataError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from e
    batches = parquet.iter_batches(batch_size=8192)
    read = 0
    while True:
        try:  # only the reading: an exception of the consumer never passes through here
            batch = next(batches, None)
            rows = batch.to_pylist() if batch is not None else None
        except Exception as e:  # noqa: BLE001 - corrupt pages, bad compression, invalid UTF-8 strings ...
            raise DataError(
                f"{path}: not a readable parquet file: its data is corrupt after the first {read} rows "
                f"({type(e).__name__}: {e}). Replace it with an intact copy."
            ) from e
        if rows is None:
            return
        read += len(rows)
        yield from rows


def _open_binary(path: Path):
    try:
        return path.open("rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror})") from e


def _encoding_guess(raw: bytes) -> tuple[str, str]:
    """What a line that is not UTF-8 probably is: (the ``iconv -f`` encoding to convert it from, in words)."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in raw:
        return "UTF-16", "it looks like UTF-16"  # a byte-order mark, or the NUL bytes of UTF-16's ASCII letters
    return "LATIN1", "it may be Latin-1 or another 8-bit encoding"


def _utf8_line(path: Path, line_no: int, raw: bytes) -> str:
    """One line of a text file, decoded; a DataError naming file, line, bytes and the conversion otherwise."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        encoding, guess = _encoding_guess(raw)
        raise DataError(
            f"{path}: line {line_no + 1} (1-based) is not UTF-8 text ({raw[e.start : e.end + 3]!r} at byte "
            f"{e.start} of the line: {e.reason}); the file must be UTF-8 encoded ({guess}): convert it, e.g. "
            f"iconv -f {encoding} -t UTF-8 {path.name} > {path.stem}.utf8{path.suffix}"
        ) from None


def _json_error(path: Path, where: str, raw: bytes, error: json.JSONDecodeError) -> DataError:
    hint = " (it holds NUL bytes: is it UTF-16? The file must be UTF-8 encoded)" if b"\x00" in raw else ""
    return DataError(f"{path}: {where} is not valid JSON ({error}){hint}")


def _iter_jsonl_rows(path: Path) -> Iterator[dict]:
    """Rows of a UTF-8 JSONL file (lines are read as bytes, so a decoding error names its line)."""
    with _open_binary(path) as f:
        for line_no, raw in enumerate(f):
            line = _utf8_line(path, line_no, raw)
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise _json_error(path, f"line {line_no + 1} (1-based)", raw, e) from e


def _json_rows(path: Path) -> list:
    """Rows of a UTF-8 JSON file holding a list of row objects."""
    with _open_binary(path) as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        for line_no, raw in enumerate(data.split(b"\n")):  # raises for the first line that is not UTF-8
            _utf8_line(path, line_no, raw)
        raise
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise _json_error(path, "the file", data, e) from e
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of row objects, got {type(rows).__name__}")
    return rows


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


_SURROGATE = re.compile("[\ud800-\udfff]")


def _non_empty_string(value: Any, what: str, missing_reason: str) -> str:
    """A non-empty string that can be written as UTF-8 text (no NUL character, no lone surrogate)."""
    if value is None:
        raise BadRow(missing_reason, f"{what} is missing")
    if not isinstance(value, str):
        raise BadRow("wrong_type", f"{what} must be a string, got {type(value).__name__} {value!r:.80}")
    if not value.strip():
        raise BadRow(missing_reason.replace("missing", "empty"), f"{what} is empty")
    if "\x00" in value:
        at = value.index("\x00")
        raise BadRow(
            "nul_character",
            f"{what} holds a NUL character (\\x00, in JSON \\u0000) at character {at} "
            f"(...{value[max(0, at - 30) : at + 30]!r}...); remove it from the file",
        )
    surrogate = _SURROGATE.search(value)
    if surrogate:
        at = surrogate.start()
        raise BadRow(
            "lone_surrogate",
            f"{what} holds the lone UTF-16 surrogate {surrogate.group()!r} at character {at} (a JSON escape "
            "like \\ud800 without its pair), which is not Unicode text and cannot be written as UTF-8; the text "
            "must be valid UTF-8: fix the escape in the file",
        )
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
    value = _non_empty_string(value, what, "missing_ground_truth")
    if len(value) > MAX_GROUND_TRUTH_CHARS:
        raise BadRow(
            "ground_truth_too_long",
            f"{what} has {len(value)} characters ({value[:40]!r}...), over the limit of {MAX_GROUND_TRUTH_CHARS} "
            "(a real math answer is far shorter, and the reward's answer normalizer takes time quadratic in this "
            "length); put the final answer alone in this column",
        )
    return value


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


def temp_path(path: Path, pid: int) -> Path:
    """The temporary file that process ``pid`` writes ``path`` into before renaming it into place."""
    return path.with_name(f".{path.name}.tmp-{pid}")


def write_parquet_atomic(rows: list[dict], path: Path) -> None:
    """Write rows with SCHEMA to ``path`` via a temporary file + rename: never a half-written ``path``."""
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    tmp = temp_path(path, os.getpid())
    try:
        pq.write_table(table, tmp, compression="snappy")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_out_dir(out: Path) -> None:
    """Fail early, before any input is read, when ``--out`` cannot receive the files: it must be a directory (or
    a path where one can be created) that this user can create files in."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = f"--out {out}" if existing == out else f"--out {out}: {existing}"
        raise DataError(f"{where} is a file, not a directory; pass a directory (it is created if missing)")
    try:
        with tempfile.TemporaryFile(dir=existing):  # an unnamed file on Linux: nothing is left behind
            pass
    except OSError as e:
        where = f"--out {out}" if existing == out else f"--out {out}: its parent {existing}"
        raise DataError(
            f"{where} is not writable ({e.strerror}); pass a directory you can write to, or fix its permissions"
        ) from e


def _process_running(pid: int) -> bool:
    """Whether another process with this id runs now (this process's own id counts as not running)."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def remove_stale_temp_files(out: Path) -> list[str]:
    """Remove the temporary files that runs killed while writing (SIGKILL, a crash) left in ``out`` and whose
    process is gone; a file of a running process (another run writing here) is kept. Returns report lines."""
    lines = []
    try:
        entries = sorted(out.iterdir())
    except OSError as e:
        raise DataError(f"--out {out}: cannot list the directory ({e.strerror}); fix its permissions") from e
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        if match is None or match["name"] not in OUTPUT_NAMES or entry.is_symlink() or not entry.is_file():
            continue
        pid = int(match["pid"])
        if _process_running(pid):
            lines.append(f"kept temporary file {entry}: process {pid} is running (another prepare_data here?)")
            continue
        size = entry.stat().st_size
        try:
            entry.unlink()
        except OSError as e:
            raise DataError(f"{entry}: cannot remove this stale temporary file ({e.strerror}); remove it") from e
        lines.append(f"removed stale temporary file {entry} ({size} bytes) of process {pid}, which is not running")
    return lines


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, like SIGINT's KeyboardInterrupt, so that the same cleanup runs."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises Terminated (in the main thread; elsewhere signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated(f"terminated by signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


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
    with sigterm_as_interrupt():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
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
        check_out_dir(args.out)
        if args.out.is_dir():
            for line in remove_stale_temp_files(args.out):
                print(line)
        built = [b for step in local for b in step()]
        write_all(built, args.out, written)
        for step in remote:
            write_all(step(), args.out, written)
    except DataError as e:
        report_error(str(e), written)
        return 1
    except Terminated as e:
        report_error(f"{e}: stopped, no partial output file left", written)
        return 128 + int(signal.SIGTERM)
    if args.train_from is None and args.train_hub is None and not args.skip_train:
        print(f"{TRAIN_FILE} not built: pass --train-from PATH (a local DAPO-Math-17k copy) or --train-hub to "
              f"download {DEFAULT_TRAIN_HUB}")
    print(f"wrote {len(written)} file(s) to {args.out}")
    return 0


def report_error(message: str, written: list[Path]) -> None:
    print(f"prepare_data: error: {message}", file=sys.stderr)
    if written:
        print(f"prepare_data: written before the error: {', '.join(str(p) for p in written)}", file=sys.stderr)


def write_all(built: list[Built], out: Path, written: list[Path]) -> None:
    """Check that every file has rows, then write them (atomically), appending each path to ``written``."""
    for b in built:
        if not b.rows:
            raise DataError(f"{b.source}: no rows left for {b.name} ({b.read} read, dropped {dict(b.dropped)})")
    if not built:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"--out {out}: cannot create the directory ({e.strerror})") from e
    for b in built:
        path = out / b.name
        try:
            write_parquet_atomic(b.rows, path)
        except OSError as e:
            raise DataError(
                f"{path}: cannot write ({type(e).__name__}: {e}); check that --out is a writable directory with "
                "free space (a file already at this path is left unchanged)"
            ) from e
        written.append(path)
        print(b.report())
