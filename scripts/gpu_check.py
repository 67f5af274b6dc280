#!/usr/bin/env python
"""The recipe on one GPU without vLLM, checked end to end in two short runs (also on the CPU: ``--device cpu``).

    python scripts/gpu_check.py [--device cuda|cpu] [--run-dir DIR] [key=value ...]

1. ``bash scripts/launch.sh method=rpg_reinforce_urkl machine=<gpu|cpu>`` with ``algorithm.rpg.reference=periodic``,
   ``reference_every=1``, 2 training steps, a checkpoint after each and a validation before and after: verl's real
   trainer, FSDP2 (NCCL and bf16 on a GPU), the ``hf`` rollout generating on the same device (the hybrid-engine
   layout), on the embedded model and task.
2. A second run resumed from the first one's step-1 checkpoint (as an interrupted run would), training steps 2 and 3
   with pi_old taken from the rollout (``pi_old=rollout``: no old-log-prob forward pass).

What it checks and prints, from verl's own file-logger logs:
- weight sync: ``training/rollout_probs_diff_max`` (rollout vs actor token probabilities, verl's, computed where pi_old
  is recomputed) below ``--sync-tol`` at every step of the first run; in the second run, where pi_old is the rollout's,
  the importance weight at each step's first micro-batch (``actor/rpg/step_start_iw_min`` / ``_max``: pi_actor /
  pi_rollout) within ``--sync-tol`` of 1; the actor was updated at step 1 (``actor/grad_norm`` > 0), so step 2's
  agreement is evidence;
- every ``actor/rpg/*`` metric finite;
- the reference equal to the actor right after a refresh: ``actor/rpg/ref_old_logprob_absdiff`` (mean |log pi_ref -
  log pi_old| over the batch, scored by the reference model and the actor in separate engines) at most
  ``--equal-tol`` at steps 1 (the initial model) and 2 (refreshed after step 1; without the refresh it would lag);
- the refresh count (``actor/rpg/reference_refreshes``) equal to the step (a refresh after every step), the resumed
  run's step 2 equal to the uninterrupted run's, with its reference restored from the checkpoint (absdiff at most
  ``--equal-tol``).

``BACKEND=megatron`` checks Megatron's weight copy instead of FSDP's, and ``--virtual-pipeline V`` (with Megatron,
two or more GPUs) the copy of every virtual-pipeline model chunk. Exit 0 when every check passes, 1 when one fails
(each failure printed), 2 on a usage or launch error.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import _python

_python.ensure("yaml")
REPO = _python.REPO

from recipe.rpg.tables.runlogs import RunLogError, load_run  # noqa: E402

ABSDIFF, REFRESHES = "actor/rpg/ref_old_logprob_absdiff", "actor/rpg/reference_refreshes"
SYNC, SYNC_VALID, STEP = "training/rollout_probs_diff_max", "training/rollout_probs_diff_valid", "training/global_step"
IW_MIN, IW_MAX = "actor/rpg/step_start_iw_min", "actor/rpg/step_start_iw_max"
#: --sync-tol defaults: fp32 on the CPU agrees to ~1e-6; bf16 on a GPU to ~1e-2; one missed update shows ~0.3.
SYNC_TOL = {"cpu": 1e-3, "cuda": 5e-2}
OVERRIDES = ["method=rpg_reinforce_urkl", "algorithm.rpg.reference=periodic", "algorithm.rpg.reference_every=1",
             "trainer.save_freq=1", "actor_rollout_ref.actor.optim.lr_warmup_steps=0"]
FIRST = ["trainer.total_training_steps=2", "trainer.test_freq=2"]  # pi_old recomputed (verl's default), validated
RESUMED = ["trainer.total_training_steps=3", "trainer.test_freq=-1", "trainer.val_before_train=False", "pi_old=rollout"]


def launch(run_dir: Path, device: str, overrides: list[str], env: dict | None = None) -> None:
    env = dict(os.environ if env is None else env, RUN_DIR=str(run_dir))
    machine = "cpu" if device == "cpu" else "gpu"
    cmd = ["bash", str(REPO / "scripts" / "launch.sh"), *OVERRIDES, f"machine={machine}", *overrides]
    print(f"[check] {' '.join(cmd)}  (RUN_DIR={run_dir})", flush=True)
    if subprocess.call(cmd, cwd=REPO, env=env) != 0:
        raise SystemExit(f"gpu_check.py: the run in {run_dir} failed; its output: {run_dir}/logs/*.out")


def resume_from(source: Path, target: Path, step: int) -> None:
    """``target`` as a run interrupted after step ``step``'s checkpoint of ``source``."""
    checkpoint = source / "checkpoints" / f"global_step_{step}"
    if not checkpoint.is_dir():
        raise SystemExit(f"gpu_check.py: {checkpoint} does not exist")
    shutil.rmtree(target, ignore_errors=True)
    (target / "checkpoints").mkdir(parents=True)
    shutil.copytree(checkpoint, target / "checkpoints" / checkpoint.name)
    (target / "checkpoints" / "latest_checkpointed_iteration.txt").write_text(str(step))


def training_rows(run_dir: Path) -> dict[int, dict[str, float]]:
    series = load_run("run", run_dir).series
    return {s: {k: v[s] for k, v in series.items() if s in v} for s in sorted(series.get(STEP, {}))}


