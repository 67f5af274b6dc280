"""Benchmark: forward + backward time and peak memory of every RPG loss against verl's `vanilla`.

All losses run in this one process on identical tensors (default 64 sequences x 8192 tokens, float32, CPU),
interleaved round-robin so that machine noise hits every loss alike. Prints the fastest of the repeats (the
least noisy estimate on a shared machine; the median is printed too) and the ratios to vanilla.
Targets: time <= 1.25x vanilla, peak memory <= 1.5x vanilla.

    python scripts/bench_losses.py [--batch 64] [--length 8192] [--repeats 7] [--dtype float32]
"""

import argparse
import statistics
import time

import _python

_python.ensure("torch", "verl")

TIME_TARGET, MEMORY_TARGET = 1.25, 1.5
# torch, verl and the losses are imported in the functions below (after the arguments: `--help` needs none of them)


def make_inputs(batch, length, dtype, seed=0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    log_prob = (-torch.rand(batch, length, generator=gen) * 4).to(dtype)
    old_log_prob = (log_prob.float() + 0.3 * torch.randn(batch, length, generator=gen)).to(dtype)
    advantages = torch.randn(batch, 1, generator=gen).expand(batch, length).contiguous().to(dtype)
    lengths = torch.randint(length // 4, length + 1, (batch,), generator=gen)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return log_prob, old_log_prob, advantages, mask


def make_config(clip):
    from omegaconf import OmegaConf

    return OmegaConf.create(
        dict(clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=10.0, use_kl_loss=False,
             policy_loss=dict(loss_mode="x", rpg=dict(beta=1e-4, clip=clip)), global_batch_info={})
    )


def step(name, inputs, config):
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    import rpg_ext.plugin  # noqa: F401  (the RPG losses in verl's registry)

    log_prob, old_log_prob, advantages, mask = inputs
    lp = log_prob.detach().requires_grad_(True)
    loss, _metrics = get_policy_loss_fn(name)(old_log_prob, lp, advantages, mask, "token-mean", config)
    loss.backward()
    return lp.grad


def timed(name, inputs, config):
    start = time.perf_counter()
    step(name, inputs, config)
    return time.perf_counter() - start


def peak_memory(name, inputs, config):
    """Peak bytes held above the starting point during one forward + backward.

    From the torch profiler's memory trace: every event's *self* allocation (allocations minus frees inside
    that op, not its children; frees outside ops appear as "[memory]" events) accumulated in time order.
    """
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        step(name, inputs, config)
    current = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += e.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--clip", default="dual", choices=["dual", "none"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    import torch

    from rpg_ext import RPG_LOSS_NAMES

    if args.threads:
        torch.set_num_threads(args.threads)

    dtype = getattr(torch, args.dtype)
    inputs = make_inputs(args.batch, args.length, dtype)
    names = ["vanilla", *RPG_LOSS_NAMES]
    config = make_config(args.clip)
    for name in names:  # warm-up
        step(name, inputs, config)

    times = {n: [] for n in names}
    for _ in range(args.repeats):
        for name in names:
            times[name].append(timed(name, inputs, config))
    memory = {n: peak_memory(n, inputs, config) for n in names}

    base_t, base_m = min(times["vanilla"]), memory["vanilla"]
    print(f"{args.batch} x {args.length} tokens, {args.dtype}, clip={args.clip}, {torch.get_num_threads()} threads, "
          f"best of {args.repeats} interleaved runs (forward + backward)")
    print(f"{'loss':22s} {'time ms':>9s} {'x vanilla':>10s} {'median ms':>10s} {'peak MiB':>9s} {'x vanilla':>10s}")
    worst_t = worst_m = 0.0
    for name in names:
        t, m = min(times[name]), memory[name]
        rt, rm = t / base_t, m / base_m
        if name != "vanilla":
            worst_t, worst_m = max(worst_t, rt), max(worst_m, rm)
        med = statistics.median(times[name])
        print(f"{name:22s} {t * 1e3:9.1f} {rt:10.2f} {med * 1e3:10.1f} {m / 2**20:9.1f} {rm:10.2f}")
    ok = worst_t <= TIME_TARGET and worst_m <= MEMORY_TARGET
    print(f"worst RPG ratio: time {worst_t:.2f}x (target {TIME_TARGET}x), memory {worst_m:.2f}x "
          f"(target {MEMORY_TARGET}x): {'within targets' if ok else 'OUTSIDE TARGETS'}")


if __name__ == "__main__":
    main()
