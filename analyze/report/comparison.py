"""Every stem against the study's reference stem: paired over seeds, Bonferroni-corrected tests and the matching
simultaneous intervals, equivalence within ±margin (two one-sided tests, each at α/m), each stem's probability of
being best (the Student-t posterior of its paired difference to the reference), the study's power (the smallest
difference it detects at 80 %, the seeds it needs for 1 point), and what each stem reaches within the reference's
training time."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import ttost_paired

from experiments.seed_plan import ALPHA, POWER, seeds_needed

from .data import ReportError

MIN_PAIRED_SEEDS = 3  # below this a paired t-test has 1 degree of freedom or none: no p-value is given
EXACT = 1e-12         # accuracy differences below this are float noise: accuracies are multiples of 1/N
DEFAULT_REFERENCE = "resnet_7x7"
DEFAULT_MARGIN = 1.0  # accuracy points
POSTERIOR_DRAWS = 20_000
EPOCH_SLACK = 1e-9   # a stem exactly as fast as the reference fits its epochs, float rounding aside
POSTERIOR_SEED = 0    # a fixed generator: the report regenerates byte for byte from its records


def choose_reference(stems: list[str], named: str | None) -> tuple[str, str]:
    """The reference stem and where it comes from: the study's `compare.reference`, else resnet_7x7 when the
    study has it, else the first stem by name. A named reference the study lacks is refused."""
    if named:
        matching = [s for s in stems if s == named or s.split(" (")[0] == named]
        if len(matching) != 1:
            raise ReportError(f"the study's reference stem {named!r} (compare.reference) is not one of its stems "
                             f"({', '.join(stems)}); set compare.reference to one of them.")
        return matching[0], "compare.reference"
    if DEFAULT_REFERENCE in stems:
        return DEFAULT_REFERENCE, "the default reference"
    return sorted(stems)[0], "the first stem by name (no compare.reference, no resnet_7x7)"


@dataclass(frozen=True)
class Paired:
    """A stem against the reference over the seeds both completed: differences are stem − reference (fractions)."""

    n: int
    mean_diff: float
    sd_diff: float        # sample SD of the differences (NaN below 2 seeds)
    p: float              # two-sided paired t-test, unadjusted; NaN when untested
    p_tost: float         # two one-sided tests against ±margin (statsmodels ttost_paired), unadjusted
    untested: str = ""    # why there is no p-value


def paired(reference: dict[Any, float], other: dict[Any, float], margin: float) -> Paired:
    seeds = sorted((s for s in set(reference) & set(other)
                    if math.isfinite(reference[s]) and math.isfinite(other[s])), key=str)
    x, y = np.array([other[s] for s in seeds], dtype=float), np.array([reference[s] for s in seeds], dtype=float)
    d, n = x - y, len(seeds)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan, "no shared seed")
    mean, sd = float(d.mean()), float(d.std(ddof=1)) if n > 1 else math.nan
    if np.all(np.abs(d) <= EXACT):
        return Paired(n, 0.0, 0.0, math.nan, math.nan, "identical on every seed (untested)")
    if n > 1 and np.ptp(d) <= EXACT:  # t = mean / 0: no test, though the difference is plain to state
        return Paired(n, mean, 0.0, math.nan, math.nan, "the same difference on every seed (untested)")
    if n < MIN_PAIRED_SEEDS:
        return Paired(n, mean, sd, math.nan, math.nan, f"too few seeds ({n} paired)")
    return Paired(n, mean, sd, float(stats.ttest_rel(x, y).pvalue), float(ttost_paired(x, y, -margin, margin)[0]))


def compare_with_reference(table: pd.DataFrame, acc_by_stem: dict[str, dict[Any, float]], reference: str,
                           margin_points: float) -> pd.DataFrame:
    """Adds Δ (stem − reference), its Bonferroni interval, raw and adjusted p of the difference and of the
    equivalence tests, the verdict and P(best). Better (the interval above 0) or worse (below 0): the paired t-test
    at α/m, read off its interval; equivalent (inside ±margin): both one-sided tests reject at α/m (TOST at level
    α/m, whose interval is the narrower 1 − 2α/m one); else inconclusive.

    Bonferroni, not Holm: its intervals are simultaneous at 95 % and agree with its tests by construction
    (Holm's step-down has no matching intervals, so its verdicts and printed intervals could disagree)."""
    margin = margin_points / 100
    table = table.assign(diff=math.nan, diff_lo=math.nan, diff_hi=math.nan, diff_sd=math.nan, pairs=0, p=math.nan,
                         p_adj=math.nan, p_tost=math.nan, p_tost_adj=math.nan, verdict="", p_best=math.nan)
    results = {}
    for i, row in table.iterrows():
        if row["stem"] == reference:
            table.at[i, "verdict"] = "**reference**"
        elif row["n"] == 0:
            table.at[i, "verdict"] = "no completed seed"
        else:
            results[i] = c = paired(acc_by_stem[reference], acc_by_stem[row["stem"]], margin)
            table.loc[i, ["diff", "diff_sd", "pairs", "p", "p_tost"]] = [c.mean_diff, c.sd_diff, c.n, c.p, c.p_tost]
            table.at[i, "verdict"] = c.untested
    refs = table.index[table["stem"] == reference]
    if len(refs) and results and all(c.n >= 2 for c in results.values()):
        shares = probability_best(*(np.array([getattr(c, k) for c in results.values()], dtype=float)
                                    for k in ("mean_diff", "sd_diff", "n")))
        table.loc[[refs[0], *results], "p_best"] = shares
    tested = [i for i, c in results.items() if math.isfinite(c.p)]
    m = len(tested)
    if not m:
        return table
    table.loc[tested, "p_adj"] = multipletests(table.loc[tested, "p"].to_numpy(float), ALPHA, "bonferroni")[1]
    table.loc[tested, "p_tost_adj"] = np.minimum(1.0, m * table.loc[tested, "p_tost"].to_numpy(float))
    for i in tested:
        c = results[i]
        half = stats.t.ppf(1 - ALPHA / (2 * m), c.n - 1) * c.sd_diff / math.sqrt(c.n)
        lo, hi = c.mean_diff - half, c.mean_diff + half
        table.loc[i, ["diff_lo", "diff_hi"]] = [lo, hi]
        table.at[i, "verdict"] = verdict(lo, hi, bool(table.at[i, "p_tost_adj"] < ALPHA), margin_points)
    return table


def verdict(lo: float, hi: float, equivalent: bool, margin_points: float) -> str:
    """From the Bonferroni interval [lo, hi] of Δ and whether TOST at α/m put Δ inside ±margin."""
    if lo > 0 or hi < 0:
        return ("better" if lo > 0 else "worse") + (f", by < {margin_points:g} pt" if equivalent else "")
    return f"equivalent (±{margin_points:g} pt)" if equivalent else "inconclusive"


def comparisons(table: pd.DataFrame) -> int:
    """How many stems were tested against the reference: the Bonferroni factor m."""
    return int(table["p_adj"].notna().sum()) if "p_adj" in table else 0


def probability_best(mean_diff: np.ndarray, sd_diff: np.ndarray, n: np.ndarray, draws: int = POSTERIOR_DRAWS,
                     seed: int = POSTERIOR_SEED) -> np.ndarray:
    """Each stem's posterior probability of the highest mean accuracy: first the reference's, then one per stem
    given by its paired differences to the reference (mean, SD over its n ≥ 2 paired seeds; ties split evenly).

    Each stem's mean difference δ has the posterior of a normal sample under the flat prior on the mean and on
    log σ: δ = mean + SD/√n · T, T Student's t with n − 1 degrees of freedom (so P(δ > 0) is 1 − the one-sided
    p of the paired t-test). The reference is δ = 0. The stems' δ are drawn independently, which leaves out the
    reference's noise that their differences share: that widens the spread between two stems, so P(best) errs
    towards the even split rather than towards a winner. Drawn, `draws` times, from numpy's generator seeded `seed`."""
    rng = np.random.default_rng(seed)
    delta = mean_diff[:, None] + (sd_diff / np.sqrt(n))[:, None] * rng.standard_t((n - 1)[:, None], (len(n), draws))
    means = np.vstack([np.zeros(draws), delta])  # stems x draws, the reference first
    top = np.isclose(means, means.max(axis=0), rtol=0, atol=EXACT)
    return (top / top.sum(axis=0)).mean(axis=1)


@dataclass(frozen=True)
class Power:
    sd: float             # pooled SD of the paired differences (fractions)
    df: int               # its degrees of freedom
    seeds: int            # paired seeds per comparison (the fewest)
    comparisons: int      # m: the test level is ALPHA / m
    detectable: float     # smallest |Δ| detected with POWER at this many seeds (fractions)
    seeds_for_1pt: int    # seeds needed to detect 1 point with POWER (0: not computable)
    margin: float         # the study's equivalence margin (fractions)
    seeds_for_margin: int  # seeds needed to detect a difference of the margin with POWER (0: not computable)


def seeds_to_detect(difference: float, sd: float, m: int) -> int:
    """Paired seeds that detect `difference` with POWER at the level ALPHA / m (0: no spread to compute from)."""
    if not sd > 0:
        return 0
    return seeds_needed(sd, difference, m)  # a search, not statsmodels' root finder: that one fails on large effects


def power(table: pd.DataFrame, margin: float = 0.01) -> Power | None:
    """The study's power from its own spread: the SD of stem − reference over seeds, pooled over the tested
    stems (each weighted by its n − 1), at the Bonferroni level α / m of the study's tests."""
    tested = table[table["p_adj"].notna()] if "p_adj" in table else table.iloc[0:0]
    if not len(tested):
        return None
    df = int((tested["pairs"] - 1).sum())
    sd = math.sqrt(float(((tested["pairs"] - 1) * tested["diff_sd"] ** 2).sum()) / df)
    n, m = int(tested["pairs"].min()), len(tested)
    effect = TTestPower().solve_power(effect_size=None, nobs=n, alpha=ALPHA / m, power=POWER, alternative="two-sided")
    return Power(sd, df, n, m, float(np.squeeze(effect)) * sd, seeds_to_detect(0.01, sd, m), margin,
                 seeds_to_detect(margin, sd, m))


def accuracy_at_time(epochs_acc: pd.Series, epochs_available: float) -> float:
    """Validation accuracy after `epochs_available` epochs, linear between the epochs' ends (epoch 1 ends at 1); NaN
    before the first epoch ends and past the last (nothing was measured there: never extrapolated)."""
    x = epochs_acc.index.to_numpy(float)
    if not len(x) or not x[0] <= epochs_available <= x[-1] + EPOCH_SLACK:
        return math.nan
    return float(np.interp(min(epochs_available, x[-1]), x, epochs_acc.to_numpy(float)))


def equal_time(table: pd.DataFrame, histories: dict[str, list[pd.DataFrame]], reference: str) -> pd.DataFrame:
    """Per stem: how many of its epochs fit in the reference's training time (the reference's epochs x its
    median training step time / the stem's) and its mean validation accuracy there, from its per-epoch history;
    NaN accuracy where that is past the epochs it trained (a faster stem that trained as many epochs as the
    reference: "not reached")."""
    table = table.assign(epochs_at_ref_time=math.nan, acc_at_ref_time=math.nan)
    ref = table[table["stem"] == reference]
    ref_hist = histories.get(reference) or []
    if not len(ref) or not ref_hist or not math.isfinite(ref["ms_step"].iloc[0]):
        return table
    ref_epochs = max(int(h["epoch"].max()) for h in ref_hist if len(h))
    for i, row in table.iterrows():
        hs = [h for h in histories.get(row["stem"]) or [] if {"epoch", "accuracy"} <= set(h.columns) and len(h)]
        if not hs or not (row["ms_step"] > 0):
            continue
        fit = ref_epochs * ref["ms_step"].iloc[0] / row["ms_step"]
        per_epoch = pd.concat(hs).groupby("epoch")["accuracy"].mean()
        table.loc[i, ["epochs_at_ref_time", "acc_at_ref_time"]] = [fit, accuracy_at_time(per_epoch, fit)]
    return table
