"""The shapes command's figures, as PNG files (matplotlib's object API on the Agg canvas, written atomically).

1. ``families.png`` — per family (columns): forward and backward time (top) and achieved FLOP/s (bottom)
   across the ladder of shapes at the training batch, one line per precision × memory format, the
   quartiles of the timed steps as bars, the calibrated peak as a dotted line.
2. ``batch.png`` — achieved forward FLOP/s across the ladder, one line per batch size (per family, per precision).
3. ``roofline.png`` — every timed layer at the training batch as a named point (intensity, achieved FLOP/s)
   under the device's ceilings, one panel per precision.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from adjustText import adjust_text
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

from stems.base import atomic_write

from .families import FAMILIES, LADDER

__all__ = ["save_figures"]

_DPI = 130
_MARKERS = {"conv3x3": "o", "conv1x1": "s", "dw3x3": "^", "conv3x3_s2": "D"}


class _PlainLog(LogFormatter):
    """Log-axis labels as plain numbers (0.6, 20, 300), not 6×10⁻¹."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:g}"


def _figure(rows: int, cols: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _save(fig: Figure, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=_DPI, format="png"))


def _rungs(d: pd.DataFrame) -> np.ndarray:
    """Each row's position on the ladder (0 = 224²×16), so every family shares the x axis."""
    order = {s: i for i, (_, s) in enumerate(LADDER)}
    return d["size"].map(order).to_numpy(float)


def _ladder_axis(ax: Axes, xlabel: bool) -> None:
    ax.set_xticks(range(len(LADDER)), [f"{s}²×{c}" for c, s in LADDER], rotation=45, ha="right", fontsize=7)
    if xlabel:
        ax.set_xlabel("input map² × channels (C·S fixed)", fontsize=8)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_PlainLog())
    ax.yaxis.set_minor_formatter(_PlainLog(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.grid(True, which="both", lw=0.3, alpha=0.5)
    ax.tick_params(axis="y", which="both", labelsize=7)


def _band(ax: Axes, x: np.ndarray, mid: pd.Series, lo: pd.Series, hi: pd.Series, **style) -> None:
    yerr = np.vstack([(mid - lo).clip(lower=0).to_numpy(float), (hi - mid).clip(lower=0).to_numpy(float)])
    ax.errorbar(x, mid.to_numpy(float), yerr=yerr, capsize=2, lw=1.2, ms=4, **style)


def plot_families(rows: pd.DataFrame, batch: int) -> Figure:
    d = rows[(rows["batch"] == batch) & (rows["status"] == "timed")]
    families = [f for f in FAMILIES if f in set(d["family"])]
    fig, axes = _figure(2, len(families), 3.3 * len(families) + 1.0, 6.4)
    variants = list(dict.fromkeys(zip(d["precision"], d["memory_format"])))
    colors = {v: f"C{i}" for i, v in enumerate(variants)}
    for j, fam in enumerate(families):
        top, bottom = axes[0, j], axes[1, j]
        for v in variants:
            f = d[(d["family"] == fam) & (d["precision"] == v[0]) & (d["memory_format"] == v[1])].sort_values("size", ascending=False)
            if not len(f):  # not timed in this run (budget)
                continue
            x, name = _rungs(f), " ".join(v)
            _band(top, x, f["ms_fwd"], f["ms_fwd_q1"], f["ms_fwd_q3"], color=colors[v], marker="o", label=f"{name} fwd")
            _band(top, x, f["ms_bwd"], f["ms_bwd_q1"], f["ms_bwd_q3"], color=colors[v], marker="o", ls="--",
                  mfc="white", label=f"{name} bwd")
            _band(bottom, x, f["gflops_fwd_s"], f["gflops_fwd_s_lo"], f["gflops_fwd_s_hi"], color=colors[v], marker="o")
            _band(bottom, x, f["gflops_bwd_s"], f["gflops_bwd_s_lo"], f["gflops_bwd_s_hi"], color=colors[v], marker="o",
                  ls="--", mfc="white")
            bottom.axhline(f["peak_gflops_s"].iloc[0], color=colors[v], ls=":", lw=1)
        top.set_title(FAMILIES[fam].description, fontsize=8)
        _ladder_axis(top, False)
        _ladder_axis(bottom, True)
    axes[0, 0].set_ylabel("ms per layer (median, quartiles)", fontsize=8)
    axes[1, 0].set_ylabel("achieved GFLOP/s (dotted: calibrated peak)", fontsize=8)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"time and achieved FLOP/s across each family's shapes, batch {batch} "
                 "(solid: forward, dashed: backward = input + weight gradients)", fontsize=10)
    return fig


def plot_batches(rows: pd.DataFrame) -> Figure:
    d = rows[rows["status"] == "timed"]
    fmt = d["memory_format"].iloc[0]
    d = d[d["memory_format"] == fmt]
    families = [f for f in FAMILIES if f in set(d["family"])]
    precisions = list(dict.fromkeys(d["precision"]))
    fig, axes = _figure(len(precisions), len(families), 3.3 * len(families) + 1.0, 3.0 * len(precisions) + 0.8)
    for i, p in enumerate(precisions):
        for j, fam in enumerate(families):
            ax = axes[i, j]
            for k, b in enumerate(sorted(set(d["batch"]))):
                f = d[(d["family"] == fam) & (d["precision"] == p) & (d["batch"] == b)].sort_values("size", ascending=False)
                _band(ax, _rungs(f), f["gflops_fwd_s"], f["gflops_fwd_s_lo"], f["gflops_fwd_s_hi"], color=f"C{k}",
                      marker="o", label=f"batch {b}")
            ax.set_title(f"{fam}, {p}", fontsize=8)
            _ladder_axis(ax, i == len(precisions) - 1)
        axes[i, 0].set_ylabel("achieved GFLOP/s, forward", fontsize=8)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"achieved forward FLOP/s across the shapes, by batch size ({fmt})", fontsize=10)
    return fig


