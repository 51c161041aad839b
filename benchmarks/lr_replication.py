"""Do LR choices replicate? The same context (MNIST-5k, xresnet18, 2 epochs) was tuned twice, by
`stem_study_mnist5k_tuned` and by `stem_universality`'s `mnist28_xr18` context, each over tuning seeds 0 and 1 (at
different commits, so the runs differ). This applies the sweeper's rule (experiments/lr_choice.py: the plateau's
middle) to both studies' tuning.json and prints, per shared stem, each study's choice, plateau and stability, and
whether the two choices agree: the same LR, each inside the other's plateau, or not.

It then scores three rules on the same records: the highest mean (the rule before), the maximum of a quadratic in
log2(lr) fitted to every run, among the plateau, and the plateau's middle:
- A against B: the two studies' choices over their own grids;
- 12 replicate pairs: each shared stem's four tuning runs per LR (both studies pooled, at the LRs both tried) split
  into two pairs of seeds in each of the 3 ways;
- stability: over all 19 tuning curves of both studies, how often the choice survives a resample of the seeds.

    python -m benchmarks.lr_replication [--a docs/studies/stem_study_mnist5k_tuned/records/tuning.json]
                                        --b OTHER/tuning.json [--context mnist28_xr18]

The figures in benchmarks/RESULTS.md compared the quick study's tuning with the universality study's mnist28_xr18
(both at commit 03ccfdf), and the quick study's re-run (tuning seeds 0, 1) with the same tuning on seeds 2 and 3
(`python train.py -m +experiment=stem_study_mnist5k_tuned 'hydra.sweeper.tune_seeds=[2,3]' hydra.sweep.dir=OTHER`,
stopped once OTHER/tuning.json was written).

A choice can only be checked against the other study's plateau at LRs that study tried: the committed grids were
extended by the rule before, so an LR one study never tried is named as such."""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any, Callable

import numpy as np
import statsmodels.api as sm

from experiments.lr_choice import LRChoice, choose_lr, stability

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "studies"
SPLITS = (((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2)))  # the first: study A's seeds against study B's


def highest_mean(lrs, acc: np.ndarray) -> float:
    """The rule before the plateau rule: the highest mean over tuning seeds, ties to the smaller LR."""
    means = acc.mean(axis=1)
    return float(np.asarray(lrs)[np.argmax(np.where(np.isfinite(means), means, -np.inf))])


def fitted_peak(lrs, acc: np.ndarray) -> float:
    """Among the plateau, the LR where a quadratic in log2(lr), fitted by OLS to every run, is highest (the
    plateau's middle when the fit has no maximum)."""
    c = choose_lr(lrs, acc)
    usable = np.isfinite(acc).all(axis=1)
    x, a = np.log2(np.asarray(lrs, float)[usable]), acc[usable]
    if len(x) < 3:
        return c.lr
    xs = np.repeat(x, a.shape[1])
    b0, b1, b2 = sm.OLS(a.ravel(), np.column_stack([np.ones_like(xs), xs, xs ** 2])).fit().params
    if not b2 < 0:
        return c.lr
    return max(c.plateau, key=lambda lr: (round(b0 + b1 * math.log2(lr) + b2 * math.log2(lr) ** 2, 9), -lr))


RULES: dict[str, Callable[[list[float], np.ndarray], float]] = {
    "highest mean (before)": highest_mean,
    "fitted quadratic's maximum on the plateau": fitted_peak,
    "plateau's middle (now)": lambda lrs, acc: choose_lr(lrs, acc).lr,
}


def curves(tuning: dict[str, Any]) -> dict[str, tuple[list[float], np.ndarray, float]]:
    """Per arm name: its LRs, the LR x tuning-seed accuracy table and the LR the sweep chose."""
    out = {}
    for arm in tuning["arms"]:
        seeds = sorted({r["seed"] for r in arm["runs"]})
        acc = {(r["lr"], r["seed"]): math.nan if r["valid_acc"] is None else r["valid_acc"] for r in arm["runs"]}
        out[arm["name"]] = (arm["lrs"], np.array([[acc.get((lr, s), math.nan) for s in seeds] for lr in arm["lrs"]]),
                            arm["chosen_lr"])
    return out


