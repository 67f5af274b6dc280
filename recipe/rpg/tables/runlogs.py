"""Read the metric logs of training runs: verl ``file``-logger JSONL, run directories, TensorBoard event files.

A run is read into ``{metric: {step: value}}`` (``RunLog.series``) plus a list of ``Diagnostic`` s that say
what was odd about the logs. Nothing is dropped silently: every unparsable line, every non-numeric or
non-finite value, every abandoned branch, gap and backwards step is counted and reported with the run's label.

Accepted paths (``load_run``):

- a verl file-logger JSONL file: one JSON object per line, ``{"step": N, "data": {"metric/name": value, ...}}``
  (verl's ``FileLogger`` writes it with orjson, which writes NaN and +-inf as ``null``: read back as NaN);
- a run directory of this project: ``<run_dir>/logs/*.jsonl``, one file per launch segment;
- a directory of ``*.jsonl`` segments (e.g. ``<run_dir>/logs`` itself);
- a TensorBoard event directory (``events.out.tfevents.*`` files, one per launch segment), e.g.
  ``<run_dir>/tensorboard``; a run directory without ``logs/*.jsonl`` is searched for event files.

Segments are ordered by their own content (first step, then launch time: the launcher's ``<stamp>.launch.json``
record, a TensorBoard file's creation time, else the file's time; never by file name) and merged by step. A later
segment takes over at its first step: the earlier one's steps from there on are a branch the run abandoned and are
dropped (a resumed run re-evaluates the checkpoint it restarts from). A launch whose record says it resumed no
checkpoint starts a new series: the earlier segments are left out. Gaps are checked per kind of metric: training
steps without training metrics, and (with the resolved config's ``trainer.test_freq``) missing validations.
``resolved_config.yaml`` is looked up in the path's directory, and in its parent when that directory is
``logs`` or ``tensorboard``.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_FILE = "resolved_config.yaml"
TB_PATTERN = "events.out.tfevents.*"


class RunLogError(ValueError):
    """A run path that cannot be read at all (does not exist, holds no logs, ...)."""


@dataclass(frozen=True)
class Diagnostic:
    run: str
    kind: str  # unparsable | empty | abandoned | new_series | gap | repeated_step | backwards_step | non_finite | non_numeric | ...
    message: str

    def __str__(self) -> str:
        return f"[{self.run}] {self.kind}: {self.message}"


@dataclass
class Segment:
    path: Path
    records: int = 0  # parsed records (lines / events carrying at least one value)
    steps: list[int] = field(default_factory=list)  # steps in file order


@dataclass
class RunLog:
    label: str
    path: Path
    source: str  # "jsonl" | "tensorboard"
    segments: list[Segment]
    series: dict[str, dict[int, float]]
    config: dict | None = None
    config_path: Path | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def steps(self) -> list[int]:
        return sorted({s for values in self.series.values() for s in values})

    @property
    def last_step(self) -> int | None:
        steps = self.steps
        return steps[-1] if steps else None


def format_steps(steps) -> str:
    """``[1, 2, 3, 7, 9, 10] -> "1-3, 7, 9-10"``."""
    steps = sorted(set(steps))
    parts: list[str] = []
    i = 0
    while i < len(steps):
        j = i
        while j + 1 < len(steps) and steps[j + 1] == steps[j] + 1:
            j += 1
        parts.append(str(steps[i]) if i == j else f"{steps[i]}-{steps[j]}")
        i = j + 1
    return ", ".join(parts)


def steps_phrase(steps) -> str:
    steps = set(steps)
    return f"step{'s' if len(steps) > 1 else ''} {format_steps(steps)}"


def _as_step(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


class _SegmentReader:
    """Collects the records of one segment: ``{step: {metric: value}}``, later lines win within the file."""

    def __init__(self, run: str, path: Path, diagnostics: list[Diagnostic]):
        self.run, self.segment, self.diags = run, Segment(path), diagnostics
        self.records: dict[int, dict[str, float]] = {}
        self.non_numeric: dict[str, int] = {}
        self.null_values: dict[str, list[int]] = {}
        self.nan_values: dict[str, list[int]] = {}

    def add(self, step: int, data: dict[str, Any], where: str) -> None:
        seg = self.segment
        if seg.steps and step < seg.steps[-1]:
            self.diags.append(Diagnostic(self.run, "backwards_step",
                                         f"{where}: step {step} after step {seg.steps[-1]}; merged by step"))
        seg.steps.append(step)
        seg.records += 1
        rec = self.records.setdefault(step, {})
        for name, value in data.items():
            if value is None:  # orjson (verl's file logger) writes NaN and +-inf as null
                self.null_values.setdefault(name, []).append(step)
                value = math.nan
            elif isinstance(value, bool) or not isinstance(value, int | float):
                self.non_numeric[name] = self.non_numeric.get(name, 0) + 1
                continue
            else:
                value = float(value)
                if not math.isfinite(value):
                    self.nan_values.setdefault(name, []).append(step)
            rec[name] = value

    def finish(self) -> None:
        seg, where = self.segment, self.segment.path.name
        repeated = sorted(s for s, count in Counter(seg.steps).items() if count > 1)
        if repeated:
            self.diags.append(Diagnostic(self.run, "repeated_step",
                                         f"{where}: {steps_phrase(repeated)} logged more than once; "
                                         "per metric the later line wins"))
        if self.non_numeric:
            names = ", ".join(f"{k} ({v}x)" for k, v in sorted(self.non_numeric.items()))
            self.diags.append(Diagnostic(self.run, "non_numeric", f"{where}: non-numeric values ignored: {names}"))
        for name, steps in sorted(self.null_values.items()):
            self.diags.append(Diagnostic(self.run, "non_finite",
                                         f"{where}: {name} is null at {steps_phrase(steps)} "
                                         "(verl's file logger writes NaN/inf as null): read as NaN"))
        for name, steps in sorted(self.nan_values.items()):
            self.diags.append(Diagnostic(self.run, "non_finite",
                                         f"{where}: {name} is NaN/inf at {steps_phrase(steps)}"))
        if seg.records == 0:
            self.diags.append(Diagnostic(self.run, "empty", f"{where}: no records"))


def _snippet(line: bytes) -> str:
    text = line.decode("utf-8", errors="replace")
    return repr(text[:60] + ("..." if len(text) > 60 else ""))


def read_jsonl_segment(run: str, path: Path, diagnostics: list[Diagnostic]) -> _SegmentReader:
    reader = _SegmentReader(run, path, diagnostics)
    bad: list[str] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            where = f"{path.name}:{lineno}"
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                bad.append(f"line {lineno} ({e.__class__.__name__}: {_snippet(line)})")
                continue
            if not isinstance(obj, dict) or "step" not in obj or not isinstance(obj.get("data"), dict):
                bad.append(f"line {lineno} (not a {{\"step\": N, \"data\": {{...}}}} object: {_snippet(line)})")
                continue
            step = _as_step(obj["step"])
            if step is None:
                bad.append(f"line {lineno} (step {obj['step']!r} is not an integer)")
                continue
            reader.add(step, obj["data"], where)
    if bad:
        diagnostics.append(Diagnostic(run, "unparsable", f"{path.name}: {len(bad)} line(s) skipped: " + "; ".join(bad)))
    reader.finish()
    return reader


def read_tensorboard_segment(run: str, path: Path, diagnostics: list[Diagnostic]) -> _SegmentReader:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    reader = _SegmentReader(run, path, diagnostics)
    by_step: dict[int, dict[str, Any]] = {}
    order: list[int] = []
    try:
        for event in EventFileLoader(str(path)).Load():
            if not event.HasField("summary"):
                continue
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    value: Any = float(v.simple_value)
                elif v.HasField("tensor") and v.metadata.plugin_data.plugin_name in ("scalars", ""):
                    arr = tensor_util.make_ndarray(v.tensor)
                    value = float(arr.item()) if arr.size == 1 and arr.dtype.kind in "fiu" else "<non-scalar>"
                else:
                    continue  # images, histograms, text: not metrics
                if not order or order[-1] != event.step:
                    order.append(event.step)
                by_step.setdefault(event.step, {})[v.tag] = value
    except Exception as e:  # a truncated or corrupt event file
        diagnostics.append(Diagnostic(run, "unparsable", f"{path.name}: reading stopped: {e.__class__.__name__}: {e}"))
    # one record per step (a TensorBoard writer logs one event per scalar); keep the order of first appearance
    seen: set[int] = set()
    for step in order:
        if step in seen:
            continue
        seen.add(step)
        reader.add(step, by_step[step], f"{path.name}")
    reader.finish()
    return reader


def launch_time(path: Path) -> float:
    """When a segment's launch started: its launch record (``<stamp>.launch.json``, written by the launcher), the
    creation time in a TensorBoard event file's name, else the file's modification time."""
    record = launch_record(path)
    if record and isinstance(record.get("started"), str):
        try:
            return datetime.datetime.fromisoformat(record["started"]).timestamp()
        except ValueError:
            pass
    parts = path.name.split(".")  # events.out.tfevents.<unix time>.<host>...
    if path.name.startswith("events.out.tfevents.") and len(parts) > 3 and parts[3].isdigit():
        return float(parts[3])
    return path.stat().st_mtime


def launch_record(path: Path) -> dict | None:
    """The launcher's record of the launch that wrote ``path`` (``resumed_from_step``: the checkpoint it resumed)."""
    record = path.with_suffix(".launch.json")
    if not record.is_file():
        return None
    try:
        data = json.loads(record.read_text())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _order_and_cut(run: str, readers: list[_SegmentReader], diagnostics: list[Diagnostic]) -> list[_SegmentReader]:
    """Segments in the order they ran (by their own content: first step, then launch time; not by file name), each
    earlier one cut at the next one's first step: a resumed launch abandons what the earlier one logged from there
    on. A launch that resumed no checkpoint (its launch record says so) starts a new series: earlier segments are
    left out. Everything cut or left out is reported."""
    readers = [r for r in readers if r.records] + [r for r in readers if not r.records]
    readers.sort(key=lambda r: (min(r.records) if r.records else math.inf, launch_time(r.segment.path)))
    start = 0
    for i, reader in enumerate(readers[1:], 1):
        record = launch_record(reader.segment.path)
        if record is not None and record.get("resumed_from_step") is None and reader.records:
            start = i
    if start:
        left_out = ", ".join(r.segment.path.name for r in readers[:start])
        diagnostics.append(Diagnostic(run, "new_series", f"{readers[start].segment.path.name} started a new series "
                                      f"(its launch resumed no checkpoint): earlier segments left out: {left_out}"))
    readers = readers[start:]
    for earlier, later in zip(readers, readers[1:]):
        trained = [s for s, rec in later.records.items() if any(not is_validation_metric(k) for k in rec)]
        if not later.records:
            continue
        # a resume re-validates its checkpoint's step c, then trains c+1...: the branch starts at its first training
        first = min(trained or later.records)
        cut = sorted(s for s in earlier.records if s >= first)
        if cut:
            diagnostics.append(Diagnostic(run, "abandoned", f"{earlier.segment.path.name}: {steps_phrase(cut)} "
                                          f"dropped, a branch abandoned when {later.segment.path.name} took over at "
                                          f"step {first}"))
            for s in cut:
                del earlier.records[s]
        relogged = sorted(s for s in later.records if s in earlier.records)
        if relogged:
            replaced = sum(1 for s in relogged for k in later.records[s] if k in earlier.records[s])
            diagnostics.append(Diagnostic(run, "overlap", f"{later.segment.path.name} re-logs {steps_phrase(relogged)} "
                                          f"of {earlier.segment.path.name}; its values win ({replaced} metric values "
                                          "replaced)"))
    return readers


