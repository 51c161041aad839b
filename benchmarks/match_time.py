"""stem.match=time: how repeatable one timed comparison is, why, and whether a match lands within 5 %.

    python benchmarks/match_time.py [--stem xresnet_3conv] [--target resnet_7x7] [--size 64] [--batch-size 64]
                                    [--precision fp32|bf16] [--channels-last] [--nulls 5] [--no-match]

1. Why a step's time varies: 40 steps of the target, each with its minor page faults (getrusage); the share of
   steps that fault and the median ms of steps with and without faults (fresh activations mapped anew by the kernel).
2. Null comparisons (the target against a copy of itself), `--nulls` of each way, the ways alternating so both see
   the same load: the baseline (a ratio of medians of >= 15 interleaved rounds and >= 0.2 s of steps per stem, what
   stem.match did before) and experiments.match's (a trimmed mean of the paired log ratios, rounds added until its
   95 % CI is within ±1 %). Prints every ratio, the spread of each way (max |ratio - 1|: the match refuses above
   2.5 %) and baseline spread / new spread (> 1: the new way is more repeatable).
3. The match itself, as a run makes it (experiments.match.match_params at the run's threads): achieved / target and
   its wall time, or its refusal.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from profiler.calibrate import cpu_model  # noqa: E402
from profiler.timing import interleaved  # noqa: E402
from experiments import match  # noqa: E402
from stems.base import StemlabError  # noqa: E402


def faults_per_step(clock: match._Clock, stem: torch.nn.Module, steps: int) -> str:
    """The share of steps with minor page faults, and the median ms of steps with and without."""
    rows = []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        ms = clock._time(stem) * 1e3
        rows.append((ms, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
    rows = rows[3:]  # after warm-up
    clean, faulted = [ms for ms, f in rows if f == 0], [ms for ms, f in rows if f > 0]
    med = lambda v: f"{statistics.median(v):.2f} ms" if v else "-"
    return (f"{len(faulted)}/{len(rows)} steps take minor page faults (median {statistics.median(f for _, f in rows):.0f}, "
            f"max {max(f for _, f in rows)} pages); median step {med(clean)} without, {med(faulted)} with")


def baseline_ratio(clock: match._Clock, a: torch.nn.Module, b: torch.nn.Module) -> float:
    """What stem.match compared by before: one warm-up step each, >= 15 rounds and >= 0.2 s, a ratio of medians."""
    clock._time(a), clock._time(b)
    t = interleaved({"a": lambda: clock._time(a), "b": lambda: clock._time(b)}, 15, 0.2, 400)
    return statistics.median(t["a"]) / statistics.median(t["b"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stem", default="xresnet_3conv")
    ap.add_argument("--target", default="resnet_7x7")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--nulls", type=int, default=5, help="null comparisons of each way (default 5)")
    ap.add_argument("--no-match", action="store_true", help="skip part 3")
    args = ap.parse_args()
    print(f"{cpu_model()}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}; {args.target} at "
          f"bs {args.batch_size}, {args.size} px, {args.precision}{', channels_last' if args.channels_last else ''}")
    clock = match._Clock(match.train_step_time, "cpu", args.batch_size, 3, args.size, 64, args.precision,
                         args.channels_last)
    target = clock.stem(args.target, {})
    print("1. " + faults_per_step(clock, target, 40))
    old, new = [], []
    for k in range(args.nulls):
        pair = [lambda: old.append(baseline_ratio(clock, target, clock.stem(args.target, {}))),
                lambda: new.append(clock.compare(target, clock.stem(args.target, {})))]
        for run in pair if k % 2 == 0 else pair[::-1]:
            run()
    spread_old = max(abs(r - 1) for r in old)
    spread_new = max(abs(c.ratio - 1) for c in new)
    print("2. null ratios, baseline (median of >= 15 rounds): " + " ".join(f"{r:.4f}" for r in old))
    print("   null ratios, new (trimmed mean until ±1 %):     " + " ".join(f"{c.ratio:.4f}" for c in new)
          + f"  (±{max(c.uncertainty for c in new) * 100:.1f} % at worst, {min(c.rounds for c in new)}-"
            f"{max(c.rounds for c in new)} rounds)")
    print(f"   spread: baseline {spread_old * 100:.2f} %, new {spread_new * 100:.2f} % (allowed "
          f"{match.REPEATABILITY * 100:.1f} %); baseline / new = {spread_old / max(spread_new, 1e-9):.2f}; "
          f"load {os.getloadavg()[0]:.2f}")
    if args.no_match:
        return
    t0 = time.perf_counter()
    try:
        params, info = match.match_params(args.stem, 3, 64, args.size, f"time:{args.target}", {},
                                          batch_size=args.batch_size, precision=args.precision,
                                          channels_last=args.channels_last)
    except StemlabError as e:
        print(f"3. refused after {time.perf_counter() - t0:.0f} s: {e}")
        return
    print(f"3. stem={args.stem} stem.widths={params['widths']}: achieved / target = "
          f"{info['achieved_value'] / info['target_value']:.4f} ({info['achieved_value'] * 1e3:.2f} ms against "
          f"{info['target_value'] * 1e3:.2f} ms; null spread {info['repeatability'] * 100:.2f} %, ±"
          f"{info['uncertainty'] * 100:.1f} %), {info['timings']} timed steps in {time.perf_counter() - t0:.0f} s; "
          f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
