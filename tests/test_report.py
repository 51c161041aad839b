"""`python -m analyze report`: statistics against hand-computed values, studies and stages kept apart, partial
sweeps and unreadable files named, figures written."""
import dataclasses
import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from analyze import __main__ as cli
from analyze.report import comparison, figures, statistics
from analyze.report.data import read_records
from analyze.report import render as render_module
from analyze.report.render import plateau_text, render
from analyze.report.studies import split_studies
from experiments.seed_plan import SeedPlan

T_975_DF2 = 4.302652729749464   # Student's t, 97.5th percentile, 2 degrees of freedom (tables)
T_975_DF1 = 12.706204736174707  # ... 1 degree of freedom


def p_two_sided_df2(t):
    """Student's t with 2 degrees of freedom has the closed-form CDF 1/2 + t / (2 sqrt(2 + t^2))."""
    return 1 - abs(t) / math.sqrt(2 + t * t)


ACC = {"resnet_7x7": [0.80, 0.82, 0.84], "patchify_4x4": [0.81, 0.80, 0.84], "dw_separable": [0.50, 0.52, 0.51]}


def write_point(root, stem, seed, acc, trunk="xresnet18", status="completed", fmt=1, epochs=2, lr=1e-3, tune=None,
                timed=True, ms_step=None, compare=None, data=None):
    d = root / (f"{trunk}_{stem}_s{seed}_lr{lr}" + ("_tune" if tune else ""))
    d.mkdir(parents=True)
    data = {"name": "mnist5k", "valid_pct": 0.2, **(data or {}), **({} if tune is None else {"tune_split": tune})}
    config = {"stem": {"name": stem, "out_channels": 64, "match": None}, "trunk": {"name": trunk}, "data": data,
              "train": {"epochs": epochs, "bs": 64, "lr": lr}, "seed": seed, "logger": {"name": "none"},
              **({"compare": compare} if compare else {})}
    metrics = {"valid_acc": acc, "best_valid_acc": acc, "train_img_s": 100.0 + seed, "params": 11.2e6,
               "flops_fwd_per_image": 3e7, "flops_train_per_image": 9e7, "stem_share_flops": 0.04,
               "stem_share_time": 0.1, "ms_fwd": 5.0, "ms_train_step": 7.0,  # the profile's: shares only, never shown
               "train_ms_step": 20.0 + seed if ms_step is None else ms_step}
    record = {"config": config, "status": status, "metrics": metrics, "wall_s": 30.0,
              "environment": {"torch": "2.x", "python": "3.11"}, "hardware": {"device": "cpu"}}
    if fmt is not None:
        record["format"] = fmt
    (d / "result.json").write_text(json.dumps(record))
    ends = range(1, epochs + 1)  # history.csv counts epochs from 1
    pd.DataFrame({"epoch": list(ends), "accuracy": [acc - 0.1 * (epochs - e) for e in ends],
                  "train_loss": [0.5 * (epochs + 1 - e) for e in ends]}).to_csv(d / "history.csv", index=False)
    ms = [1.0, 2.0, 1.0, 0.1] if timed else [math.nan] * 4
    pd.DataFrame({"group": ["stem", "stage1", "stage4", "head"], "flops_fwd": [4.0, 30.0, 60.0, 6.0],
                  "flops_bwd": [8.0, 60.0, 120.0, 12.0], "ms_fwd": ms, "ms_bwd": [2 * m for m in ms]}).to_csv(d / "layers.csv", index=False)
    return d


@pytest.fixture
def study(tmp_path):
    root = tmp_path / "sweep"
    for stem, accs in ACC.items():
        for seed, acc in enumerate(accs):
            write_point(root, stem, seed, acc)
    return root


def the_table(root):
    return statistics.stem_table(split_studies(read_records(root).runs)[0]).set_index("stem")


def t_df2(q):
    """Student's t quantile at 2 degrees of freedom, from the closed-form CDF: u = 2q − 1, t = √(2u² / (1 − u²))."""
    u = 2 * q - 1
    return math.copysign(math.sqrt(2 * u * u / (1 - u * u)), u)


def cdf_df2(t):
    return 0.5 + t / (2 * math.sqrt(2 + t * t))


def test_comparison_with_the_reference_matches_hand_computation(study):
    table = the_table(study)
    ref = table.loc["resnet_7x7"]  # the default reference: resnet_7x7 is in the study
    # mean 0.82, sample sd 0.02: half-width t(0.975, 2) · 0.02 / √3
    assert ref["acc_mean"] == pytest.approx(0.82) and ref["acc_ci95"] == pytest.approx(T_975_DF2 * 0.02 / math.sqrt(3))
    assert ref["n"] == 3 and ref["verdict"] == "**reference**" and ref["ms_step"] == pytest.approx(21.0)
    # m = 2 stems tested: Bonferroni, p × 2, intervals at 1 − 0.05/2 = t(0.9875, 2) = 6.2053
    t_adj = t_df2(1 - 0.05 / 4)
    assert t_adj == pytest.approx(6.2053, abs=1e-4)
    # patchify − reference per seed: (+0.01, −0.02, 0.00); mean −1/300; sd = √21 / 300; t = −√3 / √21
    other = table.loc["patchify_4x4"]
    sd, se = math.sqrt(21) / 300, math.sqrt(21) / 300 / math.sqrt(3)
    p_patchify = p_two_sided_df2(-math.sqrt(3) / math.sqrt(21))  # 0.7418
    assert other["diff"] == pytest.approx(-1 / 300) and other["diff_sd"] == pytest.approx(sd)
    assert other["p"] == pytest.approx(p_patchify) and other["p_adj"] == pytest.approx(1.0)  # min(1, 2 × 0.74)
    assert (other["diff_lo"], other["diff_hi"]) == pytest.approx((-1 / 300 - t_adj * se, -1 / 300 + t_adj * se))
    # TOST at ±1 point: the larger of P(T > (Δ + 0.01)/se) and P(T < (Δ − 0.01)/se)
    p_tost = max(1 - cdf_df2((-1 / 300 + 0.01) / se), cdf_df2((-1 / 300 - 0.01) / se))
    assert other["p_tost"] == pytest.approx(p_tost) and other["p_tost_adj"] == pytest.approx(min(1, 2 * p_tost))
    assert other["verdict"] == "inconclusive"  # [−5.81, 5.14] points: neither side of 0, not inside ±1
    # dw_separable − reference: (−0.30, −0.30, −0.33); mean −0.31, sd = √3 / 100, t = −31
    worse = table.loc["dw_separable"]
    assert worse["diff"] == pytest.approx(-0.31) and worse["p"] == pytest.approx(p_two_sided_df2(-31.0))
    assert worse["p_adj"] == pytest.approx(2 * p_two_sided_df2(-31.0))
    assert worse["diff_hi"] == pytest.approx(-0.31 + t_adj * math.sqrt(3) / 100 / math.sqrt(3)) and worse["verdict"] == "worse"
    # P(best) from the Student-t posterior of each paired difference: patchify is best about when its δ > 0,
    # P(T₂ > √3/√21) = 1 − CDF(√3/√21); dw_separable needs T₂ > 31 (≈ 5e-4); the reference takes the rest
    p_patchify_best = 1 - cdf_df2(math.sqrt(3) / math.sqrt(21))  # 0.3710
    assert table["p_best"].to_dict() == pytest.approx({"resnet_7x7": 1 - p_patchify_best, "patchify_4x4": p_patchify_best,
                                                       "dw_separable": 0.0}, abs=0.01)
    assert table["p_best"].sum() == pytest.approx(1.0)


