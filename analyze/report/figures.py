"""The report's figures (PNG beside report.md): accuracy vs cost with the Pareto front, compute by depth,
training curves and the LR tuning curve.

matplotlib's object-oriented API (Figure + the Agg canvas) draws without pyplot, so no global backend or
figure registry is touched. Stems are named in legends, each in its own colour (names written beside points
stack when stems cost about the same)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from stems.base import atomic_write

from .statistics import STAGES, completed, depth_shares, pareto_front
from .studies import Study, stem_labels

FLOPS_COLOR, TIME_COLOR = "tab:blue", "tab:orange"
MIN_CURVE_EPOCHS = 3  # fewer epochs make a table (render.epoch_table), not a figure


def stem_colors(names: list[str]) -> dict[str, tuple]:
    """One distinct colour per stem, by its index in sorted order (the same stem, the same colour in every figure)."""
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(sorted(names))}


def new_figure(rows: int, cols: int, figsize: tuple[float, float], **subplots) -> tuple[Figure, np.ndarray]:
    """A figure and its axes as a 2-d array."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)  # a canvas of its own: text can be measured (adjustText in space.py) without pyplot
    return fig, fig.subplots(rows, cols, squeeze=False, **subplots)


def save(fig: Figure, path: Path) -> str:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png", metadata={"Software": None}))
    return path.name


def write_figures(study: Study, table: pd.DataFrame, tuning: pd.DataFrame | None, out: Path) -> dict[str, str]:
    """{'pareto'|'depth'|'curves'|'tuning': file name} for the figures this study's records allow."""
    done = table[table["n"] > 0]
    colors = stem_colors(sorted(set(done["stem"]) | (set(tuning["stem"]) if tuning is not None else set())))
    figures = {"pareto": plot_pareto(done, colors, time_setting(study)) if len(done) else None,
               "depth": plot_depth(study, list(done["stem"])),
               "curves": plot_curves(study, list(done["stem"]), colors),
               "tuning": plot_tuning(tuning, colors) if tuning is not None and tuning["n"].sum() else None}
    return {key: save(fig, out / f"{study.slug}_{key}.png") for key, fig in figures.items() if fig is not None}


def time_setting(study: Study) -> str:
    """'batch 64 on cpu': what the step times were measured at (devices listed when runs differ)."""
    devices = sorted({str((r.record.get("hardware") or {}).get("device")) for r in completed(study.runs)})
    return f"batch {(study.config.get('train') or {}).get('bs', '?')} on {' + '.join(devices) or '?'}"


def log_axis_if_spread(ax, values: np.ndarray) -> None:
    """A log x-axis when one stem costs over 5x another (it would squeeze the rest into a corner), with plain
    numbers at 1-2-5 steps only, so the tick labels never collide."""
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) and values.max() > 5 * values.min():
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())


