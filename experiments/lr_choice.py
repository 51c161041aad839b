"""Which learning rate a tuned point trains at, chosen so that the tuning seeds' noise does not decide it.

The input is one point's tuning curve: per LR of its grid the tuning accuracy at each tuning seed (NaN: that run
failed or diverged; an LR unstable on any seed is unusable). The rule:

1. the noise: the SD over tuning seeds pooled over the usable LRs (a one-way ANOVA's within-LR SD);
2. the plateau: the usable LRs whose mean is not below the best mean by more than a one-sided 95 % t bound on the
   difference of two means (pooled SD, its degrees of freedom): the LRs the tuning cannot tell from the best;
3. the choice: among the plateau, the LR where a quadratic in log2(LR) fitted by least squares to every run
   (pooled over seeds) is highest; when that fit has no maximum (flat or concave-up, or fewer than 3 usable LRs),
   the plateau's middle LR (the smaller of two middles). Ties go to the smaller LR.

The choice sits at an edge of the grid when it is the grid's lowest or highest LR: the sweeper then extends the
grid there. Its stability is how often the rule picks the same LR when the tuning seeds are resampled with
replacement (every LR of one seed together; the plateau's bound keeps the SD of all the runs): exact over all resamples for up to 6 seeds, else 2,000 draws of a
fixed generator, so that the figure is the same on every run."""
from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import statsmodels.api as sm
from scipy import stats

from stems.base import StemlabError

PLATEAU_CONFIDENCE = 0.95  # one-sided: an LR leaves the plateau when it is below the best at this confidence
EXACT_RESAMPLES = 1000  # enumerate every resample of the seeds while there are at most this many distinct ones
DRAWS = 2000  # else this many bootstrap draws, from a generator of a fixed seed
RULE = ("among the LRs within the tuning noise of the best mean (one-sided 95 % t bound, SD pooled over LRs), the "
        "maximum of a quadratic in log2(lr) fitted to every tuning run; no maximum: the plateau's middle; "
        "ties go to the smaller lr, an lr that failed or diverged on any tuning seed is never chosen")


class NoUsableLR(StemlabError):
    """Every learning rate of the grid failed or diverged on the tuning split for one point."""


@dataclass(frozen=True)
class LRChoice:
    lr: float
    plateau: tuple[float, ...]  # ascending: the usable LRs the tuning cannot tell from the best mean
    edge: str | None  # "lowest" | "highest": the choice is that edge of the grid tried
    peak_lr: float | None  # the fitted quadratic's maximum (may lie outside the grid); None: it has none
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
    fitted, peak = quadratic_fit(np.log2(grid), a)
    idx = np.flatnonzero(on_plateau)
    if fitted is None:
        pick = idx[(len(idx) - 1) // 2]
    else:
        pick = idx[np.argmax(fitted[idx])]  # argmax: the first (smaller LR) of a tie
    lr = float(grid[pick])
    edge = "lowest" if lr == min(lrs) else "highest" if lr == max(lrs) else None
    return LRChoice(lr=lr, plateau=tuple(float(g) for g in grid[on_plateau]), edge=edge,
                    peak_lr=peak_lr(peak), noise_sd=sd, noise_df=df)


def peak_lr(peak_log2: float | None) -> float | None:
    """The fit's maximum as an LR; None where it has none or lies beyond any float (a nearly straight fit)."""
    return float(2 ** peak_log2) if peak_log2 is not None and abs(peak_log2) < 1000 else None


def quadratic_fit(x: np.ndarray, acc: np.ndarray) -> tuple[np.ndarray | None, float | None]:
    """The fitted accuracy at each x and the x of the fit's maximum, from OLS of every run on (1, x, x²);
    (None, None) when the fit has no maximum: fewer than 3 distinct x, or a curvature that is not negative."""
    if len(x) < 3:
        return None, None
    xs = np.repeat(x, acc.shape[1])
    design = np.column_stack([np.ones_like(xs), xs, xs ** 2])
    b0, b1, b2 = sm.OLS(acc.ravel(), design).fit().params
    if not b2 < 0:
        return None, None
    return b0 + b1 * x + b2 * x ** 2, -b1 / (2 * b2)


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
