"""Is the best stem universal? The report across contexts on controlled records: the same ranking of 4 stems in two
contexts and the reversed ranking in a third (τ = +1 and −1, the ranking depends on the context), the same ranking
everywhere (it is the same when the seeds agree, and these seeds cannot tell when they are noisy), Kendall's τ and its
bootstrap against hand values, the interaction test's degrees of freedom and its error rate in simulated contexts of
different accuracy and noise, context labels, the answer per factor from a base context (the preset's contexts each
one factor from its base), and the README block that states the answer."""

import json

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy import special

from analyze import __main__ as cli
from analyze.report import readme
from analyze.report.contexts import find_contexts
from analyze.report.data import read_records
from analyze.report.factors import factors_between
from analyze.report.statistics import stem_table
from analyze.report.studies import flatten, split_studies
from experiments.same_run import same_run_config
from analyze.report.universality import (Interaction, Ranking, Tau, interaction, interaction_test, kendall, kendall_columns,
                                         same_ranking_share, taus)
from tests.test_report import write_point

NOISE = [0.3, -0.2, 0.1, -0.4, 0.2]  # a seed's shift, the same for every stem of a context (points)
WOBBLE = [0.0, 0.1, -0.1, 0.05, -0.05]  # a stem x seed wobble, the same in every context: the design's residual
STEMS = {"resnet_7x7": 0.0, "xresnet_3conv": 2.0, "patchify_4x4": -3.0, "dw_separable": -6.0}  # effects (points)
COMPARE = {"reference": "resnet_7x7", "margin": 1.0}


def write_context(root, name, trunk, epochs, effects, shift=0.0, overrides=True, wobbles=WOBBLE, data=None,
                  compare=COMPARE):
    """5 seeds of every stem at 90 + shift + effect + the seed's shift + a wobble; Hydra's overrides.yaml names the
    context as a preset launch does (conf/context/NAME)."""
    for k, (stem, effect) in enumerate(effects.items()):
        for seed, (noise, wobble) in enumerate(zip(NOISE, wobbles)):
            acc = 90 + shift + effect + noise + (k + 1) * wobble
            d = write_point(root / name, stem, seed, acc / 100, trunk=trunk, epochs=epochs, compare=compare, data=data)
            if overrides:
                (d / ".hydra").mkdir()
                (d / ".hydra" / "overrides.yaml").write_text(f"- context={name}\n- stem={stem}\n- seed={seed}\n")


def reversed_study(root):
    write_context(root, "a_xr18", "xresnet18", 2, STEMS)
    write_context(root, "b_xr34", "xresnet34", 2, STEMS, shift=1.0)
    write_context(root, "c_xr18_long", "xresnet18", 3, {s: -e for s, e in STEMS.items()})