def check_run(name: str, rows: dict[int, dict], steps: list[int], sync_tol: float, equal_tol: float) -> list[str]:
    """The failures of one run's training steps against the checks of the module docstring."""
    failures = [] if sorted(rows) == steps else [f"{name}: logged training steps {sorted(rows)}, expected {steps}"]
    for s, r in rows.items():
        absdiff, refreshes = r.get(ABSDIFF), r.get(REFRESHES)
        if SYNC in r or IW_MIN not in r:  # pi_old recomputed: verl's rollout-vs-actor probability difference
            sync, ok = f"{SYNC}={r.get(SYNC)} (valid {r.get(SYNC_VALID)})", r.get(SYNC_VALID) == 1 and r[SYNC] < sync_tol
        else:  # pi_old from the rollout: pi_actor / pi_rollout at the step's first micro-batch
            sync, ok = f"{IW_MIN}={r[IW_MIN]:.3g}, {IW_MAX}={r[IW_MAX]:.3g}", max(1 - r[IW_MIN], r[IW_MAX] - 1) < sync_tol
        if not ok:
            failures.append(f"{name} step {s}: {sync}, expected within {sync_tol:g}: the rollout did not generate with "
                            "the actor's weights")
        bad = sorted(k for k, v in r.items() if k.startswith("actor/rpg/") and not math.isfinite(v))
        if bad or not any(k.startswith("actor/rpg/") for k in r):
            failures.append(f"{name} step {s}: actor/rpg/* metrics missing or not finite: {bad}")
        if absdiff is None or not absdiff <= equal_tol:
            failures.append(f"{name} step {s}: {ABSDIFF}={absdiff}, expected <= {equal_tol:g}: the reference does not "
                            "hold the actor's weights right after a refresh")
        if refreshes != s:
            failures.append(f"{name} step {s}: {REFRESHES}={refreshes}, expected {s} (a refresh after every step)")
    if 1 in rows and not rows[1].get("actor/grad_norm", 0) > 0:
        failures.append(f"{name} step 1: actor/grad_norm={rows[1].get('actor/grad_norm')}: the actor did not change, "
                        "so step 2 shows nothing")
    return failures


def report(name: str, rows: dict[int, dict]) -> None:
    for s, r in rows.items():
        figures = [f"{k.rsplit('/', 1)[1]} {r[k]:.3g}" for k in (SYNC, IW_MIN, IW_MAX, ABSDIFF, REFRESHES,
                                                                  "timing_s/step", "timing_s/gen", "timing_s/old_log_prob",
                                                                  "perf/hf_rollout/gen_tokens_per_s") if k in r]
        print(f"[check] {name} step {s}: " + ", ".join(figures), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when a GPU is visible")
    p.add_argument("--run-dir", type=Path, default=REPO / "runs" / "gpu_check", help="where both runs go (replaced)")
    p.add_argument("--sync-tol", type=float, default=None, help=f"max rollout-vs-actor probability difference "
                                                                f"(default {SYNC_TOL})")
    p.add_argument("--equal-tol", type=float, default=1e-4,
                   help="max mean |ref - old| log-prob difference that counts as equal (default 1e-4)")
    p.add_argument("--virtual-pipeline", type=int, default=None, metavar="V",
                   help="with BACKEND=megatron: pipeline parallel 2 with V virtual stages per rank (actor and "
                        "reference): model chunks with equal local names; needs >= 2 GPUs")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for both runs")
    args = p.parse_args(argv)
    from rpg_ext.cpu import gpu_visible

    device = args.device or ("cuda" if gpu_visible() else "cpu")
    if device == "cuda" and not gpu_visible():
        p.error("--device cuda: no GPU is visible on this machine (use --device cpu)")
    if args.virtual_pipeline is not None:
        if os.environ.get("BACKEND") != "megatron" or args.virtual_pipeline < 2:
            p.error("--virtual-pipeline V needs BACKEND=megatron and V >= 2")
        args.overrides = [f"actor_rollout_ref.{role}.megatron.{key}={value}" for role in ("actor", "ref")
                          for key, value in (("pipeline_model_parallel_size", 2),
                                             ("virtual_pipeline_model_parallel_size", args.virtual_pipeline))
                          ] + ["trainer.n_gpus_per_node=2"] + args.overrides
    sync_tol = args.sync_tol if args.sync_tol is not None else SYNC_TOL[device]
    first, resumed = args.run_dir / "uninterrupted", args.run_dir / "resumed"
    try:
        shutil.rmtree(first, ignore_errors=True)
        launch(first, device, FIRST + args.overrides)
        resume_from(first, resumed, 1)
        launch(resumed, device, RESUMED + args.overrides)
        rows, resumed_rows = training_rows(first), training_rows(resumed)
    except RunLogError as e:
        print(f"gpu_check.py: error: {e}", file=sys.stderr)
        return 2
    report("uninterrupted", rows)
    report("resumed from step 1", resumed_rows)
    failures = check_run("uninterrupted", rows, [1, 2], sync_tol, args.equal_tol)
    failures += check_run("resumed from step 1", resumed_rows, [2, 3], sync_tol, args.equal_tol)
    if 2 in rows and 2 in resumed_rows and rows[2].get(REFRESHES) != resumed_rows[2].get(REFRESHES):
        failures.append("the resumed run's refresh count differs from the uninterrupted run's at step 2")
    for f in failures:
        print(f"[check] FAIL {f}", flush=True)
    print(f"[check] {'OK' if not failures else 'FAILED'} on {device}: weight sync, RPG metrics, reference refresh, "
          "resume and pi_old from the rollout", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
