"""A committed figure regenerates byte for byte: the same records give the same PNG, labels and all."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analyze.report.figures import plot_tuning, save
from analyze.report.space import plot_cost
from profiler.figure_files import new_figure, place_labels, save_figure


def crowded_labels_figure():
    """Twelve labels on nearly the same spot: adjustText must move them, the same way every time."""
    fig, axes = new_figure(1, 1, (4, 3))
    ax = axes[0, 0]
    x, y = np.linspace(1, 1.1, 12), np.linspace(1, 1.05, 12)
    ax.scatter(x, y)
    place_labels([ax.text(a, b, f"layer {i}") for i, (a, b) in enumerate(zip(x, y))], ax, x=x, y=y)
    return fig


def generated_space_table(n: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"code": [f"k{3 + i % 3}s2x{16 * (1 + i % 4)} stem{i}" for i in range(n)],
                         "error": rng.uniform(2, 8, n), "ms_step": rng.uniform(50, 110, n), "gflops": rng.uniform(0.06, 0.2, n)})


def test_a_figure_with_moved_labels_renders_to_the_same_bytes_twice(tmp_path):
    first, second = (save_figure(crowded_labels_figure(), tmp_path / f"{k}.png", dpi=80) for k in ("a", "b"))
    assert first.read_bytes() == second.read_bytes()
    assert b"Software" not in first.read_bytes()  # no matplotlib version in the file


def test_the_space_cost_figure_regenerates_byte_for_byte_and_shows_every_stem(tmp_path):
    table = generated_space_table()
    table.loc[0, ["gflops", "error"]] = [5.0, 1.0]  # the best stem costs far more than the rest: still in view
    names = [save(plot_cost(table), tmp_path / f"{k}.png") for k in ("a", "b")]
    assert (tmp_path / names[0]).read_bytes() == (tmp_path / names[1]).read_bytes()
    flops_axis = plot_cost(table).axes[1]
    lo, hi = flops_axis.get_xlim()
    assert lo <= table["gflops"].min() and hi >= 5.0 and flops_axis.get_xscale() == "log"


def test_an_svg_carries_no_date_and_the_same_ids(tmp_path):
    first, second = (save_figure(crowded_labels_figure(), tmp_path / f"{k}.svg", dpi=80) for k in ("a", "b"))
    assert first.read_bytes() == second.read_bytes() and b"<dc:date>" not in first.read_bytes()


def test_tuning_bars_are_a_95_ci_only_from_3_seeds_and_a_tie_draws_no_bar():
    # resnet_7x7 at lr 0.01: seeds 80, 82, 84 % -> mean 82, sd 2, t(0.975, 2) = 4.3027 -> half-width 4.3027 * 2 / √3
    # at lr 0.001: three seeds of 70 % -> a tie: no bar of zero width, one ring marked ×3
    seeds = pd.DataFrame({"stem": "resnet_7x7", "lr": [0.01] * 3 + [0.001] * 3, "acc": [0.80, 0.82, 0.84, 0.7, 0.7, 0.7]})
    tuning = pd.DataFrame({"stem": "resnet_7x7", "lr": [0.001, 0.01], "acc_mean": [0.70, 0.82],
                           "acc_ci95": [0.0, 4.3027 * 0.02 / 3 ** 0.5], "n": [3, 3], "chosen": [False, True]})
    fig = plot_tuning(tuning, seeds, {"resnet_7x7": "C0"})
    ax = fig.axes[0]
    (bar,) = [c for c in ax.containers if c.lines[2]]  # one errorbar: the tie at 0.001 has none
    (segment,) = bar.lines[2][0].get_segments()
    assert segment[:, 1] == pytest.approx([82 - 4.968, 82 + 4.968], abs=1e-3)
    assert [t.get_text() for t in ax.texts] == ["×3"]
    assert "bar = 95 % t-CI (3+ seeds" in fig.get_suptitle() and "lowest to highest" not in fig.get_suptitle()