def is_validation_metric(name: str) -> bool:
    return name.startswith("val-")


def _merge(run: str, readers: list[_SegmentReader], diagnostics: list[Diagnostic],
           config: dict | None = None) -> dict[str, dict[int, float]]:
    series: dict[str, dict[int, float]] = {}
    for reader in _order_and_cut(run, readers, diagnostics):
        for step, rec in reader.records.items():
            for name, value in rec.items():
                series.setdefault(name, {})[step] = value
    # gaps, per kind of metric: a step whose training metrics were lost is a gap even if it was validated
    train = {s for name, values in series.items() if not is_validation_metric(name) for s in values}
    if train:
        missing = sorted(set(range(min(train), max(train) + 1)) - train)
        if missing:
            diagnostics.append(Diagnostic(run, "gap", f"{steps_phrase(missing)} ({len(missing)} in all) have no "
                                                      "training metrics in any log segment"))
    freq = config_value(config, "trainer.test_freq")
    if train and isinstance(freq, int) and not isinstance(freq, bool) and freq > 0:
        validated = {s for name, values in series.items() if is_validation_metric(name) for s in values}
        expected = {s for s in range(min(train), max(train) + 1) if s % freq == 0}
        missing = sorted(expected - validated)
        if missing:
            diagnostics.append(Diagnostic(run, "gap", f"validation (every {freq} steps, trainer.test_freq) missing at "
                                                      f"{steps_phrase(missing)}"))
    return {name: dict(sorted(values.items())) for name, values in series.items()}