def test_a_reversed_third_context_gives_tau_minus_one_and_a_ranking_that_depends_on_it(tmp_path, capsys):
    reversed_study(tmp_path)
    assert cli.main(["report", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    text = (tmp_path / "report.md").read_text()
    assert "tau a_xr18 vs b_xr34: τ = +1.00 [+1.00, +1.00]" in printed
    assert "tau a_xr18 vs c_xr18_long: τ = -1.00 [-1.00, -1.00]" in printed
    assert "tau b_xr34 vs c_xr18_long: τ = -1.00 [-1.00, -1.00]" in printed
    assert "| a_xr18 | b_xr34 | 4 | +1.00 | [+1.00, +1.00] |" in text
    assert "| a_xr18 | c_xr18_long | 4 | -1.00 | [-1.00, -1.00] |" in text
    assert "**The ranking depends on the context**" in text
    # (4 − 1) stems x (3 − 1) contexts interaction parameters
    # 60 runs − 15 seed blocks − 3 stems − 6 interaction terms: 36 residual degrees of freedom
    assert "(4 stems every context has × 3 contexts, 60 runs)" in text and "on 6 and 36 degrees of freedom" in text
    # the two ends swap: xresnet_3conv and dw_separable move 3 places, the middle two 1
    assert ("`dw_separable` (1st in c_xr18_long, 4th in a_xr18 and b_xr34) and `xresnet_3conv` (1st in a_xr18 and "
            "b_xr34, 4th in c_xr18_long) move most: 3 places of the 4 every context ranks.") in text
    assert "| `xresnet_3conv` | 1st (92.00 %) | 1st (93.00 %) | 4th (88.00 %) | 3 |" in text
    assert "- Held in every context: none." in text
    assert ("- Flipped (better than the reference in one context, worse in another): `dw_separable` (worse, worse, "
            "better); `patchify_4x4` (worse, worse, better); `xresnet_3conv` (better, better, worse).") in text
    assert "| `xresnet_3conv` | +2.00 [+1.86, +2.14] better |" in text
    assert (tmp_path / "across_contexts_forest.png").read_bytes()[:4] == b"\x89PNG"
    assert "![forest](across_contexts_forest.png)" in text and "5,000 resamples from numpy's default generator seeded 0" in text
    # each context keeps its own section and table
    assert text.count("\n## ") == 4 and text.count("Reference: **`resnet_7x7`** (compare.reference)") == 3


THREE = {s: STEMS[s] for s in ("resnet_7x7", "xresnet_3conv", "patchify_4x4")}


def test_the_same_ranking_everywhere_is_said_to_be_the_same(tmp_path):
    # the same accuracies in both contexts: no interaction on any scale, F = 0 on 2 degrees of freedom, p = 1;
    # every seed orders the stems alike, so every resample keeps the order: τ's interval is [+1, +1]
    write_context(tmp_path, "a_xr18", "xresnet18", 2, THREE)
    write_context(tmp_path, "b_xr34", "xresnet34", 2, THREE)
    assert cli.main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert ("**The ranking is the same in both contexts**: every pair's τ (τ = +1.00) has its 95 % bootstrap lower "
            "bound at or above compare.same_ranking_tau = +0.60, and the data show no change of the differences with "
            "the context (stem × context interaction p = 1.0000; 100 % of bootstrap resamples rank the stems alike in "
            "every context).") in text
    assert "**The ranking depends on the context**" not in text
    assert "F = 0.00 on 2 and 16 degrees of freedom, **p = 1.0000**" in text
    assert "No stem changes its place (of the 3 every context ranks)." in text
    assert "- Held in every context: `patchify_4x4` worse; `xresnet_3conv` better." in text
    assert "| `patchify_4x4` | -3.00 [-3.25, -2.75] worse | -3.00 [-3.25, -2.75] worse | held: worse |" in text


def test_the_same_point_ranking_from_noisy_seeds_is_not_called_the_same(tmp_path):
    # the same means as above in both contexts (the wobbles sum to 0), but a stem x seed wobble of up to 5 points
    # (x1 to x3 by stem) against stems 1 point apart: resampled seeds often reorder them, and the second context's
    # wobble runs the other way
    noisy = [0.0, 2.5, -2.5, 1.25, -1.25]
    write_context(tmp_path, "a_xr18", "xresnet18", 2, {"resnet_7x7": 0.0, "xresnet_3conv": 1.0, "patchify_4x4": -1.0},
                  wobbles=noisy)
    write_context(tmp_path, "b_xr34", "xresnet34", 2, {"resnet_7x7": 0.0, "xresnet_3conv": 1.0, "patchify_4x4": -1.0},
                  wobbles=[-w for w in noisy])
    assert cli.main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    answer = text.split("## Across contexts: is the best stem universal?\n\n")[1].split("\n")[0]
    assert answer.startswith("**These seeds cannot tell whether the ranking depends on the context**: τ = +1.00, not "
                             "every τ's bootstrap lower bound is at or above compare.same_ranking_tau = +0.60")
    assert "| a_xr18 | b_xr34 | 3 | +1.00 | [-0.33, +1.00] |" in text
    share = float(answer.split("; ")[-1].split(" % of bootstrap resamples rank the stems alike")[0])
    assert 0 < share < 50


def ranking(means_by_seed):
    """A context's Ranking from {stem: [accuracy per seed]} (seeds 0, 1, ...)."""
    stems = list(means_by_seed)
    n = len(next(iter(means_by_seed.values())))
    return Ranking(stems, list(range(n)), np.array([means_by_seed[s] for s in stems], dtype=float))


def test_kendall_tau_against_hand_counts():
    a = ranking({"s1": [0.9, 0.9], "s2": [0.8, 0.8], "s3": [0.7, 0.7], "s4": [0.6, 0.6]})
    # the top two swapped: 5 concordant pairs, 1 discordant of 6: τ = (5 − 1) / 6
    swap = ranking({"s1": [0.8, 0.8], "s2": [0.9, 0.9], "s3": [0.7, 0.7], "s4": [0.6, 0.6]})
    # the best goes last: its 3 pairs discordant, the other 3 concordant: τ = 0
    rotated = ranking({"s1": [0.5, 0.5], "s2": [0.9, 0.9], "s3": [0.7, 0.7], "s4": [0.6, 0.6]})
    first, second, third = taus([a, swap, rotated], resamples=200)
    assert first.tau == pytest.approx(4 / 6) and second.tau == pytest.approx(0.0)
    assert third.tau == pytest.approx((4 - 2) / 6)  # swap vs rotated: s1 last in one, 2nd in the other: 2 discordant
    # every seed orders the stems alike, so every resample keeps the order: the interval is the point
    assert (first.lo, first.hi) == (pytest.approx(4 / 6), pytest.approx(4 / 6)) and first.undefined == 0


def test_kendall_over_resamples_is_scipys_tau_b_column_by_column():
    # small integers: many ties within a column, as resampled means of few seeds have; the last column ties every stem
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 4, size=(5, 300)).astype(float), rng.integers(0, 4, size=(5, 300)).astype(float)
    x[:, -1] = 1.0
    expected = [kendall(x[:, k], y[:, k]) for k in range(x.shape[1])]  # scipy.stats.kendalltau, NaN where undefined
    assert np.allclose(kendall_columns(x, y), expected, equal_nan=True, rtol=0, atol=1e-12)
    assert np.isnan(kendall_columns(x, y)[-1])


def test_the_bootstrap_resamples_seeds_and_regenerates_exactly():
    # 2 stems; in context x seed 0 says s1 > s2 by 1 point and seed 1 says s2 > s1 by 3: of the 4 equally likely
    # resamples of 2 seeds only (0, 0) keeps s1 first, so τ against context y (s1 first) is +1 with probability 1/4,
    # −1 with 3/4: both percentiles 2.5 and 97.5 lie in those masses, and the point estimate (means: s2 first) is −1
    x = ranking({"s1": [0.81, 0.80], "s2": [0.80, 0.83]})
    y = ranking({"s1": [0.9, 0.9, 0.9], "s2": [0.5, 0.5, 0.5]})
    (t,) = taus([x, y], resamples=4000)
    assert (t.tau, t.lo, t.hi) == (-1.0, -1.0, 1.0)
    share = np.mean([taus([x, y], resamples=1, seed=s)[0].lo == 1.0 for s in range(400)])
    assert share == pytest.approx(0.25, abs=0.07)
    assert taus([x, y], resamples=500) == taus([x, y], resamples=500)  # a fixed generator: byte for byte
    # the same resamples: x ranks like y only in the (0, 0) quarter of them
    assert same_ranking_share([x, y], resamples=4000) == pytest.approx(0.25, abs=0.03)


def test_interaction_degrees_of_freedom_are_stems_minus_one_times_contexts_minus_one(tmp_path):
    reversed_study(tmp_path)
    runs = read_records(tmp_path).runs
    studies = split_studies(runs)
    contexts, _ = find_contexts(studies, [stem_table(s) for s in studies])
    assert interaction(contexts).df == 3 * 2
    assert interaction(contexts[:2]).df == 3 * 1


def test_contexts_are_named_by_their_override_else_by_what_differs(tmp_path):
    write_context(tmp_path, "a", "xresnet18", 2, STEMS, overrides=False)
    write_context(tmp_path, "b", "xresnet34", 3, STEMS, overrides=False)
    studies = split_studies(read_records(tmp_path).runs)
    for run in studies[0].runs:
        run.record["model"] = {"image_size": 28}  # the size a dataset's own images have (MNIST: 28)
    contexts, left_out = find_contexts(studies, [stem_table(s) for s in studies])
    assert sorted(c.label for c in contexts) == ["mnist5k 28px xresnet18 2ep", "mnist5k xresnet34 3ep"] and not left_out


def test_one_context_in_two_sweeps_is_not_a_comparison_across_contexts(tmp_path):
    write_context(tmp_path / "sweep1", "a", "xresnet18", 2, STEMS)
    write_context(tmp_path / "sweep2", "a", "xresnet18", 2, STEMS)
    for sweep in ("sweep1", "sweep2"):
        (tmp_path / sweep / "multirun.yaml").write_text("hydra:\n  sweeper:\n    _target_: x\n")
    studies = split_studies(read_records(tmp_path).runs)
    contexts, left_out = find_contexts(studies, [stem_table(s) for s in studies])
    assert len(studies) == 2 and len(contexts) == 1 and len(left_out) == 1
    assert cli.main(["report", str(tmp_path)]) == 0
    assert "Across contexts" not in (tmp_path / "report.md").read_text()


def test_readme_states_what_held_what_flipped_and_tau(tmp_path, monkeypatch):
    folder = tmp_path / "docs" / "studies" / "universality"
    reversed_study(folder / "records")
    assert cli.main(["report", str(folder), "--out", str(folder)]) == 0
    monkeypatch.chdir(tmp_path)
    block = readme.block()
    assert block.startswith("**Across contexts: is the best stem universal?** (`docs/studies/universality/report.md`):\n\n"
                            "**The ranking depends on the context**")
    assert "- Flipped (better than the reference in one context, worse in another): `dw_separable`" in block
    assert "| a_xr18 | c_xr18_long | 4 | -1.00 | [-1.00, -1.00] |" in block
    assert "| `patchify_4x4` | -3.00 [-3.28, -2.72] worse |" in block
    assert "| budget | c_xr18_long | 2 → 3 epochs | 4 | -1.00 [-1.00, -1.00] |" in block
    assert "Place of each stem" not in block and "| stem | accuracy (mean ± 95 % CI)" not in block
    stale = tmp_path / "README.md"
    stale.write_text(f"{readme.START}\nold\n{readme.END}\n")
    assert cli.main(["readme", "--check", str(stale)]) == 1
    assert cli.main(["readme", "--write", str(stale)]) == 0 and cli.main(["readme", "--check", str(stale)]) == 0


def test_a_sweep_over_contexts_names_its_missing_points_by_context(tmp_path):
    # asked: 2 contexts x 2 stems x 2 seeds; run: context a in full, and in b only resnet_7x7's seed 0 and the tuning
    # stage's runs (which are not the points the sweep asked for)
    (tmp_path / "multirun.yaml").write_text("hydra:\n  overrides:\n    task: []\n    hydra: []\n  sweeper:\n    params:\n"
                                            "      context: a,b\n      stem: resnet_7x7,patchify_4x4\n      seed: range(2)\n")
    two = {"resnet_7x7": 0.0, "patchify_4x4": -3.0}
    write_context(tmp_path, "a", "xresnet18", 2, two)
    d = write_point(tmp_path / "b", "resnet_7x7", 0, 0.9, trunk="xresnet34")
    tuning = write_point(tmp_path / "b", "patchify_4x4", 1, 0.9, trunk="xresnet34", tune=True)
    for folder, stem, seed in ((d, "resnet_7x7", 0), (tuning, "patchify_4x4", 1)):
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "overrides.yaml").write_text(f"- context=b\n- stem={stem}\n- seed={seed}\n")
    missing = read_records(tmp_path).missing
    assert sorted(missing) == [(f"{tmp_path} (context=b)", "patchify_4x4", "0"), (f"{tmp_path} (context=b)", "patchify_4x4", "1"),
                               (f"{tmp_path} (context=b)", "resnet_7x7", "1")]