def plot_roofline(rows: pd.DataFrame, batch: int) -> Figure:
    d = rows[(rows["batch"] == batch) & (rows["status"] == "timed") & (rows["memory_format"] == rows["memory_format"].iloc[0])]
    precisions = list(dict.fromkeys(d["precision"]))
    fig, axes = _figure(1, len(precisions), 7.0 * len(precisions) + 1.5, 6.0)
    for ax, p in zip(axes[0], precisions):
        f = d[d["precision"] == p]
        peak_f, peak_b = f["peak_gflops_s"].iloc[0], f["peak_gbytes_s"].iloc[0]
        lo = f["intensity_fwd"].min()
        hi = max(f["intensity_fwd"].max(), 4 * peak_f / peak_b)
        xs = np.logspace(math.log10(lo / 1.5), math.log10(hi * 1.5), 200)
        ax.plot(xs, np.minimum(peak_f, xs * peak_b), color="black", lw=1.2,
                label=f"ceilings: {peak_f:.0f} GFLOP/s, {peak_b:.0f} GB/s")
        labels = []
        for k, fam in enumerate(FAMILIES):
            g = f[f["family"] == fam]
            if not len(g):
                continue
            ax.scatter(g["intensity_fwd"], g["gflops_fwd_s"], marker=_MARKERS[fam], color=f"C{k}", s=28, label=fam, zorder=3)
            labels += [ax.text(r["intensity_fwd"], r["gflops_fwd_s"], f"{r['size']}²×{r['channels']}", fontsize=6.5,
                               color=f"C{k}") for _, r in g.iterrows()]
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (forward FLOPs / byte moved)")
        ax.set_ylabel("achieved GFLOP/s (forward)")
        ax.set_title(f"{p}, batch {batch}: each layer named by its input map² × channels", fontsize=9)
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
        ax.legend(fontsize=7, loc="lower right")
        adjust_text(labels, x=f["intensity_fwd"].to_numpy(float), y=f["gflops_fwd_s"].to_numpy(float), ax=ax,
                    expand=(1.2, 1.5), arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.4})
    fig.suptitle("roofline of the layer families (forward)", fontsize=10)
    return fig


def save_figures(rows: pd.DataFrame, batch: int, out: Path) -> list[Path]:
    """The figures that the rows can support: none without timed rows; batch.png only with a batch sweep."""
    timed = rows[rows["status"] == "timed"]
    if not len(timed[timed["batch"] == batch]):
        return []
    made = [_save(plot_families(rows, batch), out / "families.png"), _save(plot_roofline(rows, batch), out / "roofline.png")]
    if timed["batch"].nunique() > 1:
        made.append(_save(plot_batches(rows), out / "batch.png"))
    return made
