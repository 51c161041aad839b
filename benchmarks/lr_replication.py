"""Do LR choices replicate? The same context (MNIST-5k, xresnet18, 2 epochs) was tuned twice, by
`stem_study_mnist5k_tuned` and by `stem_universality`'s `mnist28_xr18` context, each over tuning seeds 0 and 1 (at
different commits, so the runs differ). This applies the sweeper's rule (experiments/lr_choice.py) and the highest
mean (the rule before it) to both studies' tuning.json and prints, per shared stem, each study's choice, plateau
and stability, and whether the two choices agree: the same LR, each inside the other's plateau, or not. The last
column pools both studies' four tuning runs per LR (at the LRs both tried). Then, over every tuning curve of both
studies, how often each rule's choice survives a resample of the tuning seeds.

    python benchmarks/lr_replication.py [--a docs/studies/stem_study_mnist5k_tuned/records/tuning.json]
                                        [--b docs/studies/stem_universality/records/tuning.json] [--context mnist28_xr18]

A choice can only be checked against the other study's plateau at LRs that study tried: the committed grids were
extended by the earlier rule, so an LR one study never tried is named as such."""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from experiments.lr_choice import LRChoice, choose_lr, stability

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "studies"


def highest_mean(lrs, acc: np.ndarray) -> float:
    """The rule before the plateau rule: the highest mean over tuning seeds, ties to the smaller LR."""
    means = acc.mean(axis=1)
    return float(np.asarray(lrs)[np.nanargmax(np.where(np.isfinite(means), means, -np.inf))])


def curves(tuning: dict[str, Any]) -> dict[str, tuple[list[float], np.ndarray, float]]:
    """Per arm name: its LRs, the LR x tuning-seed accuracy table and the LR the sweep chose."""
    out = {}
    for arm in tuning["arms"]:
        seeds = sorted({r["seed"] for r in arm["runs"]})
        acc = {(r["lr"], r["seed"]): math.nan if r["valid_acc"] is None else r["valid_acc"] for r in arm["runs"]}
        out[arm["name"]] = (arm["lrs"], np.array([[acc.get((lr, s), math.nan) for s in seeds] for lr in arm["lrs"]]),
                            arm["chosen_lr"])
    return out


def agreement(a: LRChoice, lrs_a: list[float], b: LRChoice, lrs_b: list[float]) -> str:
    if a.lr == b.lr:
        return "same LR"
    a_in_b = "in B's plateau" if a.lr in b.plateau else "not in B's plateau" if a.lr in lrs_b else "not tried by B"
    b_in_a = "in A's plateau" if b.lr in a.plateau else "not in A's plateau" if b.lr in lrs_a else "not tried by A"
    return f"A's {a_in_b}, B's {b_in_a}"


def describe(c: LRChoice, acc_stability: float) -> str:
    return (f"{c.lr:g}{' (edge)' if c.edge else ''} [{'–'.join(f'{lr:g}' for lr in (c.plateau[0], c.plateau[-1]))}] "
            f"{100 * acc_stability:.0f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, default=DOCS / "stem_study_mnist5k_tuned" / "records" / "tuning.json")
    parser.add_argument("--b", type=Path, default=DOCS / "stem_universality" / "records" / "tuning.json")
    parser.add_argument("--context", default="mnist28_xr18", help="B's context that tuned A's")
    args = parser.parse_args()
    a, b = (curves(json.loads(p.read_text())) for p in (args.a, args.b))
    print(f"A = {args.a.relative_to(ROOT) if args.a.is_relative_to(ROOT) else args.a}, "
          f"B = {args.b.relative_to(ROOT) if args.b.is_relative_to(ROOT) else args.b} (context={args.context})")
    print("per study: choice [plateau] stability over resampled tuning seeds\n")
    print("| stem | A's sweep chose | B's sweep chose | A: rule | B: rule | agreement | A+B pooled (4 seeds) |")
    print("|---|---:|---:|---|---|---|---:|")
    agreed = 0
    for name, (lrs_a, acc_a, swept_a) in a.items():
        key = f"context={args.context},{name}"
        if key not in b:
            continue
        lrs_b, acc_b, swept_b = b[key]
        ca, cb = choose_lr(lrs_a, acc_a), choose_lr(lrs_b, acc_b)
        verdict = agreement(ca, lrs_a, cb, lrs_b)
        agreed += verdict == "same LR" or ("not in" not in verdict and "not tried" not in verdict)
        both = sorted(set(lrs_a) & set(lrs_b))
        pooled = np.hstack([acc_a[[lrs_a.index(lr) for lr in both]], acc_b[[lrs_b.index(lr) for lr in both]]])
        print(f"| {name.removeprefix('stem=')} | {swept_a:g} | {swept_b:g} | {describe(ca, stability(lrs_a, acc_a))} | "
              f"{describe(cb, stability(lrs_b, acc_b))} | {verdict} | {choose_lr(both, pooled).lr:g} |")
    print(f"\nshared stems whose two choices agree (the same LR, or each in the other's plateau): {agreed}")

    every = [*a.values(), *b.values()]
    for label, rule in (("highest mean (before)", highest_mean), ("plateau rule (now)", None)):
        kept = [stability(lrs, acc, rule) for lrs, acc, _ in every]
        print(f"{label}: the choice survives a resample of the tuning seeds in {100 * statistics.fmean(kept):.0f} % "
              f"on average over {len(kept)} curves; in every resample for {sum(k == 1 for k in kept)} of them")


if __name__ == "__main__":
    main()