def test_a_tuned_study_across_contexts_keeps_each_contexts_tuning_and_names_a_stem_one_context_lacks(tmp_path):
    two = {"resnet_7x7": 0.0, "patchify_4x4": -3.0}
    for name, trunk in (("a", "xresnet18"), ("b", "xresnet34")):
        write_context(tmp_path, name, trunk, 2, {**two, "dw_separable": -6.0} if name == "a" else two)
        for stem in two:
            for lr in (1e-3, 1e-2):
                write_point(tmp_path / name, stem, 0, 0.8 + lr, trunk=trunk, lr=lr, tune=True)
    assert cli.main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert text.count("### LR tuning") == 2 and text.count("\n## xresnet18 · mnist5k · tuned LR per stem\n") == 1
    assert "| a | xresnet18 · mnist5k · tuned LR per stem | 3 | 5 | `resnet_7x7` | `resnet_7x7` |" in text
    # a stem one context lacks is named and left out of the places, τ and the interaction test
    assert ("Places, τ and the interaction test compare the 2 stems every context has; left out: `dw_separable` "
            "(not in b).") in text and "| a | b | 2 | +1.00 |" in text


def test_factors_name_the_one_setting_two_contexts_differ_in():
    base = {"data.name": "imagenette", "data.image_size": 32, "trunk.name": "xresnet18", "trunk.layers": "[2, 2, 2, 2]",
            "train.epochs": 2, "train.bs": 64}
    assert factors_between(base, {**base, "data.image_size": 64}) == ["resolution"]
    assert factors_between(base, {**base, "train.epochs": 6}) == ["budget"]
    # a trunk's settings are one factor, its name changed or not
    assert factors_between(base, {**base, "trunk.name": "xresnet34", "trunk.layers": "[3, 4, 6, 3]"}) == ["trunk"]
    assert factors_between(base, {**base, "trunk.layers": "[1, 1, 1, 1]"}) == ["trunk"]
    # a dataset at its own size: the size follows from the dataset's choice
    assert factors_between(base, {**base, "data.name": "mnist5k", "data.image_size": None}) == ["dataset"]
    assert factors_between(base, {**base, "data.image_size": 64, "train.bs": 32}) == ["resolution", "train.bs"]


