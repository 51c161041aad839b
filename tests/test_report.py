"""`python -m analyze report`: statistics against hand-computed values, studies kept apart, partial sweeps, bad input."""
import json
import math
import os

import pandas as pd
import pytest

from analyze import __main__ as cli
from analyze import report

T_975_DF2 = 4.302652729749464  # Student's t, 97.5th percentile, 2 degrees of freedom (tables)

ACC = {"resnet_7x7": [0.80, 0.82, 0.84], "patchify_4x4": [0.81, 0.80, 0.84], "dw_separable": [0.50, 0.52, 0.51]}


def write_point(root, stem, seed, acc, trunk="xresnet18", status="completed", fmt=1, epochs=2):
    d = root / f"{trunk}_{stem}_s{seed}"
    d.mkdir(parents=True)
    config = {"stem": {"name": stem, "out_channels": 64, "match": None}, "trunk": {"name": trunk},
              "data": {"name": "mnist5k", "valid_pct": 0.2}, "train": {"epochs": epochs, "bs": 64}, "seed": seed,
              "logger": {"name": "none"}}
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
    pd.DataFrame({"group": ["stem", "stage1", "stage4", "head"], "flops_fwd": [4.0, 30.0, 60.0, 6.0],
                  "flops_bwd": [8.0, 60.0, 120.0, 12.0], "ms_fwd": [1.0, 2.0, 1.0, 0.1],
                  "ms_bwd": [2.0, 4.0, 2.0, 0.2]}).to_csv(d / "layers.csv", index=False)
    return d


@pytest.fixture
def study(tmp_path):
    root = tmp_path / "sweep"
    for stem, accs in ACC.items():
        for seed, acc in enumerate(accs):
            write_point(root, stem, seed, acc)
    return root


def test_ci_and_paired_test_match_hand_computation(study):
    table = report.stem_table(report.split_studies(report.read_records(study).runs)[0])
    row = table.set_index("stem").loc["resnet_7x7"]
    # mean 0.82, sample sd 0.02: half-width t(0.975, 2) · 0.02 / √3
    assert row["acc_mean"] == pytest.approx(0.82) and row["acc_ci95"] == pytest.approx(T_975_DF2 * 0.02 / math.sqrt(3))
    assert row["n"] == 3 and row["verdict"] == "**best**" and row["ms_step"] == pytest.approx(21.0)
    # paired differences vs the best: (-0.01, 0.02, 0.00): t = mean / (sd / √3), two-sided p from t(2)
    d = [-0.01, 0.02, 0.0]
    mean, sd = sum(d) / 3, math.sqrt(sum((x - sum(d) / 3) ** 2 for x in d) / 2)
    from scipy import stats

    p = 2 * stats.t.sf(abs(mean / (sd / math.sqrt(3))), 2)
    other = table.set_index("stem").loc["patchify_4x4"]
    assert other["p_vs_best"] == pytest.approx(p) and other["verdict"].startswith("≈ best")
    assert table.set_index("stem").loc["dw_separable", "verdict"].startswith("worse")


def test_report_cli_writes_markdown_figures_and_table(study, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli.main(["report", str(study), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    printed = capsys.readouterr().out
    for stem, accs in ACC.items():
        assert f"`{stem}`" in printed and f"`{stem}`" in text
    assert f"82.00 % ± {100 * T_975_DF2 * 0.02 / math.sqrt(3):.2f}" in text and "| 3 |" in text
    assert "scipy.stats.ttest_rel" in text and "torch 2.x" in text
    for fig in ("pareto", "depth", "curves"):
        png = out / f"xresnet18_mnist5k_{fig}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"({png.name})" in text
    # compute by depth from layers.csv: the stem's FLOPs share 12/300 = 4.0 %, time share 3/12.3 = 24.4 %
    assert "| `resnet_7x7` | 4.0 → 24.4 |" in text


def test_mixed_trunks_are_separate_and_partial_sweeps_named(study, tmp_path):
    write_point(study, "resnet_7x7", 0, 0.9, trunk="xresnet34")
    write_point(study, "resnet_7x7", 5, math.nan, status="failed")
    write_point(study, "patchify_4x4", 7, 0.7, fmt=None)             # an older record without a format number: read
    newer = write_point(study, "dw_separable", 9, 0.1, fmt=99)        # a newer format: named as skipped
    unfinished = study / "xresnet18_resnet_7x7_s8"
    (unfinished / ".hydra").mkdir(parents=True)
    (unfinished / ".hydra" / "overrides.yaml").write_text("- stem=resnet_7x7\n- seed=8\n")
    (study / "multirun.yaml").write_text("hydra:\n  overrides:\n    task: [+experiment=x]\n    hydra: []\n"
                                         "  sweeper:\n    params:\n      stem: resnet_7x7,patchify_4x4\n      seed: range(4)\n")
    inputs = report.read_records(study)
    studies = report.split_studies(inputs.runs)
    assert sorted(s.label for s in studies) == ["xresnet18 · mnist5k", "xresnet34 · mnist5k"]
    main = report.stem_table(next(s for s in studies if s.label.startswith("xresnet18")))
    assert main.set_index("stem").loc["resnet_7x7", ["n", "points"]].tolist() == [3, 4]
    assert main.set_index("stem").loc["patchify_4x4", "n"] == 4
    assert inputs.skipped == [(str(newer / "result.json"), "record format 99 is newer than this reader's 1; update stemlab")]
    assert inputs.unfinished == [str(unfinished)]
    assert sorted((s, seed) for _, s, seed in inputs.missing) == [("patchify_4x4", "3"), ("resnet_7x7", "3")]
    text = report.render(inputs, studies, [report.stem_table(s) for s in studies], [{} for _ in studies], "cmd")
    assert "seed 5: failed" in text and "stem `resnet_7x7`, seed 3" in text and "skipped:" in text


def test_no_records_is_one_sentence(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no result records (result.json) under") and len(err.splitlines()) == 1
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
