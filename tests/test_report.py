"""`python -m analyze report`: statistics against hand-computed values, studies and stages kept apart, partial
sweeps and unreadable files named, figures written."""
import json
import math
import os

import pandas as pd
import pytest

from analyze import __main__ as cli
from analyze.report import figures, statistics
from analyze.report.data import read_records
from analyze.report.render import render
from analyze.report.studies import split_studies

T_975_DF2 = 4.302652729749464   # Student's t, 97.5th percentile, 2 degrees of freedom (tables)
T_975_DF1 = 12.706204736174707  # ... 1 degree of freedom


def p_two_sided_df2(t):
    """Student's t with 2 degrees of freedom has the closed-form CDF 1/2 + t / (2 sqrt(2 + t^2))."""
    return 1 - abs(t) / math.sqrt(2 + t * t)


ACC = {"resnet_7x7": [0.80, 0.82, 0.84], "patchify_4x4": [0.81, 0.80, 0.84], "dw_separable": [0.50, 0.52, 0.51]}


def write_point(root, stem, seed, acc, trunk="xresnet18", status="completed", fmt=1, epochs=2, lr=1e-3, tune=None,
                timed=True):
    d = root / (f"{trunk}_{stem}_s{seed}_lr{lr}" + ("_tune" if tune else ""))
    d.mkdir(parents=True)
    data = {"name": "mnist5k", "valid_pct": 0.2, **({} if tune is None else {"tune_split": tune})}
    config = {"stem": {"name": stem, "out_channels": 64, "match": None}, "trunk": {"name": trunk}, "data": data,
              "train": {"epochs": epochs, "bs": 64, "lr": lr}, "seed": seed, "logger": {"name": "none"}}
    metrics = {"valid_acc": acc, "best_valid_acc": acc, "train_img_s": 100.0 + seed, "params": 11.2e6,
               "flops_fwd_per_image": 3e7, "flops_train_per_image": 9e7, "stem_share_flops": 0.04,
               "stem_share_time": 0.1, "ms_fwd": 5.0, "ms_train_step": 20.0 + seed}
    record = {"config": config, "status": status, "metrics": metrics, "wall_s": 30.0,
              "environment": {"torch": "2.x", "python": "3.11"}, "hardware": {"device": "cpu"}}
    if fmt is not None:
        record["format"] = fmt
    (d / "result.json").write_text(json.dumps(record))
    pd.DataFrame({"epoch": list(range(epochs)), "accuracy": [acc - 0.1, acc][-epochs:],
                  "train_loss": [1.0, 0.5][-epochs:]}).to_csv(d / "history.csv", index=False)
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


def test_ci_effect_size_and_holm_adjusted_p_match_hand_computation(study):
    table = the_table(study)
    best = table.loc["resnet_7x7"]
    # mean 0.82, sample sd 0.02: half-width t(0.975, 2) · 0.02 / √3
    assert best["acc_mean"] == pytest.approx(0.82) and best["acc_ci95"] == pytest.approx(T_975_DF2 * 0.02 / math.sqrt(3))
    assert best["n"] == 3 and best["verdict"] == "**best**" and best["ms_step"] == pytest.approx(21.0)
    # patchify − best per seed: (+0.01, −0.02, 0.00); mean −1/300; deviations (4, −5, 1)/300, so
    # sd = √((16 + 25 + 1) / 2) / 300 = √21 / 300; t = mean / (sd / √3) = −√3 / √21
    other = table.loc["patchify_4x4"]
    sd = math.sqrt(21) / 300
    t_patchify = -math.sqrt(3) / math.sqrt(21)
    assert other["diff"] == pytest.approx(-1 / 300) and other["d_z"] == pytest.approx(-1 / math.sqrt(21))
    assert other["diff_ci95"] == pytest.approx(T_975_DF2 * sd / math.sqrt(3))
    assert other["p"] == pytest.approx(p_two_sided_df2(t_patchify))  # 0.7418
    # dw_separable − best: (−0.30, −0.30, −0.33); mean −0.31, sd = √((1 + 1 + 4) / 2) / 100 = √3 / 100, t = −31
    worse = table.loc["dw_separable"]
    p_dw = p_two_sided_df2(-31.0)  # 0.00104
    assert worse["diff"] == pytest.approx(-0.31) and worse["d_z"] == pytest.approx(-0.31 / (math.sqrt(3) / 100))
    assert worse["p"] == pytest.approx(p_dw)
    # Holm over the 2 comparisons: the smaller p × 2, the larger × 1 (but never below the one before)
    assert worse["p_holm"] == pytest.approx(2 * p_dw) and other["p_holm"] == pytest.approx(p_two_sided_df2(t_patchify))
    assert (worse["verdict"], other["verdict"]) == ("worse", "≈ best")