@pytest.mark.parametrize("context, factor", [("imagenette64_xr18", "resolution"), ("imagenette32_xr18_6ep", "budget"),
                                             ("imagenette32_xr34", "trunk"), ("mnist28_xr18", "dataset")])
def test_each_context_of_the_universality_preset_differs_from_its_base_in_one_factor(make_cfg, context, factor):
    def config(name):
        cfg = same_run_config(OmegaConf.to_container(make_cfg("+experiment=stem_universality", f"context={name}",
                                                              tiny=False), resolve=True))
        return {k: v for k, v in flatten(cfg).items() if k not in ("stem", "seed", "train.lr", "data.tune_split")
                and not k.startswith("stem.")}
    assert make_cfg("+experiment=stem_universality", tiny=False).compare.base_context == "imagenette32_xr18"
    assert factors_between(config("imagenette32_xr18"), config(context)) == [factor]


def one_factor_study(root, compare=COMPARE):
    """A base at 32 px on xresnet18 for 2 epochs and one context per factor: at 64 px the ranking reverses; 6 epochs
    keep it (1 point higher); xresnet34 swaps the middle two stems (τ 0.67, the same ranking by the rule's 0.6); MNIST keeps it; a context at 64 px on xresnet34
    differs in two factors."""
    imagenette = {"name": "imagenette", "image_size": 32}
    swapped = {**STEMS, "patchify_4x4": -1.0, "resnet_7x7": -2.0}
    write_context(root, "im32", "xresnet18", 2, STEMS, data=imagenette, compare=compare)
    write_context(root, "im64", "xresnet18", 2, {s: -e for s, e in STEMS.items()}, data={**imagenette, "image_size": 64},
                  compare=compare)
    write_context(root, "im32_6ep", "xresnet18", 6, STEMS, shift=1.0, data=imagenette, compare=compare)
    write_context(root, "im32_xr34", "xresnet34", 2, swapped, data=imagenette, compare=compare)
    write_context(root, "mnist28", "xresnet18", 2, STEMS, data={"name": "mnist5k", "image_size": 28}, compare=compare)
    write_context(root, "im64_xr34", "xresnet34", 2, STEMS, data={**imagenette, "image_size": 64}, compare=compare)


