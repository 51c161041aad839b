"""`python -m analyze space`: the EDF, its DKW band and the per-choice table against hand-computed values, the
design-choice split of real records, and the exported named points running by name."""
from __future__ import annotations

import argparse
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from analyze.report.data import ReportError, Run
from analyze.report.space import choice_table, dkw, edf, export_points, run_space, space_table
from stems.space import point_of

from tests.conftest import ROOT


def test_edf_is_the_share_of_values_at_or_below_each_value():
    x, f = edf([3.0, 1.0, 2.0, 2.0])
    assert x.tolist() == [1, 2, 2, 3] and f.tolist() == [0.25, 0.5, 0.75, 1.0]


def test_dkw_band_by_hand():
    # sqrt(ln(2 / 0.05) / (2 n)): n = 24 -> sqrt(3.688879 / 48) = 0.277221; n = 100 -> 0.135810
    assert dkw(24) == pytest.approx(0.277221, abs=1e-6) and dkw(100) == pytest.approx(0.135810, abs=1e-6)


def test_choice_table_by_hand():
    table = pd.DataFrame({"norm": ["bn", "bn", "ln"], "error": [1.0, 3.0, 5.0]})
    bn, ln = choice_table(table, "norm").itertuples()
    # bn: mean 2, sd sqrt(2), t(0.975, 1 dof) = 12.7062 -> half-width 12.7062 * sqrt(2) / sqrt(2)
    assert (bn.value, bn.n, bn.mean, bn.median, bn.best) == ("bn", 2, 2.0, 2.0, 1.0)
    assert bn.ci == pytest.approx(12.7062, abs=1e-4)
    assert (ln.n, ln.mean) == (1, 5.0) and math.isnan(ln.ci)


def record(stem: dict, acc: float, status: str = "completed") -> dict:
    return {"status": status, "config": {"stem": stem, "seed": 0},
            "metrics": {"valid_acc": acc, "ms_train_step": 10.0, "flops_fwd_per_image": 2e7}}


def test_space_table_reads_errors_and_design_choices_and_skips_other_stems():
    deep = {"name": "space", "out_channels": 64, "match": None, **point_of("xresnet_3conv")}
    s2d = {"name": "space", "out_channels": 64, "match": None, **point_of("space_to_depth")}
    runs = [Run("a", record(deep, 0.9)), Run("b", record(s2d, 0.75)), Run("c", record(s2d, 0.5, "failed")),
            Run("d", record({"name": "resblock", "widths": [32, 64]}, 0.8))]
    table = space_table(runs)
    assert table["run"].tolist() == ["a", "b"] and table["error"].tolist() == pytest.approx([10.0, 25.0])
    assert table["downsampling"].tolist() == ["conv+max", "s2d+s2d"] and table["gflops"].tolist() == [0.02, 0.02]


def test_no_space_runs_is_one_sentence(tmp_path):
    with pytest.raises(ReportError, match="is not a directory"):
        run_space(argparse.Namespace(dir=str(tmp_path / "none"), out=None, export=3))


def test_exported_points_run_by_name(tmp_path):
    params = point_of("resnet_7x7", {"act": "silu"})
    table = pd.DataFrame([{"code": "k7s2x64 max bn silu", "error": 4.0, "params": params},
                          {"code": "other", "error": 9.0, "params": point_of("xresnet_3conv")}])
    text, names = export_points(table, 1, "multirun/stem-space.x")
    assert names == ["multirun_stem_space_x_1"]
    points = tmp_path / "points.yaml"
    points.write_text(text)
    # a fresh interpreter: registering a stem here would change the registry every later test sees
    script = (
        "import sys, torch; from pathlib import Path; import stems; from stems.space_points import load_points\n"
        "from experiments.config import check_command_line\n"
        "(name,) = load_points(Path(sys.argv[1]))\n"
        "torch.manual_seed(0); a = stems.build(name, 3); torch.manual_seed(0); b = stems.build('resnet_7x7', 3, act='silu')\n"
        "x = torch.randn(2, 3, 32, 32); assert torch.equal(a(x), b(x)), 'not the same network'\n"
        # the stem group is built from the torch-free manifest: a new point is refused until it is regenerated
        "from stems import manifest; from experiments.config import ConfigError\n"
        "try: check_command_line([f'stem={name}', 'logger=none']); raise SystemExit('a stale manifest was accepted')\n"
        "except ConfigError as e: assert 'python -m stems generate' in str(e), e\n"
        "manifest.PATH = Path(sys.argv[2]); manifest.PATH.write_text(manifest.render(manifest.generate()))\n"
        "assert check_command_line([f'stem={name}', 'logger=none']) == 1\n"
        "print(name)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(points), str(tmp_path / "manifest.json")], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == names[0], proc.stderr[-2000:]


def test_a_bad_points_file_is_one_sentence(tmp_path):
    from stems.base import StemlabError
    from stems.space_points import load_installed_points, load_points

    bad = tmp_path / "bad.yaml"
    bad.write_text("x: [1, 2]\n")
    with pytest.raises(StemlabError, match=r"bad.yaml is not a stem points file \(TypeError\)"):
        load_points(bad)
    # installed in stems/points/, it is named in one warning and skipped: no command dies at import
    with pytest.warns(UserWarning, match=r"bad.yaml is not a stem points file .* Its stems are not registered\."):
        load_installed_points(tmp_path)


def test_far_outliers_leave_the_view_not_the_data():
    from analyze.report.space import far_out

    # quartiles of (1, 2, 3, 4, 100): 2 and 4, IQR 2: far out above 4 + 3 × 2 = 10
    assert far_out(np.array([1.0, 2.0, 3.0, 4.0, 100.0])).tolist() == [False, False, False, False, True]
    assert not far_out(np.array([1.0, 2.0, 3.0, 4.0, 9.9])).any()


def test_the_by_choice_figure_draws_the_most_made_values_with_legends_off_the_curves():
    from analyze.report.space import CHOICES, MAX_BANDS, plot_edf_by_choice

    rng = np.random.default_rng(1)
    n = 40
    # "depth" takes 6 values, made by 12, 10, 8, 5, 3 and 2 stems; every other choice two values
    depth = np.repeat([1, 2, 3, 4, 5, 6], [12, 10, 8, 5, 3, 2])
    table = pd.DataFrame({c: (depth if c == "depth" else np.arange(n) % 2) for c in CHOICES}).assign(error=rng.uniform(2, 8, n))
    fig = plot_edf_by_choice(table)
    ax = fig.axes[CHOICES.index("depth")]
    assert [t.get_text().split(" ")[0] for t in ax.get_legend().get_texts()] == ["1", "2", "3"] and MAX_BANDS == 3
    assert "3 value(s) with fewer stems: table" in ax.get_title()
    fig.canvas.draw()  # the legend sits under its panel, never on the curves
    assert ax.get_legend().get_window_extent().y1 < ax.get_window_extent().y0
