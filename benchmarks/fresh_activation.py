"""What a fresh activation tensor costs on this machine: allocating and filling it vs filling one that exists.

    python benchmarks/fresh_activation.py [--shape 64 16 224 224] [--threads 1] [--repeats 7]

PyTorch's CPU allocator hands large blocks back to the operating system (glibc serves allocations over its
mmap threshold, at most 32 MiB, with fresh pages), so every step's large activations and gradients are
page-faulted in again. The layer-shapes study (`python -m analyze shapes`) times conv layers whose output at
224²×16, batch 64, is 205 MB; this prints how much of such a layer's time the allocation alone can take
(ratio: fresh allocate + fill / fill in place, in the same run).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


def best_and_median_ms(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times), statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=int, nargs="+", default=[64, 16, 224, 224])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    existing = torch.empty(*args.shape)
    mb = existing.numel() * existing.element_size() / 1e6
    in_place = best_and_median_ms(lambda: existing.fill_(1.0), args.repeats)
    fresh = best_and_median_ms(lambda: torch.empty(*args.shape).fill_(1.0), args.repeats)
    print(f"tensor {tuple(args.shape)} fp32 = {mb:.0f} MB, {args.threads} thread(s), load {os.getloadavg()[0]:.1f}")
    print(f"fill in place:        best {in_place[0]:.1f} ms, median {in_place[1]:.1f} ms")
    print(f"allocate fresh + fill: best {fresh[0]:.1f} ms, median {fresh[1]:.1f} ms")
    print(f"ratio fresh / in place (medians): {fresh[1] / in_place[1]:.1f}x")


if __name__ == "__main__":
    main()