def test_the_report_answers_per_factor_from_the_base(tmp_path, capsys):
    one_factor_study(tmp_path)
    assert cli.main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    # im32 is the only context 4 others differ from in one factor (im64 has 2: im32 and im64_xr34)
    assert "from the base context **im32** (the context from which 4 of the other 5 differ in one factor)" in text
    assert ("| resolution | im64 | 32 px → 64 px | 4 | -1.00 [-1.00, -1.00] |" in text
            and "| **the ranking changes** | places: `dw_separable` 4th → 1st, `patchify_4x4` 3rd → 2nd, `resnet_7x7` "
                "2nd → 3rd, `xresnet_3conv` 1st → 4th; verdicts: `dw_separable` worse → better, `patchify_4x4` worse → "
                "better, `xresnet_3conv` better → worse |" in text)
    assert "| budget | im32_6ep | 2 → 6 epochs | 4 | +1.00 [+1.00, +1.00] |" in text
    assert "| the same ranking | none |" in text
    # 6 pairs of 4 stems, one discordant: τ = (5 − 1) / 6, at or above the rule's 0.6 (the same ranking by the
    # rule, the swap still named); the swap turns patchify_4x4 from worse to better
    assert ("| trunk | im32_xr34 | xresnet18 → xresnet34 | 4 | +0.67 [+0.67, +0.67] |" in text
            and "| the same ranking | places: `patchify_4x4` 3rd → 2nd, `resnet_7x7` 2nd → 3rd; verdicts: "
                "`patchify_4x4` worse → better |" in text)
    assert "| dataset | mnist28 | imagenette at 32 px → mnist5k at 28 px | 4 | +1.00 [+1.00, +1.00] |" in text
    assert ("Not one factor from the base, so in no row: im64_xr34 (differs in resolution and trunk: 32 px → 64 px; "
            "xresnet18 → xresnet34).") in text
    printed = capsys.readouterr().out
    assert "resolution (im32 → im64): τ = -1.00 [-1.00, -1.00], the ranking changes" in printed


