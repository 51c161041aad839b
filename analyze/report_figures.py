"""The stem report's figures (PNG, written beside report.md): Pareto fronts, compute by depth, training curves."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from analyze.report import Study


def _save(fig, path: Path) -> str:
    tmp = path.with_name(f".{os.getpid()}.{path.name}")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png", metadata={"Software": None})
    tmp.replace(path)
    return path.name


def write_figures(study: "Study", table: pd.DataFrame, out: Path) -> dict[str, str]:
    """{'pareto'|'depth'|'curves': file name} for the figures this study's records allow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, str] = {}
    done = table[table["n"] > 0]
    if len(done):
        fig = plot_pareto(plt, done)
        made["pareto"] = _save(fig, out / f"{study.slug}_pareto.png")
        plt.close(fig)
    fig = plot_depth(plt, study, list(done["stem"]))
    if fig is not None:
        made["depth"] = _save(fig, out / f"{study.slug}_depth.png")
        plt.close(fig)
    fig = plot_curves(plt, study, list(done["stem"]))
    if fig is not None:
        made["curves"] = _save(fig, out / f"{study.slug}_curves.png")
        plt.close(fig)
    return made


def plot_pareto(plt, table: pd.DataFrame):
    from analyze.report import pareto_front

    source = "profiled" if set(table["ms_step_source"]) == {"profiled"} else "batch / training img/s"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    acc, ci = 100 * table["acc_mean"].to_numpy(), 100 * table["acc_ci95"].fillna(0).to_numpy()
    for ax, col, xlabel in ((axes[0], "ms_step", f"ms per training step ({source})"),
                            (axes[1], "gflops_fwd", "forward GFLOPs per image")):
        x = table[col].to_numpy(dtype=float)
        ax.errorbar(x, acc, yerr=ci, fmt="o", capsize=3, color="tab:blue", ecolor="0.6")
        for xi, yi, name in zip(x, acc, table["stem"]):
            if math.isfinite(xi):
                ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
        front = pareto_front(x, acc)
        if len(front):
            ax.plot(x[front], acc[front], "-", color="tab:red", lw=1.2, label="Pareto front")
            ax.legend(loc="best", fontsize=8)
        finite = x[np.isfinite(x) & (x > 0)]
        if len(finite) and finite.max() > 5 * finite.min():
            from matplotlib.ticker import NullFormatter, ScalarFormatter

            ax.set_xscale("log")  # one slow stem would squeeze the others into a corner
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(x=0.2, y=0.1)  # room for the stem names
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy (%)")
    fig.suptitle("accuracy vs cost (mean ± 95 % CI over seeds)", fontsize=10)
    return fig


def plot_depth(plt, study: "Study", order: list[str]):
    from analyze.report import STAGES, depth_shares, stem_labels

    labels = stem_labels(study.runs)
    shares = {s: depth_shares([r for r in study.runs if labels[id(r)] == s and r.status == "completed"]) for s in order}
    shares = {s: d for s, d in shares.items() if len(d)}
    if not shares:
        return None
    cols = min(4, len(shares))
    rows = math.ceil(len(shares) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharey=True)
    for ax, (stem, d) in zip(axes.flat, shares.items()):
        d = d.reindex([s for s in STAGES if s in d.index])
        x = np.arange(len(d))
        ax.bar(x - 0.2, 100 * d["share_flops"], 0.4, label="FLOPs", color="tab:blue")
        ax.bar(x + 0.2, 100 * d["share_time"].fillna(0), 0.4, label="time", color="tab:orange")
        ax.set_xticks(x, d.index, rotation=45, fontsize=7)
        ax.set_title(stem, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes.flat[len(shares):]:
        ax.axis("off")
    axes[0][0].set_ylabel("% of a training step")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("compute by depth: share of FLOPs vs share of measured time", fontsize=10)
    fig.tight_layout()
    return fig


def plot_curves(plt, study: "Study", order: list[str]):
    from analyze.report import stem_labels

    labels = stem_labels(study.runs)
    panels = [("accuracy", "validation accuracy (%)", 100), ("train_loss", "training loss", 1)]
    curves = {}
    for stem in order:
        hs = [r.history for r in study.runs if labels[id(r)] == stem and r.status == "completed" and r.history is not None]
        if hs:
            curves[stem] = pd.concat(hs)
    if not curves or max(h["epoch"].nunique() for h in curves.values()) < 2:
        return None  # one epoch is a point, not a curve: the table has it
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.get_cmap("tab20")
    for i, (stem, h) in enumerate(curves.items()):
        for ax, (col, _, scale) in zip(axes, panels):
            if col not in h:
                continue
            g = h.groupby("epoch")[col]
            epochs = g.mean().index.to_numpy() + 1
            ax.plot(epochs, scale * g.mean(), "-o", ms=3, color=colors(i % 20), label=stem)
            ax.fill_between(epochs, scale * g.min(), scale * g.max(), color=colors(i % 20), alpha=0.2)
    for ax, (_, ylabel, _) in zip(axes, panels):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle("training curves (mean over seeds; band: lowest to highest seed)", fontsize=10)
    fig.tight_layout()
    return fig
