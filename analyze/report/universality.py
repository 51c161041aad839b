"""Is the best stem universal? The numbers of the comparison across contexts: each context's ranking of the stems,
Kendall's τ between the rankings of every pair of contexts with a bootstrap interval over seeds, the bootstrap
probability that every context ranks the stems alike, the stem × context interaction test (weighted least squares on
the logit scale, a residual variance per context), the verdicts against the reference that held in every context and
those that flipped, and the stems whose place moves most."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import special, stats

from experiments.schema import CompareConf

from .contexts import Context
from .statistics import accuracy_by_stem, newest_compare

RESAMPLES = 5_000     # bootstrap resamples for τ's interval
RESAMPLE_SEED = 0     # a fixed generator: the report regenerates byte for byte from its records
ALPHA = 0.05
LOGIT_CLIP = 1e-3     # an accuracy within 0.1 point of 0 or 100 % is held there, so that its logit is finite
ROUNDING = 1e-9       # τ is a ratio of pair counts: a bound within float rounding of the threshold meets it


@dataclass
class Ranking:
    """One context's stems (those every context has: τ, places and the interaction test compare the same stems),
    the seeds every one of them completed there, their accuracies (stems x seeds) and means over those seeds."""

    stems: list[str]
    seeds: list[Any]
    acc: np.ndarray

    @property
    def means(self) -> np.ndarray:
        return self.acc.mean(axis=1)

    def mean_of(self, stems: list[str]) -> np.ndarray:
        return self.means[[self.stems.index(s) for s in stems]]


def rankings(contexts: list[Context]) -> list[Ranking]:
    accs = [accuracy_by_stem(c.study) for c in contexts]
    stems = shared_stems(accs)
    out = []
    for a in accs:
        seeds = sorted(set.intersection(*(set(a[s]) for s in stems)), key=str) if stems else []
        out.append(Ranking(stems, seeds, np.array([[a[s][seed] for seed in seeds] for s in stems], dtype=float)))
    return out


def shared_stems(accs: list[dict[str, dict[Any, float]]]) -> list[str]:
    """The stems with a completed run in every context (a stem missing from one is left out of the comparison)."""
    return sorted(set.intersection(*({s for s, by_seed in a.items() if by_seed} for a in accs))) if accs else []


def ranks(means: np.ndarray) -> np.ndarray:
    """1 = the highest mean accuracy; ties share the better place."""
    return stats.rankdata(-means, method="min")


@dataclass(frozen=True)
class Tau:
    a: int                # the contexts' indices
    b: int
    stems: list[str]      # the stems both ranked
    tau: float            # Kendall's τ-b of the two rankings (NaN below 2 stems or when one context ties them all)
    lo: float             # percentile bootstrap interval over seeds
    hi: float
    undefined: int        # resamples in which τ was undefined (all means tied in a context), left out


def resampled_means(rank: list[Ranking], resamples: int = RESAMPLES, seed: int = RESAMPLE_SEED) -> list[np.ndarray]:
    """Per context, stems x resamples: the mean accuracy over each resample of its seeds. Each context's seeds are
    resampled with replacement on their own (one context's seed 0 shares nothing with another's), the same draw for
    every stem of that context (a seed is one block for them: the same data order, and the same trunk where the
    records' pairing digests agree). One generator, drawn context by context in the report's order, so every number
    from it is the same at every regeneration.

    Written here because scipy.stats.bootstrap resamples one sample (or paired samples of one length), not
    independent seed sets per context."""
    rng = np.random.default_rng(seed)
    boot = []
    for r in rank:
        n = len(r.seeds)
        boot.append(r.acc[:, rng.integers(0, n, size=(resamples, n))].mean(axis=2) if n else
                    np.full((len(r.stems), resamples), math.nan))
    return boot


def taus(rank: list[Ranking], resamples: int = RESAMPLES, seed: int = RESAMPLE_SEED) -> list[Tau]:
    """τ between every pair of contexts' rankings of the stems every context has, with its percentile bootstrap
    interval: the ranking recomputed from each resample's means (resampled_means), the 2.5th and 97.5th
    percentiles of τ over the resamples, those where τ is undefined left out."""
    boot = resampled_means(rank, resamples, seed)
    out = []
    for a, b in itertools.combinations(range(len(rank)), 2):
        stems = rank[a].stems  # the same in every context
        if len(stems) < 2 or not rank[a].seeds or not rank[b].seeds:
            out.append(Tau(a, b, stems, math.nan, math.nan, math.nan, 0))
            continue
        tau = kendall(rank[a].means, rank[b].means)
        draws = kendall_columns(boot[a], boot[b])
        ok = draws[np.isfinite(draws)]
        lo, hi = (np.percentile(ok, [2.5, 97.5]) if len(ok) else (math.nan, math.nan))
        out.append(Tau(a, b, stems, tau, float(lo), float(hi), int(resamples - len(ok))))
    return out


def same_ranking_share(rank: list[Ranking], resamples: int = RESAMPLES, seed: int = RESAMPLE_SEED) -> float:
    """The share of bootstrap resamples (the draws of taus) in which every context ranks the stems it shares in
    one order (the full ranking, ties included); NaN below 2 stems or where a context has no seeds."""
    if not rank or len(rank[0].stems) < 2 or not all(r.seeds for r in rank):
        return math.nan
    places = [stats.rankdata(-b, axis=0, method="min") for b in resampled_means(rank, resamples, seed)]
    return float(np.mean(np.all([p == places[0] for p in places[1:]], axis=(0, 1))))


def same_ranking_threshold(contexts: list[Context]) -> float:
    """`compare.same_ranking_tau` of the contexts' most recently finished record (the study's current setting,
    as statistics.reference_of reads `compare`), else the schema's default."""
    value = newest_compare([r for c in contexts for r in c.study.runs]).get("same_ranking_tau")
    return float(CompareConf().same_ranking_tau if value is None else value)