def test_the_base_context_named_before_the_study_is_the_base(tmp_path):
    named = {**COMPARE, "base_context": "b64"}
    write_context(tmp_path, "a32", "xresnet18", 2, THREE, data={"name": "imagenette", "image_size": 32}, compare=named)
    write_context(tmp_path, "b64", "xresnet18", 2, THREE, data={"name": "imagenette", "image_size": 64}, compare=named)
    assert cli.main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "from the base context **b64** (named by `compare.base_context`)" in text
    assert "| resolution | a32 | 64 px → 32 px | 3 |" in text


def test_a_context_another_study_ran_stands_in_the_comparison_through_with(tmp_path, capsys):
    # the universality sweep ran im32 and im64; the 64-px study (its own name, layers timed, 5 seeds of 3 stems) ran
    # the same context: the study's name and what the profile measures change no training, so it is one context,
    # and the larger study stands for it
    imagenette = {"name": "imagenette", "image_size": 32}
    write_context(tmp_path / "u", "im32", "xresnet18", 2, THREE, data=imagenette)
    write_context(tmp_path / "u", "im64", "xresnet18", 2, {"resnet_7x7": 0.0, "xresnet_3conv": 2.0},
                  data={**imagenette, "image_size": 64})
    write_context(tmp_path / "s", "im64", "xresnet18", 2, {s: -e for s, e in THREE.items()},
                  data={**imagenette, "image_size": 64}, overrides=False)
    for study, folder in (("universality", tmp_path / "u"), ("imagenette64", tmp_path / "s")):
        for path in folder.rglob("result.json"):
            record = json.loads(path.read_text())
            record["config"].update(study=study, profile={"latency": study == "imagenette64"})
            path.write_text(json.dumps(record))
    assert cli.main(["report", str(tmp_path / "u"), "--with", str(tmp_path / "s")]) == 0
    text = (tmp_path / "u" / "report.md").read_text()
    assert f"Generated by `python -m analyze report {tmp_path / 'u'} --with {tmp_path / 's'}` from 40 result records" in text
    assert "| resolution | imagenette 64px xresnet18 2ep | 32 px → 64 px | 3 | -1.00 [-1.00, -1.00] |" in text
    assert "Left out of this comparison (the same context as a study above, from another sweep or LR): " in text


