"""Is the best stem universal? The numbers of the comparison across contexts: each context's ranking of the stems,
Kendall's τ between the rankings of every pair of contexts with a bootstrap interval over seeds, the stem × context
interaction test (a linear mixed model), the verdicts against the reference that held in every context and those
that flipped, and the stems whose place moves most."""
from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats

from stems.base import first_line

from .contexts import Context
from .statistics import accuracy_by_stem

RESAMPLES = 5_000     # bootstrap resamples for τ's interval (scipy's kendalltau per resample: about 1 s per pair)
RESAMPLE_SEED = 0     # a fixed generator: the report regenerates byte for byte from its records
ALPHA = 0.05


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


def taus(rank: list[Ranking], resamples: int = RESAMPLES, seed: int = RESAMPLE_SEED) -> list[Tau]:
    """τ between every pair of contexts' rankings of the stems every context has. The interval: each context's seeds
    resampled with replacement, on their own (one context's seed 0 shares nothing with another's), the same draw for
    every stem of that context (a seed fixes data order and initialisation for all of them); the ranking recomputed
    from the resampled means; the 2.5th and 97.5th percentiles of τ over the resamples. One generator, drawn
    context by context in the report's order, so the interval is the same at every regeneration.

    Written around scipy's kendalltau because scipy.stats.bootstrap resamples one sample (or paired samples of
    one length), not independent seed sets per context."""
    rng = np.random.default_rng(seed)
    boot = []
    for r in rank:  # stems x resamples: mean accuracy over each resample of the context's seeds
        n = len(r.seeds)
        boot.append(r.acc[:, rng.integers(0, n, size=(resamples, n))].mean(axis=2) if n else
                    np.full((len(r.stems), resamples), math.nan))
    out = []
    for a, b in itertools.combinations(range(len(rank)), 2):
        stems = rank[a].stems  # the same in every context
        if len(stems) < 2 or not rank[a].seeds or not rank[b].seeds:
            out.append(Tau(a, b, stems, math.nan, math.nan, math.nan, 0))
            continue
        tau = kendall(rank[a].means, rank[b].means)
        draws = np.array([kendall(boot[a][:, k], boot[b][:, k]) for k in range(resamples)])
        ok = draws[np.isfinite(draws)]
        lo, hi = (np.percentile(ok, [2.5, 97.5]) if len(ok) else (math.nan, math.nan))
        out.append(Tau(a, b, stems, tau, float(lo), float(hi), int(resamples - len(ok))))
    return out


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's τ-b (scipy), NaN where it is undefined (a ranking that ties every stem)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(stats.kendalltau(x, y).statistic)


@dataclass(frozen=True)
class Interaction:
    stems: list[str]      # the stems every context has (the model's data)
    runs: int
    lr: float             # likelihood-ratio statistic, 2 (log L full − log L additive), both fitted by ML
    df: int               # interaction parameters: (stems − 1)(contexts − 1) when every cell has runs
    p: float
    notes: tuple[str, ...] = ()  # what statsmodels warned about while fitting (e.g. a variance at its boundary)
    failed: str = ""      # why no test, when there is none


def interaction(contexts: list[Context]) -> Interaction:
    """Does the stem's effect depend on the context? accuracy (points) ~ C(stem) * C(context) against
    C(stem) + C(context), each a linear mixed model (statsmodels mixedlm) with a random intercept per seed within
    its context (the stems of one context share a seed's data order and initialisation; seed 0 of one context
    shares nothing with seed 0 of another), fitted by maximum likelihood (REML likelihoods of models with different
    fixed effects do not compare); the likelihood-ratio statistic against χ² with as many degrees of freedom as
    interaction parameters."""
    accs = [accuracy_by_stem(c.study) for c in contexts]
    stems = shared_stems(accs)
    rows = [{"acc": 100 * acc, "stem": s, "context": str(i), "block": f"{i}:{seed}"}
            for i, a in enumerate(accs) for s in stems for seed, acc in a[s].items()]
    if len(stems) < 2:
        return Interaction(stems, len(rows), math.nan, 0, math.nan, failed="the contexts share fewer than 2 stems")
    data = pd.DataFrame(rows)
    notes: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # Powell first (no gradient): a seed variance at its boundary, 0, is common with few seeds and stalls
            # statsmodels' default BFGS; L-BFGS polishes Powell's optimum
            full, additive = (smf.mixedlm(f"acc ~ C(stem) {op} C(context)", data, groups=data["block"])
                              .fit(reml=False, method=["powell", "lbfgs"]) for op in "*+")
        notes = sorted({first_line(w.message).rstrip(".") for w in caught})
    except (np.linalg.LinAlgError, ValueError) as e:  # e.g. a singular design: no test, said why
        return Interaction(stems, len(rows), math.nan, 0, math.nan, failed=f"the mixed model could not be fitted ({e})")
    df = len(full.fe_params) - len(additive.fe_params)
    lr = max(0.0, 2 * (full.llf - additive.llf))  # the optimiser may leave the nested fit a hair above the full one
    return Interaction(stems, len(rows), lr, df, float(stats.chi2.sf(lr, df)) if df > 0 else math.nan, tuple(notes))


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