def test_equivalence_runs_each_one_sided_test_at_alpha_over_m(tmp_path):
    # one stem against the reference (m = 1): differences (−0.5, 0, +0.5) points, mean 0, sd 0.5, se 0.5/√3
    for seed, (acc, d) in enumerate(zip([0.80, 0.82, 0.84], [-0.005, 0.0, 0.005])):
        write_point(tmp_path, "resnet_7x7", seed, acc)
        write_point(tmp_path, "patchify_4x4", seed, acc + d)
    other = the_table(tmp_path).loc["patchify_4x4"]
    se = 0.005 / math.sqrt(3)
    # the two one-sided t-tests by hand: H0 Δ ≤ −1 pt (t = (0 + 0.01)/se) and H0 Δ ≥ +1 pt (t = (0 − 0.01)/se)
    p_lower, p_upper = 1 - cdf_df2((0 + 0.01) / se), cdf_df2((0 - 0.01) / se)
    assert other["p_tost"] == pytest.approx(max(p_lower, p_upper)) == pytest.approx(0.0371, abs=1e-4)
    # 0.025 < p < 0.05: equivalent at α/m = 0.05 per one-sided test, though the two-sided 95 % interval reaches
    # past the margin (TOST at 0.025 per side would not call it)
    assert other["diff_lo"] < -0.01 and other["verdict"] == "equivalent (±1 pt)"


def test_probability_best_matches_the_t_posterior_of_one_paired_difference():
    # two stems: the stem is best exactly when its δ > 0, P = CDF of T₂ at mean / (sd/√n)
    (ref, other), = [comparison.probability_best(np.array([0.004]), np.array([0.006]), np.array([3.0]))]
    assert other == pytest.approx(cdf_df2(0.004 / (0.006 / math.sqrt(3))), abs=0.01) and ref + other == pytest.approx(1.0)


def best_of_simulated_studies(effects, studies=300, seeds=5, sd=0.005, rng_seed=1):
    """P(best) of every stem in simulated studies: stem k's accuracy over seeds is effects[k] + N(0, sd); stem 0
    is the reference. 5,000 posterior draws a study keep it fast (Monte Carlo error about 0.4 % at P = 0.9)."""
    rng = np.random.default_rng(rng_seed)
    acc = np.asarray(effects)[None, :, None] + rng.normal(0, sd, size=(studies, len(effects), seeds))
    d = acc[:, 1:] - acc[:, :1]  # studies x stems − 1 x seeds: paired differences to the reference
    n = np.full(len(effects) - 1, float(seeds))
    return np.array([comparison.probability_best(di.mean(axis=1), di.std(axis=1, ddof=1), n, draws=5_000)
                     for di in d])


def test_probability_best_does_not_crown_noise_and_finds_a_real_winner():
    # 4 equal stems x 5 seeds (sd 0.5 points): the noise winner gets ≥ 90 % in at most 5 % of 300 studies
    equal = best_of_simulated_studies([0.9] * 4)
    assert equal.sum(axis=1) == pytest.approx(np.ones(300))
    assert np.mean(equal.max(axis=1) >= 0.9) <= 0.05
    # one stem truly 2 sd (1 point) better, a non-reference stem or the reference itself: it gets most of it
    assert np.mean(best_of_simulated_studies([0.9, 0.91, 0.9, 0.9], studies=100)[:, 1]) > 0.8
    assert np.mean(best_of_simulated_studies([0.91, 0.9, 0.9, 0.9], studies=100)[:, 0]) > 0.8


def test_bonferroni_interval_and_verdict_never_disagree():
    # better or worse is read off the printed interval (above or below 0); equivalence is TOST's
    assert comparison.verdict(0.001, 0.004, True, 1) == "better, by < 1 pt"
    assert comparison.verdict(0.001, 0.004, False, 1) == "better"
    assert comparison.verdict(-0.05, -0.02, False, 1) == "worse"
    assert comparison.verdict(-0.004, 0.006, True, 1) == "equivalent (±1 pt)"
    assert comparison.verdict(-0.02, 0.006, False, 1) == "inconclusive"


