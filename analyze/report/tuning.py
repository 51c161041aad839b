"""A tuned study's LR choices, re-derived from its tuning records with the sweeper's rule (experiments/lr_choice.py):
per stem the tuning accuracy at each LR and tuning seed, the chosen LR, its plateau, the grid edge it sits at, and
its stability over resampled tuning seeds."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from experiments.lr_choice import LRChoice, NoUsableLR, choose_lr, stability

from .studies import Study, stem_labels


@dataclass(frozen=True)
class StemTuning:
    lrs: list[float]  # ascending: every LR the stem was tuned at
    accuracies: np.ndarray  # LR x tuning seed (ascending); NaN: the run failed, diverged or is missing
    choice: LRChoice | None  # None: no LR was usable
    stability: float  # NaN without a choice


def lr_choices(study: Study) -> dict[str, StemTuning]:
    """Per stem of the study's tuning stage, its curve and the rule's choice from it."""
    labels = stem_labels(study.tuning)
    curves: dict[str, dict[tuple[float, int], float]] = {}
    for r in study.tuning:
        if math.isfinite(r.lr) and isinstance(r.seed, int):
            curves.setdefault(labels[id(r)], {})[(r.lr, r.seed)] = r.metric("valid_acc") if r.status == "completed" else math.nan
    out = {}
    for stem, points in sorted(curves.items()):
        lrs, seeds = sorted({lr for lr, _ in points}), sorted({s for _, s in points})
        acc = np.array([[points.get((lr, s), math.nan) for s in seeds] for lr in lrs])
        try:
            out[stem] = StemTuning(lrs, acc, choose_lr(lrs, acc), stability(lrs, acc))
        except NoUsableLR:
            out[stem] = StemTuning(lrs, acc, None, math.nan)
    return out