def find_config(path: Path) -> Path | None:
    directory = path if path.is_dir() else path.parent
    candidates = [directory / CONFIG_FILE]
    if directory.name in ("logs", "tensorboard"):
        candidates.append(directory.parent / CONFIG_FILE)
    return next((c for c in candidates if c.is_file()), None)


def _tensorboard_files(path: Path) -> list[Path]:
    files = sorted(p for p in path.rglob(TB_PATTERN) if p.is_file())
    dirs = sorted({p.parent for p in files})
    if len(dirs) > 1:
        raise RunLogError(f"{path}: TensorBoard event files in {len(dirs)} directories "
                          f"({', '.join(str(d) for d in dirs)}): pass one of them")

    return files


def _segment_files(path: Path) -> tuple[str, list[Path]]:
    if not path.exists():
        raise RunLogError(f"{path}: no such file or directory")
    if path.is_file():
        if path.name.startswith("events.out.tfevents."):
            return "tensorboard", [path]
        return "jsonl", [path]
    for directory in (path / "logs", path):
        jsonl = sorted(p for p in directory.glob("*.jsonl") if p.is_file())
        if jsonl:
            return "jsonl", jsonl
    tb = _tensorboard_files(path)
    if tb:
        return "tensorboard", tb
    raise RunLogError(f"{path}: no verl file-logger logs (logs/*.jsonl or *.jsonl) and no TensorBoard event files "
                      f"({TB_PATTERN}) found")


