"""A launch's run in a child process (forked: the launcher has imported verl and torch already, so the run starts
~10 s sooner than in a fresh ``python -m recipe.rpg.main_rpg --resolved``): its full output in the run directory, one
progress line per step here.

``<run_dir>/logs/<stamp>.out`` gets everything verl, Ray and the workers print; the terminal gets a line per training
step read from verl's file logger (``<stamp>.jsonl``), and on a failure the end of the output. ``<stamp>.launch.json``
records the launch: whether it resumed a checkpoint (only then ``make_tables`` merges it with the earlier segments).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]


#: verl.workers.engine warns "<name> engine is not available" in every process for each backend it cannot import.
VERL_ENGINES = ("torchtitan", "veomni", "automodel", "mindspeed", "megatron")


def unused_engine_warnings(cfg) -> list[str]:
    """``-W`` filters for verl's warnings about engines the run's actor does not use (Megatron's stay for Megatron)."""
    used = {"megatron", "mindspeed"} if cfg.actor_rollout_ref.actor.strategy == "megatron" else set()
    return [f"ignore:{e} engine is not available:UserWarning" for e in VERL_ENGINES if e not in used]


def quiet_verl_imports() -> None:
    """In the launcher's own process (which imports verl for its checks): no warning about verl engines it does not
    use, and no INFO line from verl's platform manager for the ``VERL_PLATFORM`` the launcher itself set."""
    warnings.filterwarnings("ignore", r".* engine is not available", UserWarning, "verl.workers.engine")
    logging.getLogger("verl.plugin.platform.platform_manager").addFilter(
        lambda record: not record.getMessage().startswith("Platform override from VERL_PLATFORM"))


def utc_stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def resume_step(cfg) -> int | None:
    """The checkpoint step verl's trainer will resume from (``trainer.resume_mode`` auto / resume_path), or None."""
    t = cfg.trainer
    if t.resume_mode == "resume_path" and t.get("resume_from_path"):
        name = os.path.basename(os.path.normpath(str(t.resume_from_path)))
        return int(name.rsplit("_", 1)[1]) if name.startswith("global_step_") else None
    marker = Path(str(t.default_local_dir)) / "latest_checkpointed_iteration.txt"
    if t.resume_mode == "auto" and marker.is_file():
        text = marker.read_text().strip()
        return int(text) if text.isdigit() and int(text) > 0 else None
    return None


def write_launch_record(log_path: Path, cfg, argv: list[str]) -> dict:
    record = {"log": log_path.name, "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "resumed_from_step": resume_step(cfg), "command": argv}
    log_path.with_suffix(".launch.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def progress_line(step: int, data: dict, total) -> str | None:
    """One line per logged step: the training step's score, KL and time; a validation's held-out accuracy."""
    val = sorted(k for k in data if k.startswith("val-core/") and "/acc/mean@" in k)
    parts = [f"step {step:>4}/{total}"]
    if "critic/score/mean" in data:
        parts.append(f"score {data['critic/score/mean']:+.3f}")
    for key in ("actor/rpg/kl", "actor/pg_loss"):
        if isinstance(data.get(key), int | float):
            parts.append(f"{key.rsplit('/', 1)[1]} {data[key]:.3g}")
            break
    parts += [f"held-out {k.split('/')[1]} {data[k]:.3f}" for k in val if isinstance(data[k], int | float)]
    if isinstance(data.get("timing_s/step"), int | float):
        parts.append(f"{data['timing_s/step']:.1f} s")
    return "  ".join(parts) if len(parts) > 1 else None


class Follower:
    """Reads the new complete lines of a growing JSONL file."""

    def __init__(self, path: Path):
        self.path, self.offset, self.partial = path, 0, b""

    def records(self):
        if not self.path.is_file():
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("data"), dict):
                yield row["step"], row["data"]


def _child(resolved: Path, out, env: dict, verbose: bool):
    """The forked child: ``python -m recipe.rpg.main_rpg --resolved <resolved>`` (``main_rpg.run``) in its own session,
    with ``env`` and its output in ``out``, without importing verl and torch a second time. Never returns."""
    code = 1
    try:
        os.setsid()
        if not verbose:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            sys.stdout = open(1, "w", buffering=1, closefd=False)  # whatever sys.stdout was (a notebook's, pytest's)
            sys.stderr = open(2, "w", buffering=1, closefd=False)
        os.chdir(REPO)
        os.environ.clear()
        os.environ.update(env)  # read by ray.init: Ray's processes inherit it
        from omegaconf import OmegaConf

        from recipe.rpg import main_rpg

        main_rpg.run(OmegaConf.load(resolved))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int | None):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        except BaseException:
            traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_and_follow(resolved: Path, log_path: Path, env: dict, total_steps, verbose: bool = False) -> int:
    """Run ``resolved`` in a forked child (as ``python -m recipe.rpg.main_rpg --resolved <resolved>`` would, on the
    modules this process has already imported); print progress from ``log_path``; the exit status."""
    out_path = log_path.with_suffix(".out")
    with open(out_path, "wb") as out:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(resolved, out, env, verbose)
        follower, start, status = Follower(log_path), time.time(), None
        print(f"[launch] training (full output: {out_path})", flush=True)
        try:
            while True:
                done = os.waitpid(pid, os.WNOHANG)
                for step, data in follower.records():
                    line = progress_line(step, data, total_steps)
                    if line:
                        print(f"[launch] {line}", flush=True)
                if done[0] == pid:
                    status = done[1]
                    break
                time.sleep(1.0)
        except KeyboardInterrupt:
            os.killpg(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
            print(f"[launch] interrupted; output so far in {out_path}", file=sys.stderr)
            return 130
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0 and not verbose:
        tail = out_path.read_text(errors="replace").splitlines()[-40:]
        print("\n".join(["[launch] the run failed (exit %d); the end of its output:" % rc, *tail,
                         f"[launch] full output: {out_path}"]), file=sys.stderr)
    else:
        print(f"[launch] run finished in {time.time() - start:.0f} s (exit {rc})", flush=True)
    return rc


def start(launch, argv: list[str], on_cpu: bool, verbose: bool = False) -> int:
    """Write the run directory (resolved config, launch record), run the child, and on the embedded CPU run make the
    table and figures of the run and say what the real run needs. Returns the exit status."""
    from omegaconf import OmegaConf

    from recipe.rpg.summary import real_run_needs

    cfg, run_dir = launch.cfg, launch.run_dir
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "resolved_config.yaml", resolve=True)
    record = write_launch_record(launch.log_path, cfg, argv)
    resumed = record["resumed_from_step"]
    print(f"[launch] run dir {run_dir}" + (f"; resuming from step {resumed}" if resumed else ""), flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    # TransferQueue's default of 8 threads warns (once per call, hundreds of times) where there are fewer cores
    env.setdefault("TQ_NUM_THREADS", str(min(8, psutil.cpu_count(logical=False) or 1)))
    # verl warns in every process about engines this run does not use
    env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), *unused_engine_warnings(cfg)]))
    rc = run_and_follow(run_dir / "resolved_config.yaml", launch.log_path, env, cfg.trainer.total_training_steps,
                        verbose)
    if rc != 0 and (not launch.log_path.is_file() or launch.log_path.stat().st_size == 0):
        # a run that logged nothing leaves no empty segment behind (make_tables would report it for ever)
        for leftover in (launch.log_path, launch.log_path.with_suffix(".launch.json")):
            leftover.unlink(missing_ok=True)
        print(f"[launch] the run logged no step: removed its empty log {launch.log_path.name}", file=sys.stderr)
    if rc == 0 and on_cpu:
        from recipe.rpg.tables.cli import main as make_tables

        rc = make_tables(["--run", str(run_dir), "--step", "last", "--out", str(run_dir / "report")])
        preset = REPO / "scripts" / f"run_{launch.method}.sh"
        command = f"bash scripts/{preset.name}" if preset.is_file() else f"bash scripts/launch.sh method={launch.method}"
        print(f"[launch] table and figures in {run_dir / 'report'}\n" + real_run_needs(command), flush=True)
    return rc
