"""Which learning rate a tuned point trains at, chosen so that the tuning seeds' noise does not decide it.

The input is one point's tuning curve: per LR of its grid the tuning accuracy at each tuning seed (NaN: that run
failed or diverged; an LR unstable on any seed is unusable). The rule:

1. the noise: the SD over tuning seeds pooled over the usable LRs (a one-way ANOVA's within-LR SD);
2. the plateau: the usable LRs whose mean is not below the best mean by more than a one-sided 95 % t bound on the
   difference of two means (pooled SD, its degrees of freedom): the LRs the tuning cannot tell from the best;
3. the choice: the plateau's middle LR (the smaller of two middles). Inside the plateau the tuning cannot rank
   the LRs, so the choice uses only the plateau's extent: a rule that picks by the means there, or by a curve
   fitted to them, lets the noise pick (benchmarks/lr_replication.py measures both on the committed tunings).

While the plateau reaches an edge of the grid its extent, and so its middle, is unknown: the sweeper extends the
grid there. The choice is flagged when it sits at an edge of the grid (a plateau of one LR there, or of two at the
bottom). Its stability is how often the rule picks the same LR when the tuning seeds are resampled with
replacement (every LR of one seed together; the plateau's bound keeps the SD of all the runs): exact over all
resamples for up to 6 seeds, else 2,000 draws of a fixed generator, so that the figure is the same on every run."""
from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats

from stems.base import StemlabError

PLATEAU_CONFIDENCE = 0.95  # one-sided: an LR leaves the plateau when it is below the best at this confidence
EXACT_RESAMPLES = 1000  # enumerate every resample of the seeds while there are at most this many distinct ones
DRAWS = 2000  # else this many bootstrap draws, from a generator of a fixed seed
RULE = ("the middle (the smaller of two middles) of the plateau: the LRs whose mean lies within the tuning noise of "
        "the best mean (one-sided 95 % t bound, SD over tuning seeds pooled over LRs); an lr that failed or diverged "
        "on any tuning seed is never chosen")


class NoUsableLR(StemlabError):
    """Every learning rate of the grid failed or diverged on the tuning split for one point."""


@dataclass(frozen=True)
class LRChoice:
    lr: float
    plateau: tuple[float, ...]  # ascending: the usable LRs the tuning cannot tell from the best mean
    edge: str | None  # "lowest" | "highest": the choice is that edge of the grid tried
    plateau_edges: tuple[str, ...]  # the grid's edges ("lowest", "highest") the plateau reaches
    noise_sd: float | None  # the SD over tuning seeds pooled over usable LRs; None: one seed, no estimate
    noise_df: int  # its degrees of freedom


def choose_lr(lrs: Sequence[float], accuracies: Sequence[Sequence[float]],
              noise: tuple[float | None, int] | None = None) -> LRChoice:
    """The rule above on `accuracies[i][j]`: LR `lrs[i]` (ascending) at tuning seed j; `noise` (SD, degrees of
    freedom) instead of the SD these runs give (for a resample of them, whose repeated seeds would shrink it)."""
    acc = np.asarray(accuracies, dtype=float).reshape(len(lrs), -1)
    usable = np.isfinite(acc).all(axis=1) & (acc.shape[1] > 0)
    if not usable.any():
        raise NoUsableLR(f"no learning rate of {list(lrs)} gave a tuning accuracy (every tuning run failed or "
                         "diverged, see their records under tune/); fix them or change hydra.sweeper.lrs, then re-run.")
    grid, a = np.asarray(lrs, dtype=float)[usable], acc[usable]
    means, n = a.mean(axis=1), a.shape[1]
    df = a.size - len(a)
    sd, df = noise or (math.sqrt(((a - means[:, None]) ** 2).sum() / df) if df else None, df)
    margin = stats.t.ppf(PLATEAU_CONFIDENCE, df) * sd * math.sqrt(2 / n) if sd is not None else 0.0
    on_plateau = means >= means.max() - margin - 1e-12
    plateau = tuple(float(g) for g in grid[on_plateau])
    lr = plateau[(len(plateau) - 1) // 2]
    edges = {"lowest": min(lrs), "highest": max(lrs)}
    return LRChoice(lr=lr, plateau=plateau, edge=next((e for e, at in edges.items() if lr == at), None),
                    plateau_edges=tuple(e for e, at in edges.items() if at in plateau), noise_sd=sd, noise_df=df)


def stability(lrs: Sequence[float], accuracies: Sequence[Sequence[float]],
              rule: Callable[[Sequence[float], np.ndarray], float] | None = None) -> float:
    """The share of resamples of the tuning seeds (with replacement, every LR of a seed together) in which `rule`
    (the LR it picks from a seed table) picks the LR it picks on all of them. By default this module's rule, at
    the noise of all the runs: a resample moves the means, while its repeated seeds would shrink the SD to nothing."""
    acc = np.asarray(accuracies, dtype=float).reshape(len(lrs), -1)
    if rule is None:
        full = choose_lr(lrs, acc)
        rule = lambda grid, a: choose_lr(grid, a, noise=(full.noise_sd, full.noise_df)).lr  # noqa: E731
    chosen, n = rule(lrs, acc), acc.shape[1]
    if math.comb(2 * n - 1, n) <= EXACT_RESAMPLES:  # every multiset of n seeds, counted by its orderings
        resamples = list(itertools.combinations_with_replacement(range(n), n))
        weights, total = [multinomial(Counter(r).values()) for r in resamples], n ** n
    else:
        resamples = list(np.random.default_rng(0).integers(0, n, size=(DRAWS, n)))
        weights, total = [1] * DRAWS, DRAWS
    return sum(w for r, w in zip(resamples, weights) if same_choice(rule, lrs, acc[:, list(r)], chosen)) / total


def same_choice(rule: Callable[[Sequence[float], np.ndarray], float], lrs: Sequence[float], acc: np.ndarray,
                chosen: float) -> bool:
    try:
        return rule(lrs, acc) == chosen
    except NoUsableLR:
        return False


def multinomial(counts) -> int:
    """The number of orderings of a multiset with these counts."""
    total, out = 0, 1
    for c in counts:
        total += c
        out *= math.comb(total, c)
    return out
