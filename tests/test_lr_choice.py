"""The tuned sweeper's LR choice (experiments/lr_choice.py) on hand-made tuning curves: a clear peak, a flat
plateau, a choice at the grid's edge, a noisy tie; the plateau against an independent one-way ANOVA contrast
(statsmodels), and the stability figure on a case whose answer is known by hand."""
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from experiments.lr_choice import choose_lr, stability

LRS = [0.001, 0.002, 0.004, 0.008, 0.016]


def curve(means_pct, deviation_pct, seeds=2):
    """Per LR, the tuning accuracy at each seed: the mean plus alternating ±deviation (seed 0 high, seed 1 low, ...),
    so the per-LR SD is known by hand."""
    signs = np.array([1 if s % 2 == 0 else -1 for s in range(seeds)], dtype=float)
    return (np.asarray(means_pct, float)[:, None] + deviation_pct * signs[None, :]) / 100


def anova_plateau(lrs, acc):
    """The LRs whose mean a one-sided 5 % t test of the one-way ANOVA model cannot put below the best mean."""
    frame = pd.DataFrame([(lr, a) for lr, row in zip(lrs, acc) for a in row], columns=["lr", "acc"])
    frame["lr"] = frame["lr"].map(lambda v: f"lr{lrs.index(v)}")
    fit = smf.ols("acc ~ C(lr) - 1", frame).fit()
    best = int(np.argmax(acc.mean(axis=1)))
    eye = np.eye(len(lrs))
    return tuple(lr for i, lr in enumerate(lrs)
                 if i == best or stats.t.sf(fit.t_test(eye[best] - eye[i]).tvalue.item(), fit.df_resid) > 0.05)


def test_a_clear_peak_is_chosen_alone_and_stably():
    acc = curve([90, 94, 96, 93, 88], 0.25)
    c = choose_lr(LRS, acc)
    assert (c.lr, c.plateau, c.edge, c.plateau_edges) == (0.004, (0.004,), None, ())
    assert c.noise_sd == pytest.approx(0.0025 * math.sqrt(2)) and c.noise_df == 5  # m ± d: SD d·√2; 5 LRs x 1 df
    assert c.plateau == anova_plateau(LRS, acc)
    assert stability(LRS, acc) == 1.0


def test_a_flat_plateau_is_named_and_its_middle_chosen():
    acc = curve([90, 95, 95.4, 95, 90], 0.5)  # the best mean at 0.004, within the noise of 0.002 and 0.008
    c = choose_lr(LRS, acc)
    assert c.plateau == (0.002, 0.004, 0.008) == anova_plateau(LRS, acc)
    assert c.lr == 0.004 == choose_lr(LRS, curve([90, 95.4, 95, 95, 90], 0.5)).lr  # where the best mean lands: no matter
    # every LR the same, to the image (a 400-image split ties often): the middle, a plateau reaching both edges
    flat = choose_lr(LRS, curve([95, 95, 95, 95, 95], 0.25))
    assert (flat.lr, flat.plateau_edges) == (0.004, ("lowest", "highest"))
    assert choose_lr(LRS[:4], curve([95, 95, 95, 95], 0.25)).lr == 0.002  # of two middles, the smaller
    # a plateau with an LR just outside its bound: margin t(0.95, 5) · SD · √(2/2) = 2.015 · 0.707 = 1.425 pt
    acc = curve([90, 93.5, 95, 93.6, 90], 0.5)
    assert choose_lr(LRS, acc).plateau == (0.004, 0.008) == anova_plateau(LRS, acc)


def test_a_choice_at_the_grid_edge_is_flagged():
    rising = curve([88, 90, 92, 94, 95], 0.25)
    c = choose_lr(LRS, rising)
    assert (c.lr, c.edge, c.plateau, c.plateau_edges) == (0.016, "highest", (0.016,), ("highest",))
    falling = curve([95, 94, 92, 90, 88], 0.25)
    assert (choose_lr(LRS, falling).edge, choose_lr(LRS, falling).plateau_edges) == ("lowest", ("lowest",))
    # rising to a plateau at the top: the choice is inside, the plateau reaches the edge (the sweeper extends there)
    c = choose_lr(LRS, curve([88, 90, 94.8, 95, 95], 0.25))
    assert (c.lr, c.edge, c.plateau_edges) == (0.008, None, ("highest",))
    # an LR that failed above the choice: the curve ended, neither the choice nor the plateau is at the grid's edge
    acc = rising.copy()
    acc[-1, 1] = math.nan
    assert (choose_lr(LRS, acc).lr, choose_lr(LRS, acc).edge, choose_lr(LRS, acc).plateau_edges) == (0.008, None, ())


def test_a_noisy_tie_is_not_decided_by_the_noise():
    # the committed resnet_7x7 case: three LRs within a quarter point, sd ≈ 0.25 over two seeds; which LR has the
    # best mean depends on the seeds' noise, the rule's choice does not
    lrs = [0.001, 0.004, 0.016]
    replicates = [np.array([[95.5, 95.25], [95.25, 95.0], [95.25, 95.0]]) / 100,
                  np.array([[95.0, 95.25], [95.5, 95.0], [95.0, 95.25]]) / 100,
                  np.array([[95.25, 95.0], [95.25, 95.0], [95.5, 95.25]]) / 100]
    best_mean = {lrs[int(np.argmax(r.mean(axis=1)))] for r in replicates}
    assert len(best_mean) == 3  # the highest mean lands on every LR
    choices = [choose_lr(lrs, r) for r in replicates]
    assert all(c.plateau == tuple(lrs) for c in choices)
    assert {c.lr for c in choices} == {0.004}  # the plateau's middle


def test_stability_is_the_share_of_seed_resamples_that_keep_the_choice():
    # two seeds: the resamples are {0,0} (1/4), {0,1} (1/2), {1,1} (1/4). Both seeds together and seed 0 alone put
    # 0.004 and 0.016 on the plateau (its middle: 0.004); seed 1 alone leads with 0.016 by 3 pt, past the bound: 3/4
    lrs = [0.001, 0.004, 0.016]
    acc = np.array([[0.90, 0.90], [0.95, 0.93], [0.94, 0.96]])
    full = choose_lr(lrs, acc)  # pooled SD 0.0115 on 3 df: the plateau's bound t(0.95, 3) · SD = 0.027
    noise = (full.noise_sd, full.noise_df)  # a resample keeps the runs' noise (repeats would shrink its own SD)
    assert full.noise_sd == pytest.approx(math.sqrt((0 + 2 * 0.01 ** 2 + 2 * 0.01 ** 2) / 3))
    assert [choose_lr(lrs, acc[:, cols], noise).lr for cols in ([0, 0], [0, 1], [1, 1])] == [0.004, 0.004, 0.016]
    assert stability(lrs, acc) == pytest.approx(0.75)
    # many seeds (drawn resamples, a fixed generator): a peak far above the noise is always kept
    acc = curve([90, 94, 96, 93, 88], 0.25, seeds=8)
    assert stability(LRS, acc) == 1.0