def load_config(path: Path) -> dict:
    import yaml

    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise RunLogError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(config, dict):
        raise RunLogError(f"{path}: expected a mapping (the resolved Hydra config), got {type(config).__name__}")
    return config


def load_run(label: str | None, path: str | Path) -> RunLog:
    """Read one run. ``label=None`` derives the label from the resolved config (``derive_label``)."""
    path = Path(path)
    source, files = _segment_files(path)
    config_path = find_config(path)
    config = load_config(config_path) if config_path else None
    if label is None:
        label = derive_label(config, path, config_path)
    diagnostics: list[Diagnostic] = []
    read = read_jsonl_segment if source == "jsonl" else read_tensorboard_segment
    readers = [read(label, f, diagnostics) for f in files]
    series = _merge(label, readers, diagnostics, config)
    if not series:
        diagnostics.append(Diagnostic(label, "empty", f"{path}: no metric values in {len(files)} log file(s)"))
    return RunLog(label, path, source, [r.segment for r in readers], series, config, config_path, diagnostics)


# --------------------------------------------------------------------------------------------------------------
# Names: run labels from resolved configs, and the paper's method names.

#: verl advantage estimators whose name alone says which of the paper's baselines a run is.
_ESTIMATOR_METHODS = {"reinforce_plus_plus": "REINFORCE++", "reinforce_plus_plus_baseline": "REINFORCE++-Baseline"}


