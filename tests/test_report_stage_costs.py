"""Bytes moved and arithmetic intensity per stage in the study report (analyze/report/stage_costs.py), from generated
records: the table's values against hand arithmetic, the per-stage roofline written and linked."""
from __future__ import annotations

import json

import pandas as pd

from analyze.__main__ import main
from analyze.report.data import read_records
from analyze.report.stage_costs import write_stage_roofline
from analyze.report.studies import split_studies

# per stem: (stage, forward FLOPs, bytes moved, forward ms) of two layers per stage, summed by hand below
LAYERS = [("stem", 40e6, 4e6, 2.0), ("stem", 20e6, 2e6, 1.0), ("stage1", 300e6, 3e6, 3.0), ("stage1", 300e6, 3e6, 3.0),
          ("head", 1e6, 2e6, 0.5)]


def write_run(root, stem, seed, scale, precision="fp32", peaks=(0.1, 20.0), peak_flops_per_s=None):
    d = root / f"{stem}_s{seed}"
    d.mkdir(parents=True)
    config = {"stem": {"name": stem}, "trunk": {"name": "xresnet18"}, "data": {"name": "mnist5k"},
              "train": {"epochs": 1, "bs": 64, "lr": 1e-3}, "seed": seed, "logger": {"name": "none"}}
    metrics = {"valid_acc": 0.9 + 0.01 * seed, "ms_train_step": 20.0, "train_img_s": 100.0, "params": 1e6,
               "flops_fwd_per_image": 1e7, "flops_train_per_image": 3e7, "stem_share_flops": 0.1, "stem_share_time": 0.2}
    record = {"format": 1, "config": config, "status": "completed", "metrics": metrics, "wall_s": 1.0,
              "profile_totals": {"peak_tflops": peaks[0], "peak_gbps": peaks[1]},
              "environment": {"torch": "2.x", "python": "3.11"},
              "hardware": {"device": "cpu", "precision": precision, "load": {"load_avg": 1.5 + seed, "cpus": 2},
                           **({} if peak_flops_per_s is None else {"peak_flops_per_s": peak_flops_per_s})}}
    (d / "result.json").write_text(json.dumps(record))
    pd.DataFrame({"epoch": [0], "accuracy": [0.9]}).to_csv(d / "history.csv", index=False)
    pd.DataFrame([{"group": g, "flops_fwd": f, "flops_bwd": 2 * f, "bytes_moved": b * scale, "ms_fwd": ms, "ms_bwd": 2 * ms}
                  for g, f, b, ms in LAYERS]).to_csv(d / "layers.csv", index=False)


def test_the_report_shows_bytes_and_intensity_per_stage_and_a_stage_roofline(tmp_path):
    root, out = tmp_path / "sweep", tmp_path / "report"
    for seed in range(3):
        write_run(root, "resnet_7x7", seed, scale=1.0)
        write_run(root, "patchify_4x4", seed, scale=[1.0, 2.0, 3.0][seed])  # bytes ×2 on average over seeds
    assert main(["report", str(root), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    cells = " ".join(text.split())  # the table's column padding aside
    # resnet_7x7: stem 6 MB, 60e6 / 6e6 = 10 FLOP/B; stage1 6 MB, 100 FLOP/B; head 2 MB, 0.5 FLOP/B
    assert "| `resnet_7x7` | 6.0 MB, 10 | 6.0 MB, 100 | 2.0 MB, 0.5 |" in cells
    # patchify_4x4: mean bytes 2 × those, so half the intensity
    assert "| `patchify_4x4` | 12.0 MB, 5 | 12.0 MB, 50 | 4.0 MB, 0.25 |" in cells
    png = out / "xresnet18_mnist5k_stage_roofline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"({png.name})" in text


def test_the_stage_roofline_draws_each_precision_under_its_own_ceilings_and_says_the_load(tmp_path, monkeypatch):
    # fp32 runs calibrated at 100 GFLOP/s and 20 GB/s, bf16 runs at 700 and 10: never one averaged ceiling
    root = tmp_path / "sweep"
    for seed in range(3):
        write_run(root, "resnet_7x7", seed, scale=1.0)
        write_run(root, "patchify_4x4", seed, scale=1.0, precision="bf16", peaks=(0.7, 10.0))
    (study,) = split_studies(read_records(root).runs)
    drawn = {}
    monkeypatch.setattr("analyze.report.stage_costs.save", lambda fig, path: drawn.setdefault("fig", fig) and path.name)
    write_stage_roofline(study, ["patchify_4x4", "resnet_7x7"], tmp_path)
    fig = drawn["fig"]
    panels = {ax.get_title().split(":")[0]: ax for ax in fig.axes if ax.get_title()}
    assert set(panels) == {"fp32", "bf16"}
    assert panels["fp32"].get_legend().get_texts()[0].get_text() == "ceilings: 100 GFLOP/s, 20 GB/s"
    assert panels["bf16"].get_legend().get_texts()[0].get_text() == "ceilings: 700 GFLOP/s, 10 GB/s"
    # each stem's name sits beside its own stem-stage point, in the panel of its precision
    assert [t.get_text() for t in panels["bf16"].texts] == ["patchify_4x4"]
    assert panels["bf16"].texts[0].xy == (10.0, 20.0)  # intensity 60e6 FLOPs / 6e6 B; 60 MFLOPs in 3 ms = 20 GFLOP/s
    title = " ".join(fig.get_suptitle().split())  # the title is wrapped to the figure's width
    assert "the calibration recorded in these runs" in title
    assert "timed at load average 1.5–3.5 on 2 CPUs: CPUs fully loaded" in title


def test_a_peak_a_run_beat_is_drawn_as_no_ceiling(tmp_path, monkeypatch):
    # training reached 3e7 FLOPs × 100 img/s = 3 GFLOP/s, above the 1 GFLOP/s peak the fp32 runs recorded: the MFU
    # note withholds it, and the roofline draws it dashed, named as no ceiling; the bf16 runs recorded no such peak
    root = tmp_path / "sweep"
    for seed in range(3):
        write_run(root, "resnet_7x7", seed, scale=1.0, peak_flops_per_s=1e9)
        write_run(root, "patchify_4x4", seed, scale=1.0, precision="bf16", peaks=(0.7, 10.0))
    (study,) = split_studies(read_records(root).runs)
    drawn = {}
    monkeypatch.setattr("analyze.report.stage_costs.save", lambda fig, path: drawn.setdefault("fig", fig) and path.name)
    write_stage_roofline(study, ["patchify_4x4", "resnet_7x7"], tmp_path)
    panels = {ax.get_title().split(":")[0]: ax for ax in drawn["fig"].axes if ax.get_title()}
    assert (panels["fp32"].get_legend().get_texts()[0].get_text()
            == "calibrated peaks (§ not trusted as ceilings, see the MFU note): 100 GFLOP/s, 20 GB/s")
    assert panels["fp32"].lines[0].get_linestyle() == "--"
    assert panels["bf16"].get_legend().get_texts()[0].get_text() == "ceilings: 700 GFLOP/s, 10 GB/s"