def test_the_answer_follows_the_threshold_on_taus_bootstrap_bounds():
    from types import SimpleNamespace

    from analyze.report.across import answer_sentence

    contexts = [SimpleNamespace(label=n) for n in "abc"]
    def tau(a, b, t, lo, hi):
        return Tau(a, b, ["s1", "s2", "s3"], t, lo, hi, 0)
    flat = Interaction(["s1", "s2", "s3"], 30, 0.3, 4, 20, 0.9)
    steep = Interaction(["s1", "s2", "s3"], 30, 9.0, 4, 20, 0.0005)
    clear = [tau(0, 1, 1.0, 1.0, 1.0), tau(0, 2, 1.0, 2 / 3, 1.0), tau(1, 2, 1.0, 1.0, 1.0)]
    assert answer_sentence(contexts, clear, flat, 0.9, 0.6).startswith(
        "**The ranking is the same in all 3 contexts**: every pair's τ (τ = +1.00) has its 95 % bootstrap lower bound "
        "at or above compare.same_ranking_tau = +0.60")
    assert "and the size of the differences changes with the context" in answer_sentence(contexts, clear, steep, 0.9, 0.6)
    # τ = +1 for every pair, but one pair's interval reaches down to 1/3: the same point ranking is not "the same"
    noisy = [tau(0, 1, 1.0, 1.0, 1.0), tau(0, 2, 1.0, 1 / 3, 1.0), tau(1, 2, 1.0, 1.0, 1.0)]
    assert answer_sentence(contexts, noisy, flat, 0.4, 0.6) == (
        "**These seeds cannot tell whether the ranking depends on the context**: τ = +1.00, not every τ's bootstrap "
        "lower bound is at or above compare.same_ranking_tau = +0.60, and no upper bound is below it; the interaction "
        "test finds no change (stem × context interaction p = 0.9000; 40 % of bootstrap resamples rank the stems alike "
        "in every context).")
    # a stricter threshold fixed before the data turns the clear case into "cannot tell" too
    assert answer_sentence(contexts, clear, flat, 0.9, 0.8).startswith("**These seeds cannot tell")
    assert answer_sentence(contexts, noisy, steep, 0.4, 0.6).startswith("**The stems' differences depend on the context**")
    beyond = [tau(0, 1, 1.0, 1.0, 1.0), tau(0, 2, -1.0, -1.0, 1 / 3), tau(1, 2, 1 / 3, 1 / 3, 1.0)]
    assert answer_sentence(contexts, beyond, flat, 0.0, 0.6) == (
        "**The ranking depends on the context**: the order of the stems changes beyond seed noise (τ from -1.00 to "
        "+1.00; between a and c τ = -1.00 [-1.00, +0.33], an interval below compare.same_ranking_tau = +0.60) "
        "(stem × context interaction p = 0.9000; 0 % of bootstrap resamples rank the stems alike in every context).")


def simulated_contexts(rng, interaction=0.0, seeds=5):
    """An MNIST-like context (97 % ± 0.4 points per run) and an Imagenette-like one (60 % ± 1.5): 4 stems whose
    effects are the same odds ratios in both (logit effects 0, +0.3, −0.2, −0.5), a seed's shift shared by its
    stems, and a run's own noise; `interaction` adds that much to the last stem's logit effect in the second."""
    effects = np.array([0.0, 0.3, -0.2, -0.5])
    rows = []
    for c, (level, sd) in enumerate([(0.97, 0.004), (0.60, 0.015)]):
        for seed in range(seeds):
            shift = rng.normal(0, sd)
            for s, effect in enumerate(effects + (interaction * (np.arange(4) == 3) if c else 0)):
                acc = special.expit(special.logit(level) + effect) + shift + rng.normal(0, sd)
                rows.append({"acc": acc, "stem": f"s{s}", "context": f"c{c}", "block": f"{c}:{seed}"})
    return pd.DataFrame(rows)


def test_the_interaction_test_holds_its_level_across_accuracy_scales_and_noise():
    rng = np.random.default_rng(0)
    # no interaction: rejected at p < 0.05 near 5 % of the time (200 studies: a binomial SD of 1.5 %)
    p = np.array([interaction_test(simulated_contexts(rng)).p for _ in range(200)])
    assert 0.01 <= np.mean(p < 0.05) <= 0.09
    # the last stem's odds fall by e^0.5 in the second context only: found
    assert np.mean([interaction_test(simulated_contexts(rng, interaction=-0.5)).p < 0.05 for _ in range(20)]) >= 0.9
    # each context weighed by its own spread: on the logit scale 0.4 points at 97 % (≈ 0.14) is the larger one,
    # 1.5 points at 60 % ≈ 0.06; 40 runs − 10 seed blocks − 3 stems − 3 interaction terms left for the residual
    one = interaction_test(simulated_contexts(np.random.default_rng(1)))
    assert one.df == 3 and one.df_resid == 40 - 10 - 3 - 3 and one.sd[0] > one.sd[1]
