#!/usr/bin/env python
"""Benchmark: pi_old from the rollout (no old-log-prob forward pass) against pi_old recomputed by the actor.

Runs the same short training twice through the launcher, in this one invocation, on the embedded default
(``machine=cpu`` on a machine without a GPU; ``--machine gpu`` for the single-GPU embedded run), once with
``pi_old=recompute`` and once with ``pi_old=rollout``, and prints verl's timing keys per step side by side (median
over the steps after the first, which includes warm-up) and their ratios:

    python scripts/bench_pi_old.py [--method rpg_rkl] [--steps 6] [--machine cpu|gpu] [key=value ...]

``actor compute`` is ``timing_s/old_log_prob + timing_s/update_actor`` (plus ``timing_s/ref`` when a reference model
is scored): the actor's forward/backward work per step; ``step`` is ``timing_s/step``.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import _python

_python.ensure("yaml")

REPO = _python.REPO
KEYS = ("timing_s/gen", "timing_s/old_log_prob", "timing_s/ref", "timing_s/update_actor", "timing_s/step")


def run(run_dir: Path, pi_old: str, args) -> dict[int, dict]:
    env = dict(os.environ, STEPS=str(args.steps), RUN_DIR=str(run_dir), PI_OLD=pi_old)
    cmd = ["bash", str(REPO / "scripts" / "launch.sh"), f"method={args.method}", "trainer.test_freq=-1",
           "trainer.val_before_train=False", *([f"machine={args.machine}"] if args.machine != "cpu" else []),
           *args.overrides]
    print(f"[bench] pi_old={pi_old}: {' '.join(cmd)}", flush=True)
    if subprocess.call(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL) != 0:
        sys.exit(f"bench_pi_old.py: the pi_old={pi_old} run failed; its output is in {run_dir}/logs/*.out")
    rows = {}
    for log in sorted((run_dir / "logs").glob("*.jsonl")):
        for line in log.read_text().splitlines():
            row = json.loads(line)
            if "training/global_step" in row["data"]:
                rows[row["step"]] = row["data"]
    return rows


def summarize(rows: dict[int, dict]) -> dict[str, float]:
    steps = sorted(rows)[1:] or sorted(rows)  # the first step includes warm-up
    out = {k: statistics.median(rows[s].get(k, 0.0) for s in steps) for k in KEYS}
    out["actor compute"] = out["timing_s/old_log_prob"] + out["timing_s/update_actor"] + out["timing_s/ref"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="rpg_rkl")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--machine", default="cpu", help="the machine config: cpu (no GPU) or gpu (one GPU, hf rollout)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for both runs")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be >= 2 (the first step is left out)")
    with tempfile.TemporaryDirectory(prefix="bench-pi-old-") as tmp:
        results = {pi_old: summarize(run(Path(tmp) / pi_old, pi_old, args)) for pi_old in ("recompute", "rollout")}
    base, new = results["recompute"], results["rollout"]
    print(f"\nmedian seconds per step over steps 2..{args.steps} ({args.method}, machine={args.machine})")
    print(f"{'':24}{'recompute':>12}{'rollout':>12}{'ratio':>10}")
    for key in (*KEYS, "actor compute"):
        ratio = f"{new[key] / base[key]:10.3f}" if base[key] > 0 else f"{'-':>10}"  # not timed (e.g. no reference)
        print(f"{key:24}{base[key]:12.3f}{new[key]:12.3f}{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