def rule_outcome(pairs: list[Tau], test: Interaction, threshold: float) -> str:
    """The rule fixed before the data (`compare.same_ranking_tau`, the threshold): 'same' when every pair's τ has its
    bootstrap lower bound at or above the threshold; 'order' (the ranking depends on the context) when some τ's upper
    bound is below it; else 'differences' when the interaction test rejects at ALPHA (the stems' differences change,
    their order undecided); else 'undecided'; 'none' when no pair has a τ."""
    finite = [t for t in pairs if math.isfinite(t.tau)]
    if not finite:
        return "none"
    if len(finite) == len(pairs) and all(t.lo >= threshold - ROUNDING for t in finite):
        return "same"
    if any(t.hi < threshold - ROUNDING for t in finite):
        return "order"
    return "differences" if math.isfinite(test.p) and test.p < ALPHA else "undecided"


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's τ-b (scipy), NaN where it is undefined (a ranking that ties every stem)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(stats.kendalltau(x, y).statistic)


def kendall_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's τ-b between every column of x and the same column of y (stems x resamples), NaN where a column ties
    every stem. τ-b = Σ sign(xi − xj)·sign(yi − yj) / √((n0 − tx)(n0 − ty)) over the n0 pairs of stems, tx and ty
    the pairs tied in x and in y: the formula scipy.stats.kendalltau computes one pair of vectors at a time; here all
    resamples at once (scipy per resample took about 1 s per pair of contexts; a test compares it with scipy)."""
    i, j = np.triu_indices(len(x), 1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = len(i)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = (sx * sy).sum(axis=0) / np.sqrt((n0 - (sx == 0).sum(axis=0)) * (n0 - (sy == 0).sum(axis=0)))
    return np.where(np.isfinite(tau), tau, np.nan)


@dataclass(frozen=True)
class Interaction:
    stems: list[str]      # the stems every context has (the model's data)
    runs: int
    f: float              # F statistic of the interaction terms
    df: int               # interaction parameters: (stems − 1)(contexts − 1) when every cell has runs
    df_resid: int         # the full model's residual degrees of freedom
    p: float
    sd: tuple[float, ...] = ()  # each context's residual SD on the logit scale (its runs weigh 1 / SD²)
    failed: str = ""      # why no test, when there is none


def interaction(contexts: list[Context]) -> Interaction:
    """Does the stem's effect depend on the context? The test of interaction_test on every completed run of the
    stems every context has (one block per seed within its context)."""
    accs = [accuracy_by_stem(c.study) for c in contexts]
    stems = shared_stems(accs)
    data = pd.DataFrame([{"acc": acc, "stem": s, "context": str(i), "block": f"{i}:{seed}"}
                         for i, a in enumerate(accs) for s in stems for seed, acc in a[s].items()],
                        columns=["acc", "stem", "context", "block"])
    if len(stems) < 2:
        return Interaction(stems, len(data), math.nan, 0, 0, math.nan, failed="the contexts share fewer than 2 stems")
    return interaction_test(data)


def interaction_test(data: pd.DataFrame) -> Interaction:
    """F-test of logit(accuracy) ~ seed block + stem + stem × context against the model without stem × context,
    both by weighted least squares (statsmodels WLS) with each run weighted by 1 / its context's residual variance.

    - The logit puts contexts at 97 % and at 60 % on one scale: there a stem gaining the same odds gains fewer
      points near the ceiling, which is not a change of its effect.
    - A fixed intercept per seed within its context: the stems of one context share a seed's data order (and its
      trunk initialisation where the pairing digests agree); seed 0 of one context shares nothing with another's.
    - The variance per context: the full model fits each context on its own, so its residuals there estimate that
      context's variance (with runs − seeds − (stems − 1) degrees of freedom). An equal-variance test would let the
      noisiest context's residuals pass for interaction.

    `data`: one row per run, columns acc (a fraction), stem, context, block (the seed within its context)."""
    stems = sorted(data["stem"].unique())
    y = special.logit(data["acc"].clip(LOGIT_CLIP, 1 - LOGIT_CLIP)).to_numpy(float)
    blocks = pd.get_dummies(data["block"], dtype=float)  # no constant: the blocks are the intercepts
    stem = pd.get_dummies(data["stem"], dtype=float).iloc[:, 1:]
    context = pd.get_dummies(data["context"], dtype=float).iloc[:, 1:]
    additive = pd.concat([blocks, stem], axis=1)
    full = pd.concat([additive, *(stem[s] * context[c] for s in stem for c in context)], axis=1)
    resid = sm.OLS(y, full.to_numpy()).fit().resid
    sd = []
    for c, rows in data.groupby("context", sort=True).indices.items():
        df = len(rows) - data["block"].iloc[rows].nunique() - (data["stem"].iloc[rows].nunique() - 1)
        if df <= 0 or not np.any(np.abs(resid[rows]) > 1e-12):
            return Interaction(stems, len(data), math.nan, 0, 0, math.nan, failed=(
                f"context {c} has no residual spread to weigh its runs by (too few seeds, or every run agrees "
                "with the additive fit exactly)"))
        sd.append(math.sqrt(float(np.sum(resid[rows] ** 2)) / df))
    weights = 1 / np.array(sd)[data["context"].map({c: i for i, c in enumerate(sorted(data["context"].unique()))})] ** 2
    fit_full = sm.WLS(y, full.to_numpy(), weights=weights).fit()
    f, p, df = fit_full.compare_f_test(sm.WLS(y, additive.to_numpy(), weights=weights).fit())
    f = max(0.0, float(f))  # float rounding can leave the nested fit a hair better than the full one
    return Interaction(stems, len(data), f, int(round(df)), int(round(fit_full.df_resid)), float(p), tuple(sd))


CONCLUSIVE = ("better", "worse", "equivalent")


def verdict_kind(verdict: str) -> str:
    """'better', 'worse', 'equivalent', 'inconclusive', or 'untested' (too few seeds, identical, …)."""
    head = verdict.split(",")[0].split(" (")[0]
    return head if head in CONCLUSIVE + ("inconclusive",) else "untested"


@dataclass(frozen=True)
class Agreement:
    stem: str
    kinds: tuple[str, ...]  # its verdict kind per context ('' where the context lacks the stem)

    @property
    def outcome(self) -> str:
        """'held' (one conclusive verdict in every context), 'flipped' (better in one, worse in another),
        'changed' (conclusive in some, not the same everywhere), 'none' (no conclusion in any context: inconclusive
        or untested)."""
        kinds = set(self.kinds)
        if {"better", "worse"} <= kinds:
            return "flipped"
        if len(kinds) == 1 and kinds <= set(CONCLUSIVE):
            return "held"
        return "changed" if kinds & set(CONCLUSIVE) else "none"


def agreements(contexts: list[Context]) -> list[Agreement]:
    """Per stem that every context tested against its reference: its verdict kind in each context."""
    verdicts = [dict(zip(c.table["stem"], c.table["verdict"])) for c in contexts]
    stems = sorted(set.intersection(*(set(v) for v in verdicts)))
    return [Agreement(s, tuple(verdict_kind(v[s]) for v in verdicts)) for s in stems
            if all(v[s] != "**reference**" for v in verdicts)]


def movers(rank: list[Ranking]) -> tuple[list[str], list[np.ndarray]]:
    """The stems every context ranks, and their places (1 = best) per context among those stems."""
    stems = rank[0].stems if rank else []
    if len(stems) < 2 or not all(r.seeds for r in rank):  # a place among fewer than 2 stems says nothing
        return stems, []
    return stems, [ranks(r.mean_of(stems)) for r in rank]
