"""Bytes moved and arithmetic intensity per stage in the study report (analyze/report/stage_costs.py), from generated
records: the table's values against hand arithmetic, the per-stage roofline written and linked."""
from __future__ import annotations

import json

import pandas as pd

from analyze.__main__ import main

# per stem: (stage, forward FLOPs, bytes moved, forward ms) of two layers per stage, summed by hand below
LAYERS = [("stem", 40e6, 4e6, 2.0), ("stem", 20e6, 2e6, 1.0), ("stage1", 300e6, 3e6, 3.0), ("stage1", 300e6, 3e6, 3.0),
          ("head", 1e6, 2e6, 0.5)]


def write_run(root, stem, seed, scale):
    d = root / f"{stem}_s{seed}"
    d.mkdir(parents=True)
    config = {"stem": {"name": stem}, "trunk": {"name": "xresnet18"}, "data": {"name": "mnist5k"},
              "train": {"epochs": 1, "bs": 64, "lr": 1e-3}, "seed": seed, "logger": {"name": "none"}}
    metrics = {"valid_acc": 0.9 + 0.01 * seed, "ms_train_step": 20.0, "train_img_s": 100.0, "params": 1e6,
               "flops_fwd_per_image": 1e7, "flops_train_per_image": 3e7, "stem_share_flops": 0.1, "stem_share_time": 0.2}
    record = {"format": 1, "config": config, "status": "completed", "metrics": metrics, "wall_s": 1.0,
              "profile_totals": {"peak_tflops": 0.1, "peak_gbps": 20.0},
              "environment": {"torch": "2.x", "python": "3.11"}, "hardware": {"device": "cpu"}}
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
