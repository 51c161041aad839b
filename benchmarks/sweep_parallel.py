"""Sweeps on a small CPU: one point at a time on every core (Hydra's basic launcher) against one point per core
in parallel (`hydra/launcher=parallel`, joblib, n_jobs = cores: joblib caps each worker's OpenMP threads at
cores // n_jobs, so each point trains on one thread). Prints the wall time of each and the ratio
sequential / parallel (> 1: parallel is faster).

    python benchmarks/sweep_parallel.py [--preset stem_study_mnist5k] [--stems resnet_7x7,patchify_4x4]
                                        [--seeds 0,1] [--repeats 2] [OVERRIDES ...]

Each way runs the same sweep (the preset's, cut to --stems x --seeds, W&B off) into its own fresh directory, as
`python train.py -m` does; the two ways alternate (A B, B A, ...) so load from other processes hits both alike, and
the figure is the median of the per-pair ratios."""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sweep_seconds(args: argparse.Namespace, parallel: bool, out: Path) -> float:
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", f"+experiment={args.preset}", f"stem={args.stems}",
           f"seed={args.seeds}", "logger=none", f"hydra.sweep.dir={out}", *args.overrides]
    # both ways named: the CPU presets default to the parallel launcher
    cmd += ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={os.cpu_count()}"] if parallel else ["hydra/launcher=basic"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"})
    if done.returncode != 0:
        sys.exit(f"the sweep failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="stem_study_mnist5k")
    ap.add_argument("--stems", default="resnet_7x7,patchify_4x4")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every point (e.g. train.epochs=1)")
    args = ap.parse_args()
    print(f"{os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}; preset {args.preset}, stems {args.stems}, "
          f"seeds {args.seeds}, {' '.join(args.overrides)}")
    ratios = []
    with tempfile.TemporaryDirectory(prefix="sweep_parallel_") as tmp:
        for r in range(args.repeats):
            walls = {}
            for parallel in ((False, True) if r % 2 == 0 else (True, False)):
                walls[parallel] = sweep_seconds(args, parallel, Path(tmp) / f"r{r}_{'parallel' if parallel else 'sequential'}")
            ratios.append(walls[False] / walls[True])
            print(f"pair {r}: sequential ({os.cpu_count()} threads a point) {walls[False]:.0f} s, parallel "
                  f"({os.cpu_count()} points of 1 thread) {walls[True]:.0f} s, ratio {ratios[-1]:.3f}")
    print(f"sequential / parallel wall time = {statistics.median(ratios):.3f} (median of {args.repeats} pairs; > 1: "
          f"parallel is faster; load {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