def test_holm_by_hand():
    # sorted: 0.01 × 3 = 0.03; 0.03 × 2 = 0.06; 0.04 × 1 = 0.04 → 0.06 (adjusted p never decreases)
    assert statistics.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = statistics.holm([0.02, math.nan, 0.5, 0.9])  # untested stems are not counted: m = 3
    assert adjusted[0] == pytest.approx(0.06) and math.isnan(adjusted[1]) and adjusted[2:] == pytest.approx([1.0, 1.0])


def test_no_p_value_the_data_cannot_carry():
    best = {0: 0.80, 1: 0.82, 2: 0.84}
    same = statistics.paired_comparison(best, dict(best))
    assert (same.n, same.mean_diff, same.untested) == (3, 0.0, "identical on every seed") and math.isnan(same.p)
    shifted = statistics.paired_comparison(best, {s: a - 0.02 for s, a in best.items()})
    assert shifted.mean_diff == pytest.approx(-0.02) and shifted.ci95 == 0.0 and math.isnan(shifted.p)
    assert shifted.untested == "the same difference on every seed"
    # two seeds: differences (−0.01, −0.03), mean −0.02, sd √2 · 0.01; a CI from t(0.975, 1) but no p-value
    two = statistics.paired_comparison({0: 0.80, 1: 0.82}, {0: 0.79, 1: 0.79})
    assert two.mean_diff == pytest.approx(-0.02) and two.ci95 == pytest.approx(T_975_DF1 * math.sqrt(2) * 0.01 / math.sqrt(2))
    assert two.untested == "too few seeds (2 paired)" and math.isnan(two.p)
    one = statistics.paired_comparison({0: 0.8, 1: 0.9}, {1: 0.85, 2: 0.7})  # one shared seed
    assert one.n == 1 and one.mean_diff == pytest.approx(-0.05) and math.isnan(one.ci95) and one.untested.startswith("too few")


def test_report_cli_writes_markdown_figures_and_table(study, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli.main(["report", str(study), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    printed = capsys.readouterr().out
    for stem in ACC:
        assert f"`{stem}`" in printed and f"`{stem}`" in text
    assert f"82.00 % ± {100 * T_975_DF2 * 0.02 / math.sqrt(3):.2f}" in text and "| 3 |" in text
    half = 100 * T_975_DF2 * math.sqrt(21) / 300 / math.sqrt(3)
    assert f"| -0.33 [{-100 / 300 - half:.2f}, {-100 / 300 + half:.2f}] | -0.22 | 0.742 | ≈ best |" in text
    assert "Holm-adjusted" in text and "torch 2.x" in text
    for fig in ("pareto", "depth", "curves"):
        png = out / f"xresnet18_mnist5k_{fig}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"({png.name})" in text
    # compute by depth from layers.csv: the stem's FLOPs share 12/300 = 4.0 %, time share 3/12.3 = 24.4 %
    assert "| `resnet_7x7` | 4.0 → 24.4 |" in text
    assert not list(out.glob(".*.tmp"))


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
    assert "### LR tuning" in text and "| `resnet_7x7` | **0.01** | 0.01 | 0.001: 71.00 % (2) · 0.01: 82.00 % (2) |" in text
    assert "| **`patchify_4x4`** | 91.00 % ± " in text and "| 3 | 0.001 |" in text  # the lr column of the final stage
    assert (out / "xresnet18_mnist5k_tuning.png").read_bytes()[:4] == b"\x89PNG"


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
    fig = figures.plot_depth(split_studies(runs[1:])[0], ["resnet_7x7"])
    assert "not timed" in [t.get_text() for t in fig.axes[0].texts]


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


def test_mfu_column_is_the_median_over_seeds_and_a_dash_without_it(tmp_path):
    root = tmp_path / "sweep"
    for seed, mfu in enumerate([0.10, 0.30, 0.20]):
        path = write_point(root, "resnet_7x7", seed, 0.8) / "result.json"
        record = json.loads(path.read_text())
        record["metrics"]["mfu"] = mfu
        path.write_text(json.dumps(record))
    write_point(root, "patchify_4x4", 0, 0.7)  # an older record: no MFU
    table = the_table(root)
    assert table.loc["resnet_7x7", "mfu"] == pytest.approx(0.20) and math.isnan(table.loc["patchify_4x4", "mfu"])
    out = tmp_path / "report"
    assert cli.main(["report", str(root), "--out", str(out)]) == 0
    rows: dict[str, str] = {}
    for line in (out / "report.md").read_text().splitlines():  # the stem table comes first (other tables name stems too)
        rows.setdefault(line.split(" | ")[0], line)
    assert rows["| **`resnet_7x7`**"].endswith("| 20.0 % |") and rows["| `patchify_4x4`"].endswith("| – |")