def config_value(config: dict | None, dotted: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; None when a key is missing."""
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def policy_loss_name(config: dict | None) -> str | None:
    """The policy loss of a resolved config: the actor's ``policy_loss.loss_mode`` (what verl runs), else the
    recipe's ``algorithm.policy_loss``."""
    name = config_value(config, "actor_rollout_ref.actor.policy_loss.loss_mode") or \
        config_value(config, "algorithm.policy_loss")
    return name if isinstance(name, str) else None


def method_from_config(config: dict | None) -> str | None:
    """The paper's method name for a run, from its loss (``rpg_reinforce_ufkl`` -> ``RPG-REINFORCE-UFKL``) or,
    for verl's ``vanilla`` loss, from an advantage estimator that names a baseline (REINFORCE++[-Baseline]).
    GRPO and DAPO share verl's ``grpo`` estimator and ``vanilla`` loss, so they are not derived (None)."""
    loss = policy_loss_name(config)
    if loss and loss.startswith("rpg_"):
        return loss.upper().replace("_", "-")
    estimator = config_value(config, "algorithm.adv_estimator")
    if estimator in _ESTIMATOR_METHODS and loss in (None, "vanilla"):
        return _ESTIMATOR_METHODS[estimator]
    return None


def derive_label(config: dict | None, path: Path, config_path: Path | None) -> str:
    """``trainer.experiment_name``, else the method of the policy loss (``method_from_config``), else
    ``<adv_estimator>+<loss>``."""
    if config is None:
        raise RunLogError(f"{path}: no label given and no {CONFIG_FILE} found to derive one from; "
                          f"use --run LABEL={path}")
    name = config_value(config, "trainer.experiment_name")
    if isinstance(name, str) and name:
        return paper_method_name(name) or name
    method = method_from_config(config)
    if method:
        return method
    loss, estimator = policy_loss_name(config), config_value(config, "algorithm.adv_estimator")
    if loss or estimator:
        return f"{estimator}+{loss}"
    raise RunLogError(f"{config_path}: has no trainer.experiment_name, policy loss "
                      "(actor_rollout_ref.actor.policy_loss.loss_mode / algorithm.policy_loss) or "
                      f"algorithm.adv_estimator to name the run; use --run LABEL={path}")


def paper_method_name(name: str) -> str | None:
    """The paper's spelling of a method name (``rpg_ufkl`` -> ``RPG-UFKL``), None when no paper table has it."""
    from recipe.rpg.tables.paper_results import PAPER_TABLES

    methods = {name_key(m): m for table in PAPER_TABLES.values() for m in table.rows}
    return methods.get(name_key(name))


def name_key(name: str) -> str:
    """Normalized method name for matching: ``rpg_reinforce_ufkl`` ~ ``RPG-REINFORCE-UFKL``,
    ``reinforce_pp_baseline`` ~ ``reinforce_plus_plus_baseline`` ~ ``REINFORCE++-Baseline``."""
    key = re.sub(r"[^a-z0-9+]", "", name.lower())
    return key.replace("plusplus", "++").replace("reinforcepp", "reinforce++")