def agreement(a: float, plateau_a: LRChoice, lrs_a: list[float], b: float, plateau_b: LRChoice, lrs_b: list[float]) -> str:
    """Whether two choices agree: "same LR", "in each other's plateau", or how they differ."""
    if a == b:
        return "same LR"
    a_in_b = "in B's plateau" if a in plateau_b.plateau else "not in B's plateau" if a in lrs_b else "not tried by B"
    b_in_a = "in A's plateau" if b in plateau_a.plateau else "not in A's plateau" if b in lrs_a else "not tried by A"
    return "in each other's plateau" if (a_in_b, b_in_a) == ("in B's plateau", "in A's plateau") else f"A's {a_in_b}, B's {b_in_a}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, default=DOCS / "stem_study_mnist5k_tuned" / "records" / "tuning.json")
    parser.add_argument("--b", type=Path, required=True, help="the other tuning.json")
    parser.add_argument("--context", default="", help="B's context that tuned A's (B swept contexts); none: B's arms are A's")
    args = parser.parse_args()
    a, b = (curves(json.loads(p.read_text())) for p in (args.a, args.b))
    in_b = (lambda name: f"context={args.context},{name}") if args.context else (lambda name: name)
    shared = [(name, a[name], b[in_b(name)]) for name in a if in_b(name) in b]
    print(f"A = {args.a}, B = {args.b} (context={args.context})\n")
    print("| stem | A's sweep chose | B's sweep chose | A now [plateau] stability | B now [plateau] stability | agreement now |")
    print("|---|---:|---:|---|---|---|")
    for name, (lrs_a, acc_a, swept_a), (lrs_b, acc_b, swept_b) in shared:
        ca, cb = choose_lr(lrs_a, acc_a), choose_lr(lrs_b, acc_b)
        cells = [f"{c.lr:g}{' ⚠ edge' if c.edge else ''} [{c.plateau[0]:g}–{c.plateau[-1]:g}] {100 * stability(lrs, acc):.0f} %"
                 for c, lrs, acc in ((ca, lrs_a, acc_a), (cb, lrs_b, acc_b))]
        print(f"| {name.removeprefix('stem=')} | {swept_a:g} | {swept_b:g} | {cells[0]} | {cells[1]} | "
              f"{agreement(ca.lr, ca, lrs_a, cb.lr, cb, lrs_b)} |")

    print(f"\n| rule | A vs B: same LR | A vs B: same or in each other's plateau | {3 * len(shared)} seed-pair replicates: "
          f"same LR | same or in each other's plateau | mean stability over {len(a) + len(b)} curves (always kept) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, rule in RULES.items():
        full, pairs = [], []
        for _, (lrs_a, acc_a, _), (lrs_b, acc_b, _) in shared:
            full.append(agreement(rule(lrs_a, acc_a), choose_lr(lrs_a, acc_a), lrs_a,
                                  rule(lrs_b, acc_b), choose_lr(lrs_b, acc_b), lrs_b))
            both = sorted(set(lrs_a) & set(lrs_b))
            pooled = np.hstack([acc_a[[lrs_a.index(lr) for lr in both]], acc_b[[lrs_b.index(lr) for lr in both]]])
            for halves in SPLITS:
                x, y = (pooled[:, list(h)] for h in halves)
                pairs.append(agreement(rule(both, x), choose_lr(both, x), both, rule(both, y), choose_lr(both, y), both))
        kept = [stability(lrs, acc, rule) for lrs, acc, _ in [*a.values(), *b.values()]]
        agree = ("same LR", "in each other's plateau")
        print(f"| {label} | {full.count('same LR')} of {len(full)} | {sum(v in agree for v in full)} of {len(full)} | "
              f"{pairs.count('same LR')} of {len(pairs)} | {sum(v in agree for v in pairs)} of {len(pairs)} | "
              f"{100 * statistics.fmean(kept):.0f} % ({sum(k == 1 for k in kept)} of {len(kept)}) |")


if __name__ == "__main__":
    main()
