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
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from profiler.figure_files import new_figure, place_labels, save_figure

from .families import FAMILIES, LADDER

__all__ = ["save_figures"]

_DPI = 130
_MARKERS = {"conv3x3": "o", "conv1x1": "s", "dw3x3": "^", "conv3x3_s2": "D"}


def _save(fig: Figure, path: Path) -> Path:
    return save_figure(fig, path, _DPI)


def _rungs(d: pd.DataFrame) -> np.ndarray:
    """Each row's position on the ladder (0 = 224²×16), so every family shares the x axis."""
    order = {s: i for i, (_, s) in enumerate(LADDER)}
    return d["size"].map(order).to_numpy(float)


def _ladder_axis(ax: Axes, rungs: np.ndarray, xlabel: bool) -> None:
    """Ticks at the rungs this panel's family has (a stride-2 family stops before 7²×512), a labelled log y axis."""
    present = sorted({int(r) for r in rungs if np.isfinite(r)})
    ax.set_xticks(present, [f"{LADDER[i][1]}²×{LADDER[i][0]}" for i in present], rotation=45, ha="right", fontsize=7)
    ax.set_xlim(min(present) - 0.3, max(present) + 0.3)
    if xlabel:
        ax.set_xlabel("input map² × channels (C·S fixed)", fontsize=8)
    ax.set_yscale("log")
    log_ticks(ax.yaxis, *ax.get_ylim())
    ax.grid(True, which="both", lw=0.3, alpha=0.5)
    ax.tick_params(axis="y", which="both", labelsize=7)


def log_ticks(axis, lo: float, hi: float) -> None:
    """Plain-number labels on a log axis, dense enough for 3+ labels whatever its span: evenly spaced round numbers
    within a decade, 1-2-3-5 steps up to two decades, 1-2-5 up to three, 1-3 beyond (never 6×10⁻¹ notation)."""
    decades = math.log10(max(hi, lo * 1.0001) / lo) if lo > 0 else 3
    if decades < 1:
        axis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    else:
        subs = (1.0, 2.0, 3.0, 5.0) if decades < 2 else (1.0, 2.0, 5.0) if decades < 3 else (1.0, 3.0)
        axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _band(ax: Axes, x: np.ndarray, mid: pd.Series, lo: pd.Series, hi: pd.Series, **style) -> None:
    yerr = np.vstack([(mid - lo).clip(lower=0).to_numpy(float), (hi - mid).clip(lower=0).to_numpy(float)])
    ax.errorbar(x, mid.to_numpy(float), yerr=yerr, capsize=2, lw=1.2, ms=4, **style)


def plot_families(rows: pd.DataFrame, batch: int) -> Figure:
    d = rows[(rows["batch"] == batch) & (rows["status"] == "timed")]
    families = [f for f in FAMILIES if f in set(d["family"])]
    fig, axes = new_figure(2, len(families), (3.3 * len(families) + 1.0, 6.4))
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
        rungs = _rungs(d[d["family"] == fam])
        _ladder_axis(top, rungs, False)
        _ladder_axis(bottom, rungs, True)
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
    fig, axes = new_figure(len(precisions), len(families), (3.3 * len(families) + 1.0, 3.0 * len(precisions) + 0.8))
    for i, p in enumerate(precisions):
        for j, fam in enumerate(families):
            ax = axes[i, j]
            for k, b in enumerate(sorted(set(d["batch"]))):
                f = d[(d["family"] == fam) & (d["precision"] == p) & (d["batch"] == b)].sort_values("size", ascending=False)
                _band(ax, _rungs(f), f["gflops_fwd_s"], f["gflops_fwd_s_lo"], f["gflops_fwd_s_hi"], color=f"C{k}",
                      marker="o", label=f"batch {b}")
            ax.set_title(f"{fam}, {p}", fontsize=8)
            _ladder_axis(ax, _rungs(d[d["family"] == fam]), i == len(precisions) - 1)
        axes[i, 0].set_ylabel("achieved GFLOP/s, forward", fontsize=8)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"achieved forward FLOP/s across the shapes, by batch size ({fmt})", fontsize=10)
    return fig


def plot_roofline(rows: pd.DataFrame, batch: int) -> Figure:
    d = rows[(rows["batch"] == batch) & (rows["status"] == "timed") & (rows["memory_format"] == rows["memory_format"].iloc[0])]
    precisions = list(dict.fromkeys(d["precision"]))
    fig, axes = new_figure(1, len(precisions), (7.0 * len(precisions) + 1.5, 6.0))
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
        log_ticks(ax.xaxis, *ax.get_xlim())
        log_ticks(ax.yaxis, *ax.get_ylim())
        place_labels(labels, ax, x=f["intensity_fwd"].to_numpy(float), y=f["gflops_fwd_s"].to_numpy(float),
                     expand=(1.3, 1.9), force_text=(0.3, 0.6))
    fig.suptitle("roofline of the layer families (forward)", fontsize=10)
    return fig


def load_line(meta: dict) -> str:
    """How busy the machine was while the rows were timed (shapes.json's `measured`), for every figure's title."""
    spans = [f"{m['load_before']:.1f} → {m['load_after']:.1f}" for m in meta.get("measured") or []
             if isinstance(m.get("load_before"), (int, float)) and isinstance(m.get("load_after"), (int, float))]
    threads = (meta.get("settings") or {}).get("threads")
    return (f"timed at load average (1 min) {'; '.join(spans)}" if spans else "load while timed not recorded") + \
        (f", {threads} thread(s)" if threads else "") + ": absolute numbers move with load, ratios within a panel hold"


def save_figures(rows: pd.DataFrame, batch: int, out: Path, meta: dict) -> list[Path]:
    """The figures that the rows can support: none without timed rows; batch.png only with a batch sweep. Each
    title ends with the load the rows were timed at (`meta`: shapes.json's content)."""
    timed = rows[rows["status"] == "timed"]
    if not len(timed[timed["batch"] == batch]):
        return []
    figures = {"families.png": plot_families(rows, batch), "roofline.png": plot_roofline(rows, batch)}
    if timed["batch"].nunique() > 1:
        figures["batch.png"] = plot_batches(rows)
    for fig in figures.values():
        fig.suptitle(f"{fig.get_suptitle()}\n{load_line(meta)}", fontsize=10)
    return [_save(fig, out / name) for name, fig in figures.items()]
