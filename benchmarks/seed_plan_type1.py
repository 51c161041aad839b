"""Type I error of seeds chosen by power (experiments.seed_plan) on simulated null studies: every stem equals the
reference, the pilot's variance sets the number of seeds, and the final paired t-tests (Bonferroni over the m
comparisons, as the report's) run on all seeds, the pilot's included. Prints the share of studies with any false
"better"/"worse" against the nominal α, and the seeds the plans chose.

    python benchmarks/seed_plan_type1.py [--studies 2000] [--stems 1] [--sd 0.7] [--pilot 3] [--cap 10]

A paired design: each seed has a shared seed effect (cancels in the differences) and per-run noise of SD `sd`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.seed_plan import ALPHA, make_plan  # noqa: E402


def null_studies(studies: int, stems: int, sd: float, pilot: int, cap: int, margin: float = 1.0,
                 seed: int = 0) -> tuple[float, np.ndarray]:
    """(share of studies with a false rejection at the family-wise level ALPHA, seeds chosen per study)."""
    rng = np.random.default_rng(seed)
    rejected, chosen = 0, []
    for _ in range(studies):
        acc = rng.normal(0, sd, (cap, stems + 1)) + rng.normal(0, 2, (cap, 1))  # column 0: the reference
        diffs = acc[:, 1:] - acc[:, :1]
        plan = make_plan([diffs[:pilot, j] for j in range(stems)], margin, pilot, cap)
        d = diffs[:plan.seeds]
        p = stats.ttest_1samp(d, 0.0, axis=0).pvalue
        rejected += bool((np.minimum(1, stems * p) < ALPHA).any())
        chosen.append(plan.seeds)
    return rejected / studies, np.asarray(chosen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=2000)
    ap.add_argument("--stems", type=int, default=1, help="stems compared with the reference (m)")
    ap.add_argument("--sd", type=float, default=0.45, help="per-run SD in accuracy points")
    ap.add_argument("--pilot", type=int, default=3)
    ap.add_argument("--cap", type=int, default=10)
    args = ap.parse_args()
    rate, chosen = null_studies(args.studies, args.stems, args.sd, args.pilot, args.cap)
    se = np.sqrt(rate * (1 - rate) / args.studies)
    print(f"type I error {rate:.4f} (± {1.96 * se:.4f}, 95 %) against nominal {ALPHA} over {args.studies} null studies "
          f"({args.stems} stem(s) vs the reference, run SD {args.sd} pts, pilot {args.pilot}, cap {args.cap}); seeds "
          f"chosen: median {np.median(chosen):.0f}, {np.mean(chosen == args.cap):.0%} at the cap, "
          f"{np.mean(chosen == args.pilot):.0%} at the pilot")


if __name__ == "__main__":
    main()