def plot_pareto(table: pd.DataFrame, colors: dict[str, tuple], setting: str) -> Figure:
    """Accuracy against the training's step time and against FLOPs; `setting` names the batch size and device the
    time was measured at. Both bars are of one kind: the lowest to the highest seed. A stem with runs timed on a
    loaded machine is drawn hollow. Stems are told apart by colour and named in one legend (names written next to
    points stack when stems cost about the same)."""
    fig, axes = new_figure(1, 2, figsize=(11, 4.6), sharey=True)
    acc = 100 * table["acc_mean"].to_numpy(float)
    yerr = np.clip(np.nan_to_num([acc - 100 * table["acc_lo"].to_numpy(float), 100 * table["acc_hi"].to_numpy(float) - acc]), 0, None)
    names, loaded = list(table["stem"]), table["loaded"].to_numpy(int) > 0
    for ax, col, xlabel in ((axes[0, 0], "ms_step", f"ms per training step, {setting} (measured in training; median)"),
                            (axes[0, 1], "gflops_fwd", "forward GFLOPs per image")):
        x = table[col].to_numpy(float)
        xerr = None
        if col == "ms_step":
            lo, hi = table["ms_lo"].to_numpy(float), table["ms_hi"].to_numpy(float)
            xerr = np.clip(np.nan_to_num([x - lo, hi - x]), 0, None)
        for i, (xi, yi, name) in enumerate(zip(x, acc, names)):
            hollow = loaded[i] and col == "ms_step"
            ax.errorbar([xi], [yi], yerr=yerr[:, i:i + 1], xerr=xerr[:, i:i + 1] if xerr is not None else None,
                        fmt="o", ms=6, capsize=4, elinewidth=1.2, color=colors[name], mfc="white" if hollow else colors[name],
                        label=name)
        front = pareto_front(x, acc)
        if len(front) > 1:
            ax.plot(x[front], acc[front], "-", color="0.3", lw=1, zorder=0, label="Pareto front")
        elif len(front) == 1:  # one stem is both cheapest and most accurate: the front is that point
            ax.plot(x[front], acc[front], "o", ms=14, mfc="none", mec="0.3", label="Pareto front (one stem beats all)")
        log_axis_if_spread(ax, x)
        ax.margins(x=0.1, y=0.1)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.grid(alpha=0.3)
    if loaded.any():  # the marker's meaning in the legend, beside the stems
        axes[0, 1].plot([], [], "o", color="0.3", mfc="white", label="hollow: timed on a loaded machine")
    axes[0, 0].set_ylabel("validation accuracy (%)")
    fig.legend(*axes[0, 1].get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    few = int((table["n"] < 2).sum())
    fig.suptitle("accuracy vs cost: mean over seeds (time: median)\nbars: lowest to highest seed"
                 + (f" (none for {few} stem(s) with one seed)" if few else ""), fontsize=10)
    return fig


def plot_depth(study: Study, order: list[str]) -> Figure | None:
    labels = stem_labels(study.runs)
    shares = {s: depth_shares(completed([r for r in study.runs if labels[id(r)] == s])) for s in order}
    shares = {s: d for s, d in shares.items() if len(d)}
    if not shares:
        return None
    cols = min(4, len(shares))
    rows = math.ceil(len(shares) / cols)
    fig, axes = new_figure(rows, cols, figsize=(3.3 * cols, 2.9 * rows), sharey=True)
    untimed = []
    for ax, (stem, d) in zip(axes.flat, shares.items()):
        d = d.reindex([s for s in STAGES if s in d.index])
        x = np.arange(len(d))
        for offset, col, label, color in ((-0.2, "share_flops", "FLOPs", FLOPS_COLOR), (0.2, "share_time", "time", TIME_COLOR)):
            mean, lo, hi = (100 * d[c].to_numpy(float) for c in (col, f"{col}_lo", f"{col}_hi"))
            if not np.isfinite(mean).any():
                continue
            ax.bar(x + offset, mean, 0.4, yerr=np.clip([mean - lo, hi - mean], 0, None), capsize=2, error_kw={"lw": 0.8}, label=label, color=color)
        missing = ~np.isfinite(d["share_time"].to_numpy(float))
        if missing.any():  # missing is not 0 %: name it where its bar would be
            untimed.append(stem)
            for xi in x[missing]:
                ax.text(xi + 0.2, 1, "not timed", rotation=90, ha="center", va="bottom", fontsize=6, color=TIME_COLOR)
        ax.set_xticks(x, d.index, rotation=45, fontsize=7)
        ax.set_xlim(-0.6, len(d) - 0.4)
        ax.set_title(stem, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes.flat[len(shares):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("% of a training step")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle("compute by depth: share of FLOPs and of measured time\n(mean; whiskers: lowest to highest seed"
                 + (")" if not untimed else f"; {len(untimed)} stem(s) not timed: no time bar)"), fontsize=10)
    return fig


def plot_curves(study: Study, order: list[str], colors: dict[str, tuple]) -> Figure | None:
    labels = stem_labels(study.runs)
    panels = [("accuracy", "validation accuracy (%)", 100), ("train_loss", "training loss", 1)]
    curves = {}
    for stem in order:
        hs = [r.history for r in completed([r for r in study.runs if labels[id(r)] == stem]) if r.history is not None]
        if hs:
            curves[stem] = pd.concat(hs)
    if not curves or max(h["epoch"].nunique() for h in curves.values()) < MIN_CURVE_EPOCHS:
        return None  # one or two epochs are points, not curves: the report gives them as a table
    fig, axes = new_figure(1, 2, figsize=(11, 4))
    for stem, h in curves.items():
        for ax, (col, _, scale) in zip(axes.flat, panels):
            if col not in h:
                continue
            g = h.groupby("epoch")[col]
            epochs = g.mean().index.to_numpy()
            ax.plot(epochs, scale * g.mean(), "-o", ms=3, color=colors[stem], label=stem)
            ax.fill_between(epochs, scale * g.min(), scale * g.max(), color=colors[stem], alpha=0.15)
    for ax, (_, ylabel, _) in zip(axes.flat, panels):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside right upper", fontsize=7)  # off the curves
    fig.suptitle("training curves (mean over seeds; band: lowest to highest seed)", fontsize=10)
    return fig


def plot_tuning(tuning: pd.DataFrame, colors: dict[str, tuple]) -> Figure:
    """One small panel per stem (16 overlaid curves are unreadable), shared axes so that panels compare."""
    curves = dict(list(tuning[tuning["n"] > 0].groupby("stem", sort=True)))
    cols = min(4, len(curves))
    rows = math.ceil(len(curves) / cols)
    fig, axes = new_figure(rows, cols, figsize=(3.1 * cols, 2.5 * rows + 0.4), sharex=True, sharey=True)
    grid = sorted(set(tuning["lr"]))
    for ax, (stem, g) in zip(axes.flat, curves.items()):
        acc, ci = 100 * g["acc_mean"].to_numpy(float), 100 * g["acc_ci95"].to_numpy(float)
        ci = np.where(np.isfinite(ci), ci, 0)  # few seeds make wide t-intervals: drawn within what accuracy can be
        ax.errorbar(g["lr"], acc, yerr=[np.minimum(ci, acc), np.minimum(ci, 100 - acc)], fmt="-o", ms=4, capsize=3,
                    color=colors[stem])
        chosen = g[g["chosen"]]
        ax.plot(chosen["lr"], 100 * chosen["acc_mean"], "o", ms=12, mfc="none", mec="0.2", mew=1.2)
        ax.set_title(f"{stem}: lr {chosen['lr'].iloc[0]:g}", fontsize=8)
        ax.set_xscale("log")
        ax.set_xticks(grid, [f"{v:g}" for v in grid], fontsize=7, rotation=45)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(curves):]:
        ax.axis("off")
    fig.supxlabel("learning rate", fontsize=9)
    fig.supylabel("tuning-split accuracy (%)", fontsize=9)
    bars = bool(np.isfinite(tuning["acc_ci95"].to_numpy(float)).any())
    fig.suptitle("LR tuning per stem: mean over seeds" + (", bars = 95 % CI (cut at 0 and 100 %)" if bars else " (one seed per LR: no CI bars)")
                 + "; ring = chosen LR", fontsize=10)
    return fig
