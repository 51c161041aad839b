"""How long the profiler takes, against the plain training step it profiles.

    python benchmarks/profile_speed.py [--stem xresnet_3conv] [--trunk xresnet50] [--size 128]
                                       [--batch 8] [--in-channels 3] [--threads 1] [--device cpu]
                                       [--budget-s 3]

Prints, in one run: the plain forward+backward step time (median of a few, after warm-up), the
run time of ``profile_model(latency=False)`` (counts only), of ``profile_model(latency=True)``
(counts + timing, 5 profiled steps, calibration from cache) and of the same within ``--budget-s``
(what every training run pays: ``profile.budget_s``), each as a ratio to the plain step.
Goal (issue 4): the full profile of xresnet50 at 128 px under 30 s on CPU.  The default run's
model: ``--trunk xresnet18 --size 28 --batch 64 --in-channels 1 --threads 0``.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without `pip install -e .`

from profiler import profile_model  # noqa: E402  (after the path set-up above)
from experiments.schema import TRUNKS, stem_node  # noqa: E402
from experiments.model import build_model  # noqa: E402


def build(stem: str, trunk: str, in_channels: int = 3, num_classes: int = 10) -> torch.nn.Module:
    """The project's model (registered stem + fixed trunk), as train.py would build it."""
    trunk_cfg = asdict(next(t for t in TRUNKS if t.name == trunk))
    return build_model(stem_node(stem), trunk_cfg, in_channels, num_classes)


def plain_step_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int = 5) -> float:
    """Median ms of forward + backward (a training step without the optimiser), after warm-up."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    times = []
    for i in range(repeats + 2):
        sync()
        t0 = time.perf_counter()
        model(x).sum().backward()
        sync()
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
        model.zero_grad(set_to_none=True)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stem", default="xresnet_3conv")
    ap.add_argument("--trunk", default="xresnet50")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--in-channels", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="0: torch's default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget-s", type=float, default=3.0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (args.batch, args.in_channels, args.size, args.size)
    model = build(args.stem, args.trunk, args.in_channels).to(args.device)
    step = plain_step_ms(model, torch.randn(*shape, device=args.device))
    t0 = time.perf_counter()
    profile_model(model, shape, device=args.device, latency=False)
    counts_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    p = profile_model(model, shape, device=args.device, latency=True, threads=args.threads or None)
    full_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = profile_model(model, shape, device=args.device, latency=True, threads=args.threads or None,
                      budget_s=args.budget_s)
    budget_s = time.perf_counter() - t0
    print(f"{args.stem} + {args.trunk}, input {shape}, {args.device}, {torch.get_num_threads()} thread(s)")
    print(f"plain train step (fwd+bwd): {step:.1f} ms")
    print(f"profile_model(latency=False): {counts_s:.2f} s = {1e3 * counts_s / step:.1f}x a train step")
    print(f"profile_model(latency=True):  {full_s:.2f} s = {1e3 * full_s / step:.1f}x a train step "
          f"(goal < 30 s on CPU: {'met' if full_s < 30 else 'missed'})")
    print(f"profile_model(budget_s={args.budget_s:g}): {budget_s:.2f} s = {1e3 * budget_s / step:.1f}x a train step "
          f"({b.totals['timed_steps']:.0f} profiled steps)")
    for label, t in [("full", p.totals), ("budget", b.totals)]:
        print(f"{label}: per-layer vs end-to-end: forward {t['ms_fwd']:.1f} / {t['ms_fwd_e2e']:.1f} ms "
              f"(gap {100 * t['gap_fwd']:+.1f} %), train {t['ms_fwd'] + t['ms_bwd']:.1f} / "
              f"{t['ms_train_step_e2e']:.1f} ms (gap {100 * t['gap_train']:+.1f} %)")


if __name__ == "__main__":
    main()
