"""Check the periodic reference of a real run: right after each refresh, the reference's log-probs equal the actor's.

With ``algorithm.rpg.reference=periodic`` and ``reference_every=K``, the RPG trainer copies the actor's weights into
the reference model after steps K, 2K, ... At step s the batch is scored by the actor (``old_log_prob``) and by the
reference (``ref_log_prob``); the actor loss logs their mean absolute difference, ``actor/rpg/ref_old_logprob_absdiff``.
So, for a run with a learning rate that changes the weights at every step:

- at steps s with (s - 1) % K == 0 (the first step, and every step right after a refresh) it is ~0: the reference
  holds exactly the actor's weights;
- at every other step it is > 0: the reference lags behind the actor;
- ``actor/rpg/reference_refreshes`` at step s is s // K.

Usage:

    python scripts/check_reference_refresh.py --log RUN_DIR_OR_JSONL --every K
        check a run's verl file-logger log (every logged training step)

    python scripts/check_reference_refresh.py --launch --run-dir DIR [--every 2 --steps 4] [--resume] [key=value ...]
        run ``METHOD=rpg_urkl REFERENCE=periodic bash scripts/launch.sh`` (BACKEND, MODEL, DATA_DIR, GPUS_PER_NODE ...
        from the environment) for --steps steps, checkpointing every K, and check its log. --resume then restarts a
        second run from the first one's step-K checkpoint (as an interrupted run would) and checks that it refreshes
        at the same steps and that its first step's reference holds the restored weights.

On a GPU host, ``BACKEND=megatron`` checks the Megatron weight copy (``BACKEND=fsdp`` the FSDP one), and with
``--virtual-pipeline 2`` the copy of every virtual-pipeline model chunk; without a GPU the
launcher runs verl's trainer on the CPU (FSDP2), which is what the test suite does. Exit 0 when every check passes,
1 when one fails (each failure is printed), 2 on a usage or launch error.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rpg_ext.runlogs import RunLogError, load_run  # noqa: E402

ABSDIFF = "actor/rpg/ref_old_logprob_absdiff"
REFRESHES = "actor/rpg/reference_refreshes"
STEP_KEY = "training/global_step"


def check_log(path: str | Path, every: int, equal_tol: float = 1e-4) -> tuple[list[str], dict[int, tuple[float, float]]]:
    """The failures of a run's log against the refresh rule, and {step: (absdiff, refreshes)} of its training steps."""
    series = load_run("run", path).series
    steps = sorted(series.get(STEP_KEY, {}))
    if not steps:
        return [f"{path}: no training step logged ({STEP_KEY})"], {}
    rows, failures = {}, []
    for s in steps:
        absdiff, refreshes = series.get(ABSDIFF, {}).get(s), series.get(REFRESHES, {}).get(s)
        if absdiff is None or refreshes is None or not math.isfinite(absdiff):
            failures.append(f"step {s}: {ABSDIFF}={absdiff}, {REFRESHES}={refreshes} (is this a periodic-reference "
                            "run of an RPG loss or of algorithm.rpg.kl?)")
            continue
        rows[s] = (absdiff, refreshes)
        if refreshes != s // every:
            failures.append(f"step {s}: {REFRESHES}={refreshes:g}, expected {s // every} (a refresh every {every})")
        if (s - 1) % every == 0 and absdiff > equal_tol:
            failures.append(f"step {s}: {ABSDIFF}={absdiff:.3g} > {equal_tol:g}, but the reference was just set to "
                            "the actor's weights")
        if (s - 1) % every != 0 and absdiff <= equal_tol:
            failures.append(f"step {s}: {ABSDIFF}={absdiff:.3g} <= {equal_tol:g}, but the reference should lag behind "
                            "the actor (did the actor's weights change?)")
    return failures, rows


def launch(run_dir: Path, every: int, steps: int, overrides: list[str], env: dict | None = None) -> None:
    env = dict(os.environ if env is None else env)
    env.update(METHOD=env.get("METHOD", "rpg_urkl"), REFERENCE="periodic",
               REFERENCE_EVERY=str(every), STEPS=str(steps), RUN_DIR=str(run_dir))
    cmd = ["bash", str(REPO / "scripts" / "launch.sh"), "trainer.val_before_train=False", "trainer.test_freq=-1",
           f"trainer.save_freq={every}", "actor_rollout_ref.actor.optim.lr_warmup_steps=0", *overrides]
    print(f"[check] {' '.join(cmd)}  (RUN_DIR={run_dir})", flush=True)
    rc = subprocess.call(cmd, cwd=REPO, env=env)
    if rc != 0:
        raise SystemExit(f"check_reference_refresh.py: the run in {run_dir} failed (exit {rc})")