def test_power_matches_the_noncentral_t():
    from scipy import stats as st

    # three stems against the reference over 5 seeds; pooled SD of the differences from hand-made spreads
    table = pd.DataFrame({"pairs": [5, 5, 5], "diff_sd": [0.01, 0.02, 0.02], "p_adj": [0.5, 0.5, 0.5]})
    pw = comparison.power(table)
    sd = math.sqrt((4 * 0.01 ** 2 + 4 * 0.02 ** 2 + 4 * 0.02 ** 2) / 12)  # √0.0003 = 0.01732
    assert (pw.sd, pw.df, pw.seeds, pw.comparisons) == (pytest.approx(sd), 12, 5, 3)
    # at the detectable difference a two-sided paired t-test at 0.05/3 has 80 % power: P(|T'| > t_crit)
    # under the noncentral t with 4 degrees of freedom and noncentrality Δ/sd · √5
    t_crit = st.t.ppf(1 - 0.05 / 6, 4)
    nc = pw.detectable / sd * math.sqrt(5)
    assert 1 - st.nct.cdf(t_crit, 4, nc) + st.nct.cdf(-t_crit, 4, nc) == pytest.approx(0.8, abs=1e-3)
    # 1 point needs n seeds with power ≥ 0.8, and n − 1 would not reach it
    n = pw.seeds_for_1pt

    def power_at(k):
        t_k, nc_k = st.t.ppf(1 - 0.05 / 6, k - 1), 0.01 / sd * math.sqrt(k)
        return 1 - st.nct.cdf(t_k, k - 1, nc_k) + st.nct.cdf(-t_k, k - 1, nc_k)

    assert power_at(n) >= 0.8 > power_at(n - 1)
    # the seeds that detect the margin (here 2 points), by the same rule
    wide = comparison.power(table, margin=0.02)

    def power_2pt(k):
        t_k, nc_k = st.t.ppf(1 - 0.05 / 6, k - 1), 0.02 / sd * math.sqrt(k)
        return 1 - st.nct.cdf(t_k, k - 1, nc_k) + st.nct.cdf(-t_k, k - 1, nc_k)

    assert power_2pt(wide.seeds_for_margin) >= 0.8 > power_2pt(wide.seeds_for_margin - 1)


def test_accuracy_at_the_references_time():
    history = pd.Series([0.5, 0.7, 0.8], index=[1, 2, 3])  # epochs 1, 2, 3 end at 1, 2, 3
    assert comparison.accuracy_at_time(history, 1.5) == pytest.approx(0.6)
    assert comparison.accuracy_at_time(history, 3.0) == pytest.approx(0.8)
    assert math.isnan(comparison.accuracy_at_time(history, 7.0))          # past its last epoch: not extrapolated
    assert math.isnan(comparison.accuracy_at_time(history, 0.5))          # no epoch ends that early


def test_a_slower_stem_is_read_where_the_references_time_runs_out(tmp_path):
    for seed in range(3):
        write_point(tmp_path, "resnet_7x7", seed, 0.8, ms_step=20.0)
        write_point(tmp_path, "patchify_4x4", seed, 0.9, ms_step=40.0)  # twice as slow: 1 of its 2 epochs fits
    table = the_table(tmp_path)
    assert table.loc["patchify_4x4", "epochs_at_ref_time"] == pytest.approx(1.0)
    assert table.loc["patchify_4x4", "acc_at_ref_time"] == pytest.approx(0.8)  # its first epoch: 0.9 − 0.1
    assert table.loc["resnet_7x7", ["epochs_at_ref_time", "acc_at_ref_time"]].tolist() == pytest.approx([2.0, 0.8])


def test_a_faster_stem_past_its_trained_epochs_is_not_reached(tmp_path):
    for seed in range(3):
        write_point(tmp_path, "resnet_7x7", seed, 0.8, ms_step=40.0)
        write_point(tmp_path, "patchify_4x4", seed, 0.9, ms_step=20.0)  # twice as fast: 4 epochs fit, it trained 2
    table = the_table(tmp_path)
    assert table.loc["patchify_4x4", "epochs_at_ref_time"] == pytest.approx(4.0)
    assert math.isnan(table.loc["patchify_4x4", "acc_at_ref_time"])
    assert render_module._at_ref_time(table.loc["patchify_4x4"]) == "not reached (4.00 ep. fit, 2 trained)"


def sweep_with_multirun_yaml(root, seeds, accs):
    """A basic sweep of resnet_7x7 and patchify_4x4 over `seeds` in `root`, with Hydra's multirun.yaml."""
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra:\n  overrides:\n    task: ['stem=resnet_7x7,patchify_4x4', "
                                        f"'seed={','.join(map(str, seeds))}', train.epochs=1]\n    hydra: []\n")
    for seed, (ref, other) in zip(seeds, accs):
        write_point(root, "resnet_7x7", seed, ref)
        write_point(root, "patchify_4x4", seed, other)


def test_one_seed_names_the_command_that_adds_seeds_to_the_same_sweep(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep_with_multirun_yaml(tmp_path / "sweep", [0], [(0.8, 0.82)])
    assert cli.main(["report", "sweep"]) == 0
    line = ("**Next step**: a paired test needs at least 3 seeds (this study has 1); how many decide ±1 point follows "
            "from their spread, in the power line of the next report. Add seeds in the same sweep folder (completed "
            "points are skipped): `python train.py -m stem=resnet_7x7,patchify_4x4 train.epochs=1 seed=0,1,2 "
            "hydra.sweep.dir=sweep`, then `python -m analyze report sweep`.")
    assert line in (tmp_path / "sweep" / "report.md").read_text() and line in capsys.readouterr().out


def test_an_underpowered_study_names_the_seeds_that_decide_its_margin(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep_with_multirun_yaml(tmp_path / "sweep", [0, 1, 2], [(0.80, 0.81), (0.82, 0.80), (0.84, 0.85)])
    (study,) = split_studies(read_records(tmp_path / "sweep").runs)
    table = statistics.stem_table(study)
    pw = comparison.power(table)
    need = pw.seeds_for_margin  # checked against the noncentral t above
    (line, _) = render_module.next_step(study, table, pw, 1.0, "python -m analyze report sweep")
    assert line.startswith(f"**Next step**: {need} paired seeds would detect a difference of ±1 point with 80 % power")
    assert f"seed={','.join(map(str, range(need)))} hydra.sweep.dir=sweep`" in line


def test_the_config_shows_the_true_side_of_a_data_root_folder(tmp_path):
    for seed in range(3):
        for stem in ("resnet_7x7", "patchify_4x4"):
            path = write_point(tmp_path, stem, seed, 0.8) / "result.json"
            record = json.loads(path.read_text())
            record["config"]["data"].update(name="imagenette", size=160, root="/data/imagenette-224")
            record["data"] = {"name": "imagenette", "source_px": 224}  # what the folder's images measure
            path.write_text(json.dumps(record))
    (study,) = split_studies(read_records(tmp_path).runs)
    shown = render_module.shown_config(study)["data"]["size"]
    assert shown == "224 px (the images' shorter side; data.size=160 picks a download only)"


# the controlled records: the reference and 3 stems x 5 seeds, in accuracy points
REF = [91.0, 92.5, 90.0, 93.0, 91.5]
CONTROLLED = {"resnet_7x7": REF,
              "xresnet_3conv": [a + e for a, e in zip(REF, [0.9, -1.2, 0.4, -0.3, 1.1])],        # equal up to seed noise
              "patchify_4x4": [a - 4 + e for a, e in zip(REF, [0.5, -0.6, 0.3, -0.4, 0.2])],     # clearly worse
              "dw_separable": [a + 0.05 + e for a, e in zip(REF, [0.1, -0.1, 0.15, -0.1, -0.05])]}  # tightly equal


def test_controlled_records_get_the_verdicts_they_were_made_with(tmp_path):
    for stem, accs in CONTROLLED.items():
        for seed, acc in enumerate(accs):
            write_point(tmp_path, stem, seed, acc / 100, compare={"reference": "resnet_7x7", "margin": 1.0})
    table = the_table(tmp_path)
    assert table["verdict"].to_dict() == {"resnet_7x7": "**reference**", "xresnet_3conv": "inconclusive",
                                          "patchify_4x4": "worse", "dw_separable": "equivalent (±1 pt)"}
    assert table["p_best"].sum() == pytest.approx(1.0) and table.loc["patchify_4x4", "p_best"] == 0.0
    out = tmp_path / "report"
    assert cli.main(["report", str(tmp_path), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "Reference: **`resnet_7x7`** (compare.reference); equivalence margin ±1 accuracy point." in text
    assert "≈" not in text and "Power: from the paired spread" in text
    for stem in CONTROLLED:
        assert f"{100 * table.loc[stem, 'p_best']:.1f} %" in text


def test_a_named_reference_the_study_lacks_is_one_sentence(tmp_path, capsys):
    for seed in range(3):
        write_point(tmp_path, "patchify_4x4", seed, 0.8, compare={"reference": "resnet_7x7", "margin": 1.0})
        write_point(tmp_path, "dw_separable", seed, 0.7, compare={"reference": "resnet_7x7", "margin": 1.0})
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "reference stem 'resnet_7x7' (compare.reference) is not one of its stems" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "report.md").exists()


def test_a_changed_compare_setting_keeps_one_study_and_the_newest_setting_wins(tmp_path):
    for seed in range(3):  # seeds 0-1 ran under margin 2, seed 2 (finished last) under margin 0.5
        compare = {"reference": "resnet_7x7", "margin": 2.0 if seed < 2 else 0.5}
        for stem, acc in (("resnet_7x7", 0.8), ("patchify_4x4", 0.79 + seed / 100)):
            d = write_point(tmp_path, stem, seed, acc, compare=compare)
            record = json.loads((d / "result.json").read_text())
            (d / "result.json").write_text(json.dumps({**record, "finished": f"2026-12-01T10:0{seed}:00"}))
    (study,) = split_studies(read_records(tmp_path).runs)
    assert statistics.reference_of(study, statistics.stem_table(study)) == ("resnet_7x7", "compare.reference", 0.5)


def test_without_resnet_7x7_the_first_stem_is_the_reference(tmp_path):
    for seed in range(3):
        write_point(tmp_path, "patchify_4x4", seed, 0.8)
        write_point(tmp_path, "dw_separable", seed, 0.7 + seed / 100)
    assert the_table(tmp_path).loc["dw_separable", "verdict"] == "**reference**"


def test_no_p_value_the_data_cannot_carry():
    ref = {0: 0.80, 1: 0.82, 2: 0.84}
    same = comparison.paired(ref, dict(ref), 0.01)
    assert (same.n, same.mean_diff, same.untested) == (3, 0.0, "identical on every seed (untested)") and math.isnan(same.p)
    shifted = comparison.paired(ref, {s: a - 0.02 for s, a in ref.items()}, 0.01)
    assert shifted.mean_diff == pytest.approx(-0.02) and math.isnan(shifted.p)
    assert shifted.untested == "the same difference on every seed (untested)"
    two = comparison.paired({0: 0.80, 1: 0.82}, {0: 0.79, 1: 0.79}, 0.01)
    assert two.mean_diff == pytest.approx(-0.02) and two.untested == "too few seeds (2 paired)" and math.isnan(two.p)
    one = comparison.paired({0: 0.8, 1: 0.9}, {1: 0.85, 2: 0.7}, 0.01)  # one shared seed
    assert one.n == 1 and one.mean_diff == pytest.approx(-0.05) and one.untested.startswith("too few")


def test_report_cli_writes_markdown_figures_and_table(study, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli.main(["report", str(study), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    printed = capsys.readouterr().out
    for stem in ACC:
        assert f"`{stem}`" in printed and f"`{stem}`" in text
    assert f"82.00 % ± {100 * T_975_DF2 * 0.02 / math.sqrt(3):.2f}" in text and "| 3 |" in text
    half = 100 * t_df2(1 - 0.05 / 4) * math.sqrt(21) / 300 / math.sqrt(3)
    p_tost = max(1 - cdf_df2((-1 / 300 + 0.01) / (half / 100 / t_df2(1 - 0.05 / 4))),
                 cdf_df2((-1 / 300 - 0.01) / (half / 100 / t_df2(1 - 0.05 / 4))))
    assert f"| -0.33 [{-100 / 300 - half:.2f}, {-100 / 300 + half:.2f}] | inconclusive |" in text  # the main table
    # the details table: p-values, and the stem's accuracy where the reference's time runs out: patchify's seeds
    # step in 20, 21, 22 ms like the reference's, so 2.00 epochs fit: its last epoch's mean
    assert (f"| `patchify_4x4` | 1.0000 ({p_two_sided_df2(-math.sqrt(3 / 21)):.4f}) | {min(1, 2 * p_tost):.4f} "
            f"({p_tost:.4f}) | 81.67 % (2.00 ep.) |") in text
    assert "Bonferroni" in text and "torch 2.x" in text
    for fig in ("pareto", "depth"):
        png = out / f"xresnet18_mnist5k_{fig}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"({png.name})" in text
    # 2 epochs are too few for a curve: a table of accuracy per epoch instead (epoch 1: 0.1 below the last)
    assert not (out / "xresnet18_mnist5k_curves.png").exists()
    assert "| stem | epoch 1 | epoch 2 |" in text and "| `resnet_7x7` | 72.00 % | 82.00 % |" in text
    # compute by depth from layers.csv: the stem's FLOPs share 12/300 = 4.0 %, time share 3/12.3 = 24.4 %
    assert "| `resnet_7x7` | 4.0 → 24.4 |" in text
    assert not list(out.glob(".*.tmp"))


def test_three_epochs_make_curves_and_the_time_axis_names_batch_and_device(tmp_path):
    for seed in range(3):
        write_point(tmp_path, "resnet_7x7", seed, 0.8, epochs=3)
        write_point(tmp_path, "patchify_4x4", seed, 0.7, epochs=3)
    (study,) = split_studies(read_records(tmp_path).runs)
    table = statistics.stem_table(study)
    assert table["ms_lo"].tolist() == [20.0, 20.0] and table["ms_hi"].tolist() == [22.0, 22.0]  # 20 + seed
    fig = figures.plot_pareto(table, figures.stem_colors(list(table["stem"])), figures.time_setting(study))
    assert fig.axes[0].get_xlabel() == "ms per training step, batch 64 on cpu (measured in training; median)"
    assert sorted(t.get_text() for t in fig.legends[0].texts) == ["Pareto front (one stem beats all)", "patchify_4x4", "resnet_7x7"]
    assert figures.plot_curves(study, list(table["stem"]), figures.stem_colors(list(table["stem"]))) is not None


def test_pareto_time_comes_from_training_both_bars_span_the_seeds_and_load_is_marked(tmp_path):
    for seed, (acc, ms) in enumerate([(0.80, 30.0), (0.84, 34.0), (0.82, 50.0)]):
        write_point(tmp_path, "resnet_7x7", seed, acc, ms_step=ms)
        d = write_point(tmp_path, "patchify_4x4", seed, 0.70, ms_step=10.0)
        record = json.loads((d / "result.json").read_text())
        record["hardware"]["load"] = {"load_avg": 5.0 if seed == 1 else 1.0, "cpus": 2}  # one run timed under load
        (d / "result.json").write_text(json.dumps(record))
    (study,) = split_studies(read_records(tmp_path).runs)
    table = statistics.stem_table(study).set_index("stem", drop=False)
    # the training's step times (not the profile's 7 ms): median 34, and the run at load 5 on 2 cores is counted
    assert table.loc["resnet_7x7", ["ms_step", "ms_lo", "ms_hi", "loaded"]].tolist() == [34.0, 30.0, 50.0, 0]
    assert table.loc["patchify_4x4", ["ms_step", "loaded"]].tolist() == [10.0, 1]
    fig = figures.plot_pareto(table, figures.stem_colors(list(table["stem"])), "batch 64 on cpu")
    ref = next(c for c in fig.axes[0].containers if c.get_label() == "resnet_7x7")
    segments = [seg for cols in ref[2] for seg in cols.get_segments()]
    horizontal = next(seg for seg in segments if seg[0][1] == seg[1][1])
    vertical = next(seg for seg in segments if seg[0][0] == seg[1][0])
    assert sorted(p[0] for p in horizontal) == pytest.approx([30.0, 50.0])  # lowest to highest seed's time
    assert sorted(p[1] for p in vertical) == pytest.approx([80.0, 84.0])    # lowest to highest seed's accuracy
    hollow = next(c for c in fig.axes[0].containers if c.get_label() == "patchify_4x4")[0].get_markerfacecolor()
    assert hollow == "white" and "hollow: timed on a loaded machine" in [t.get_text() for t in fig.legends[0].texts]
    text = render_module.markdown_table(table.reset_index(drop=True))
    assert "| 10.0 ‡ |" in text and "| 34.0 |" in text
    assert render_module.loaded_note(table)[0].startswith("‡ timed on a loaded machine (more runnable processes than cores) "
                                                   "in some runs: `patchify_4x4` (1 of 3)")


def test_mixed_trunks_partial_sweeps_and_unreadable_files_named(study):
    write_point(study, "resnet_7x7", 0, 0.9, trunk="xresnet34")
    write_point(study, "resnet_7x7", 5, math.nan, status="failed")
    write_point(study, "patchify_4x4", 7, 0.7, fmt=None)             # an older record without a format number: read
    newer = write_point(study, "dw_separable", 9, 0.1, fmt=99)        # a newer format: named as skipped
    garbled = write_point(study, "dw_separable", 10, 0.1)
    (garbled / "result.json").write_bytes(b'{"status": "compl\xffeted"}')
    torn = write_point(study, "dw_separable", 11, 0.5)
    (torn / "history.csv").write_bytes(b"")                           # the run is kept, the table named
    unfinished = study / "xresnet18_resnet_7x7_s8"
    (unfinished / ".hydra").mkdir(parents=True)
    (unfinished / ".hydra" / "overrides.yaml").write_text("- stem=resnet_7x7\n- seed=8\n")
    (study / "multirun.yaml").write_text("hydra:\n  overrides:\n    task: [+experiment=x]\n    hydra: []\n"
                                         "  sweeper:\n    params:\n      stem: resnet_7x7,patchify_4x4\n      seed: range(4)\n")
    inputs = read_records(study)
    studies = split_studies(inputs.runs)
    assert sorted(s.label for s in studies) == ["xresnet18 · mnist5k", "xresnet34 · mnist5k"]
    main = statistics.stem_table(next(s for s in studies if s.label.startswith("xresnet18"))).set_index("stem")
    assert main.loc["resnet_7x7", ["n", "points"]].tolist() == [3, 4]
    assert main.loc["patchify_4x4", "n"] == 4 and main.loc["dw_separable", "n"] == 4
    assert inputs.skipped == [(str(garbled / "result.json"), "is not UTF-8 text (byte 17)"),
                              (str(newer / "result.json"), "has record format 99, newer than this reader's 1 (update stemlab)")]
    assert inputs.incomplete == [(str(torn / "history.csv"), "is not a readable CSV table (EmptyDataError)")]
    assert inputs.unfinished == [str(unfinished)]
    assert sorted((s, seed) for _, s, seed in inputs.missing) == [("patchify_4x4", "3"), ("resnet_7x7", "3")]
    tables = [statistics.stem_table(s) for s in studies]
    text = render(inputs, studies, tables, [None for _ in studies], [{} for _ in studies], "cmd")
    assert "seed 5: failed" in text and "stem `resnet_7x7`, seed 3" in text
    assert f"- skipped: {garbled / 'result.json'} is not UTF-8 text (byte 17)" in text
    assert f"- incomplete: {torn / 'history.csv'} is not a readable CSV table (EmptyDataError); its run is reported without it" in text


def test_studies_that_differ_in_one_setting_are_named_by_it(tmp_path):
    for lr in (1e-3, 1e-2):
        for seed in range(2):
            write_point(tmp_path, "resnet_7x7", seed, 0.8, lr=lr)
    labels = sorted(s.label for s in split_studies(read_records(tmp_path).runs))
    assert labels == ["xresnet18 · mnist5k · train.lr=0.001", "xresnet18 · mnist5k · train.lr=0.01"]


def test_tuned_study_reports_each_stems_chosen_lr(tmp_path):
    # tuning stage: 2 seeds × lr ∈ {0.001, 0.01} on the tuning split; the final stage trains at the chosen LR
    tuning_acc = {"resnet_7x7": {1e-3: [0.70, 0.72], 1e-2: [0.80, 0.84]}, "patchify_4x4": {1e-3: [0.90, 0.90], 1e-2: [0.85, 0.87]}}
    for stem, by_lr in tuning_acc.items():
        for lr, accs in by_lr.items():
            for seed, acc in enumerate(accs):
                write_point(tmp_path, stem, seed, acc, lr=lr, tune=True)
    for stem, lr in (("resnet_7x7", 1e-2), ("patchify_4x4", 1e-3)):
        for seed in range(3):
            write_point(tmp_path, stem, seed, 0.9 + seed / 100, lr=lr, tune=False)
    (study,) = split_studies(read_records(tmp_path).runs)
    assert len(study.runs) == 6 and len(study.tuning) == 8 and study.label == "xresnet18 · mnist5k · tuned LR per stem"
    tuning = statistics.tuning_table(study).set_index(["stem", "lr"])
    assert tuning.loc[("resnet_7x7", 1e-2), "acc_mean"] == pytest.approx(0.82)   # (0.80 + 0.84) / 2
    assert tuning.loc[("patchify_4x4", 1e-3), "acc_mean"] == pytest.approx(0.90)
    assert tuning[tuning["chosen"]].index.tolist() == [("patchify_4x4", 1e-3), ("resnet_7x7", 1e-2)]
    out = tmp_path / "report"
    assert cli.main(["report", str(tmp_path), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    # 0.01 leads 0.001 by 11 pt, beyond the plateau's bound t(0.95, 2) · 2.24 pt = 6.5 pt: the plateau is 0.01 alone,
    # at the grid's top (flagged), and every resample of the two tuning seeds keeps it
    assert "### LR tuning" in text and ("| `resnet_7x7` | **0.01** (⚠ grid's top) | 0.01 | 0.01 (reaches the grid's top) | "
                                        "100.0 % | 0.001: 71.00 % (sd 1.41) (2) · 0.01: 82.00 % (sd 2.83) (2) |") in text
    assert "earlier rule" not in text  # every final stage trained at the LR the rule chooses
    # cost: 8 tuning runs of 30 s = 4.0 min, of 4.0 + 3.0 min in all
    assert "Tuning cost: 8 runs, 4.0 min of wall time (57 % of the study's 7.0 min)." in text
    assert "| `patchify_4x4` | 91.00 % ± " in text and "| `patchify_4x4` | 0.001 |" in text  # the lr column (details)
    assert (out / "xresnet18_mnist5k_tuning.png").read_bytes()[:4] == b"\x89PNG"
    # 2 seeds per LR: no 95 % interval, the bar is the seeds' range and says so; seeds that agree (patchify at
    # 0.001: 0.90, 0.90) draw no bar of zero width but one ring marked ×2
    seeds = figures.tuning_seeds(study)
    assert sorted(seeds.loc[(seeds["stem"] == "resnet_7x7") & (seeds["lr"] == 1e-2), "acc"]) == [0.80, 0.84]
    fig = figures.plot_tuning(statistics.tuning_table(study), seeds, figures.stem_colors(list(tuning_acc)))
    title = fig._suptitle.get_text()
    assert "lowest to highest of 2 seeds" in title and "95 %" not in title
    patchify, resnet = fig.axes[0], fig.axes[1]
    assert [t.get_text() for t in patchify.texts] == ["×2"] and not resnet.texts
    assert all(t.get_text() for ax in fig.axes[:2] for t in ax.get_xticklabels())  # every panel names its LRs
    one_seed = figures.tuning_seeds(study).groupby(["stem", "lr"]).head(1)
    one_seed_table = statistics.tuning_table(study).assign(n=1, acc_ci95=math.nan)
    assert "no bars: one seed per LR" in figures.plot_tuning(one_seed_table, one_seed, figures.stem_colors(list(tuning_acc)))._suptitle.get_text()


def test_a_final_stage_trained_at_another_lr_than_the_rule_chooses_is_named(tmp_path):
    # records tuned by an earlier rule: patchify_4x4's final stage trained at 0.01 while its tuning runs choose 0.001
    for stem, by_lr in {"resnet_7x7": {1e-3: [0.70, 0.72], 1e-2: [0.80, 0.84]},
                        "patchify_4x4": {1e-3: [0.90, 0.90], 1e-2: [0.85, 0.87]}}.items():
        for lr, accs in by_lr.items():
            for seed, acc in enumerate(accs):
                write_point(tmp_path, stem, seed, acc, lr=lr, tune=True)
        for seed in range(2):
            write_point(tmp_path, stem, seed, 0.9, lr=1e-2, tune=False)
    out = tmp_path / "report"
    assert cli.main(["report", str(tmp_path), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "| `patchify_4x4` | **0.001** (⚠ grid's bottom) | 0.01 |" in text
    assert "The final stage of `patchify_4x4` trained at another LR than the one this rule chooses" in text


def test_plateau_is_named_as_a_range_of_the_grid_and_where_it_reaches_an_edge():
    grid = [0.001, 0.004, 0.016, 0.064]
    assert plateau_text((0.004, 0.016), grid) == "0.004–0.016"
    assert plateau_text((0.016, 0.064), grid) == "0.016–0.064 (reaches the grid's top)"
    assert plateau_text((0.001, 0.004, 0.016, 0.064), grid) == "0.001–0.064 (reaches the grid's bottom and top)"
    assert plateau_text((0.004, 0.064), grid) == "0.004, 0.064 (reaches the grid's top)"  # 0.016 fell out: no range
    assert plateau_text((0.004,), grid) == "0.004"


def sweep_yaml(folder, target):
    (folder / "multirun.yaml").write_text(f"hydra:\n  sweeper:\n    _target_: {target}\n")


def test_a_fixed_lr_sweep_beside_a_tuned_one_is_never_labelled_tuned(tmp_path, capsys):
    # `analyze report multirun`: a fixed-LR sweep at lr 0.004 beside a tuned sweep whose final stage also chose 0.004
    fixed, tuned = tmp_path / "stem_study_mnist5k", tmp_path / "stem_study_mnist5k_tuned"
    for seed in range(2):
        write_point(fixed, "resnet_7x7", seed, 0.8, lr=0.004)
        write_point(tuned / "final", "resnet_7x7", seed, 0.9, lr=0.004, tune=False)
        for lr in (0.001, 0.004):
            write_point(tuned / "tune", "resnet_7x7", seed, 0.85, lr=lr, tune=True)
    sweep_yaml(fixed, "hydra._internal.core_plugins.basic_sweeper.BasicSweeper")
    sweep_yaml(tuned, "hydra_plugins.stemlab_tuned_sweeper.tuned_sweeper.TunedSweeper")
    studies = {s.label: s for s in split_studies(read_records(tmp_path).runs)}
    rel = lambda d: os.path.relpath(d, os.getcwd())  # noqa: E731
    assert set(studies) == {f"xresnet18 · mnist5k · tuned LR per stem · sweep {rel(tuned)}",
                            f"xresnet18 · mnist5k · train.lr=0.004 · sweep {rel(fixed)}"}
    in_tuned = studies[f"xresnet18 · mnist5k · tuned LR per stem · sweep {rel(tuned)}"]
    assert {r.sweep for r in in_tuned.runs} == {rel(tuned)} and len(in_tuned.runs) == 2 and len(in_tuned.tuning) == 4
    assert cli.main(["report", str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    assert f"{tmp_path} holds 2 sweeps; each is reported as a study of its own." in capsys.readouterr().out


def test_depth_shares_keep_missing_time_missing_and_show_the_spread(tmp_path):
    write_point(tmp_path, "resnet_7x7", 0, 0.8)
    write_point(tmp_path, "resnet_7x7", 1, 0.8, timed=False)
    runs = read_records(tmp_path).runs
    shares = statistics.depth_shares(runs)
    # FLOPs (fwd + bwd) per stage 12, 90, 180, 18 of 300 in both runs; time only in run 0: 3, 6, 3, 0.3 of 12.3 ms
    assert shares["share_flops"].tolist() == pytest.approx([0.04, 0.30, 0.60, 0.06])
    assert shares["share_time"].tolist() == pytest.approx([3 / 12.3, 6 / 12.3, 3 / 12.3, 0.3 / 12.3])
    assert shares["timed"].tolist() == [1, 1, 1, 1]
    untimed = statistics.depth_shares(runs[1:])
    assert untimed["share_time"].isna().all() and untimed["share_flops"].tolist() == pytest.approx([0.04, 0.30, 0.60, 0.06])
    # a study with no time draws FLOPs alone and says so; a stem untimed beside timed ones is marked "not timed"
    fig = figures.plot_depth(split_studies(runs[1:])[0], ["resnet_7x7"])
    assert [p.get_label() for p in fig.axes[0].containers if p.get_label() != "_nolegend_"] == ["FLOPs"]
    assert not fig.axes[0].texts
    assert "not timed in these runs" in fig._suptitle.get_text()
    write_point(tmp_path, "patchify_4x4", 0, 0.8, timed=False)
    fig = figures.plot_depth(split_studies(read_records(tmp_path).runs)[0], ["resnet_7x7", "patchify_4x4"])
    assert "not timed" in [t.get_text() for t in fig.axes[1].texts] and not fig.axes[0].texts


def test_pareto_front_and_colours():
    assert statistics.pareto_front([3.0, 1.0, 2.0], [0.9, 0.7, 0.8]).tolist() == [1, 2, 0]
    assert statistics.pareto_front([1.0, 2.0, 3.0], [0.9, 0.8, 0.7]).tolist() == [0]  # one stem beats all
    names = [f"stem_{i}" for i in range(16)]
    assert len(set(figures.stem_colors(names).values())) == 16


def test_no_records_is_one_sentence(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no readable result records (result.json) under") and len(err.splitlines()) == 1
    assert cli.main(["report", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_wandb_unreachable_is_one_sentence(tmp_path, monkeypatch, capsys):
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no API key
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    assert cli.main(["report", str(tmp_path / "out"), "--wandb", "someone/stemlab"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read W&B project 'someone/stemlab'") and len(err.splitlines()) == 1


def test_identical_seeds_near_chance_a_loaded_machine_and_mixed_allocators_are_warned(tmp_path, capsys):
    for seed in range(3):
        write_point(tmp_path, "resnet_7x7", seed, 0.8)                 # the same accuracy at every seed
        d = write_point(tmp_path, "patchify_4x4", seed, 0.11 + seed / 100)  # mean 12 %: chance is 10 % for 10 classes
        record = json.loads((d / "result.json").read_text())
        record["model"] = {"num_classes": 10}
        record["hardware"]["load"] = {"load_avg": 9.0 - seed, "cpus": 2} if seed < 2 else {"load_avg": 1.0, "cpus": 2}
        record["hardware"]["allocator"] = "glibc defaults" if seed == 2 else "kept"  # (the other stem's records,
        # written before allocators were recorded, have none)
        (d / "result.json").write_text(json.dumps(record))
    out = tmp_path / "report"
    assert cli.main(["report", str(tmp_path), "--out", str(out)]) == 0
    printed, text = capsys.readouterr().out, (out / "report.md").read_text()
    expected = [
        "`patchify_4x4`: mean accuracy 12.00 % is near chance (10.00 % for 10 classes; warned at ≤ 1.5x chance)",
        "`resnet_7x7`: the same accuracy (80.00 %) at every one of its 3 seeds",
        "2 of 6 runs had their timings taken on a loaded machine (load average 9.0 on 2 cores)",
        "The runs' allocators treated freed memory differently (1 with glibc defaults; 2 with kept; 3 not recorded): "
        "big activations mapped afresh every step slow a CPU step, so compare ms per step and img/s only between runs "
        "of one allocator.",
    ]
    assert "### Warnings" in text
    for line in expected:
        assert f"- {line}" in text and f"warning: {line}" in printed


def test_records_that_counted_epochs_from_0_read_as_counted_from_1():
    from analyze.report.data import from_one

    old = pd.DataFrame({"epoch": [0, 1, 2], "accuracy": [0.5, 0.6, 0.7]})
    assert from_one(old)["epoch"].tolist() == [1, 2, 3]
    new = pd.DataFrame({"epoch": [1, 2], "accuracy": [0.5, 0.6]})
    assert from_one(new)["epoch"].tolist() == [1, 2]
    assert from_one(None) is None  # a run that wrote no history.csv


def test_an_out_that_is_a_file_is_one_sentence(study, tmp_path, capsys):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    assert cli.main(["report", str(study), "--out", str(taken)]) == 2
    assert capsys.readouterr().err == f"error: --out {taken} is a file; give a folder (it is created when missing).\n"
    assert taken.read_text() == "mine"


def test_the_report_counts_the_comparisons_it_decided_and_says_why_the_rest_stayed_open_at_the_cap():
    table = pd.DataFrame({"stem": ["resnet_7x7", "a", "b", "c", "d"],
                          "verdict": ["**reference**", "worse", "equivalent (±1 pt)", "inconclusive", "too few seeds"],
                          "diff": [math.nan, -0.03, 0.002, 0.0081, math.nan]})
    pw = comparison.Power(sd=0.01, df=36, seeds=10, comparisons=4, detectable=0.0131, seeds_for_1pt=16, margin=0.01, seeds_for_margin=16)
    capped = SeedPlan(pilot=3, sd=1.0, df=8, comparisons=4, margin=1.0, needed=16, cap=10, seeds=10, power=0.55)
    line = render_module.decided_line(table, pw, capped, 1.0)[0]
    assert line == ("Decided: **2 of 4** comparisons with the reference at ±1 point (worse 1, equivalent 1); not "
                    "decided: `c` (inconclusive, Δ +0.81), `d` (untested). The study trained the most seeds its plan "
                    "allows (10, `compare.max_seeds`), where the smallest difference detected with 80 % power is 1.31 "
                    "points: a smaller difference can stay undecided at this cap.")
    # a plan below its cap gives no such reason (the next step adds seeds); nothing tested, no line
    within = dataclasses.replace(capped, needed=8, seeds=8)
    assert render_module.decided_line(table, pw, within, 1.0)[0].endswith("`d` (untested).")
    assert render_module.decided_line(table.iloc[:1], pw, None, 1.0) == []
    # every comparison decided: no next step, though 1 point would need more seeds than the study has
    decided = table.iloc[:3].assign(n=10)
    assert render_module.next_step(None, decided, pw, 1.0, "python -m analyze report X") == []