def resume_from(source: Path, target: Path, step: int) -> None:
    """``target`` as a run interrupted after step ``step``'s checkpoint of ``source``."""
    checkpoint = source / "checkpoints" / f"global_step_{step}"
    if not checkpoint.is_dir():
        raise SystemExit(f"check_reference_refresh.py: {checkpoint} does not exist")
    if target.exists():
        shutil.rmtree(target)
    (target / "checkpoints").mkdir(parents=True)
    shutil.copytree(checkpoint, target / "checkpoints" / checkpoint.name)
    (target / "checkpoints" / "latest_checkpointed_iteration.txt").write_text(str(step))


def report(name: str, failures: list[str], rows: dict) -> bool:
    print(f"[check] {name}: " + ", ".join(f"step {s}: absdiff {a:.3g}, refreshes {r:g}" for s, (a, r) in rows.items()))
    for f in failures:
        print(f"[check] FAIL {name}: {f}")
    return not failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="check_reference_refresh.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log", help="a run directory or file-logger JSONL to check")
    p.add_argument("--launch", action="store_true", help="run the launcher first (into --run-dir), then check")
    p.add_argument("--run-dir", type=Path, help="with --launch: where the run goes (replaced)")
    p.add_argument("--every", type=int, default=2, help="algorithm.rpg.reference_every (default 2)")
    p.add_argument("--steps", type=int, default=4, help="with --launch: training steps (default 4)")
    p.add_argument("--resume", action="store_true", help="with --launch: also resume a second run from step --every")
    p.add_argument("--equal-tol", type=float, default=1e-4,
                   help="largest mean |ref_log_prob - old_log_prob| that counts as equal (default 1e-4; bf16 "
                        "engines may need 1e-3)")
    p.add_argument("--virtual-pipeline", type=int, default=None, metavar="V",
                   help="with --launch and BACKEND=megatron: pipeline parallel 2 with V virtual stages per rank for the "
                        "actor and the reference (model chunks with equal local names: the chunk-aware refresh, save "
                        "and restore); needs >= 2 GPUs and a model with a multiple of 2 * V layers")
    p.add_argument("overrides", nargs="*", help="with --launch: Hydra overrides for the launcher")
    args = p.parse_args(argv)
    if args.virtual_pipeline is not None:
        if os.environ.get("BACKEND") != "megatron" or args.virtual_pipeline < 2:
            p.error("--virtual-pipeline V needs BACKEND=megatron and V >= 2")
        args.overrides = [f"actor_rollout_ref.{role}.megatron.{key}={value}" for role in ("actor", "ref")
                          for key, value in (("pipeline_model_parallel_size", 2),
                                             ("virtual_pipeline_model_parallel_size", args.virtual_pipeline))
                          ] + args.overrides
    if bool(args.log) == args.launch or args.every < 1:
        p.error("give exactly one of --log PATH or --launch, and --every >= 1")
    try:
        if args.log:
            return 0 if report(args.log, *check_log(args.log, args.every, args.equal_tol)) else 1
        if args.run_dir is None or args.steps <= args.every:
            p.error("--launch needs --run-dir and --steps > --every")
        first = args.run_dir / "uninterrupted"
        if first.exists():
            shutil.rmtree(first)
        launch(first, args.every, args.steps, args.overrides)
        failures, rows = check_log(first, args.every, args.equal_tol)
        ok = report("uninterrupted run", failures, rows)
        if args.resume:
            resumed = args.run_dir / "resumed"
            resume_from(first, resumed, args.every)
            launch(resumed, args.every, args.steps, args.overrides)
            failures, resumed_rows = check_log(resumed, args.every, args.equal_tol)
            if sorted(resumed_rows) != list(range(args.every + 1, args.steps + 1)):
                failures.append(f"the resumed run logged steps {sorted(resumed_rows)}, expected "
                                f"{args.every + 1}..{args.steps}")
            for s, (_, refreshes) in resumed_rows.items():
                if s in rows and rows[s][1] != refreshes:
                    failures.append(f"step {s}: {refreshes:g} refreshes after resuming, {rows[s][1]:g} without")
            ok = report(f"run resumed from step {args.every}", failures, resumed_rows) and ok
    except RunLogError as e:
        print(f"check_reference_refresh.py: error: {e}", file=sys.stderr)
        return 2
    print("[check] OK" if ok else "[check] FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
