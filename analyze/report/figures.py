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
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from profiler.figure_files import new_figure, save_figure

from .statistics import STAGES, completed, depth_shares, pareto_front
from .studies import Study, stem_labels

FLOPS_COLOR, TIME_COLOR = "tab:blue", "tab:orange"
MIN_CURVE_EPOCHS = 3  # fewer epochs make a table (render.epoch_table), not a figure
MIN_CI_SEEDS = 3  # a t-interval from 2 seeds spans half the axis: fewer seeds get their lowest to highest instead


def stem_colors(names: list[str]) -> dict[str, tuple]:
    """One distinct colour per stem, by its index in sorted order (the same stem, the same colour in every figure)."""
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(sorted(names))}


def save(fig: Figure, path: Path) -> str:
    """Writes a report figure (byte for byte the same from the same records) and gives its file name."""
    return save_figure(fig, path, dpi=110).name


def write_figures(study: Study, table: pd.DataFrame, tuning: pd.DataFrame | None, out: Path) -> dict[str, str]:
    """{'pareto'|'depth'|'curves'|'tuning': file name} for the figures this study's records allow."""
    done = table[table["n"] > 0]
    colors = stem_colors(sorted(set(done["stem"]) | (set(tuning["stem"]) if tuning is not None else set())))
    figures = {"pareto": plot_pareto(done, colors, time_setting(study)) if len(done) else None,
               "depth": plot_depth(study, list(done["stem"])),
               "curves": plot_curves(study, list(done["stem"]), colors),
               "tuning": plot_tuning(tuning, tuning_seeds(study), colors) if tuning is not None and tuning["n"].sum() else None}
    return {key: save(fig, out / f"{study.slug}_{key}.png") for key, fig in figures.items() if fig is not None}


def time_setting(study: Study) -> str:
    """'batch 64 on cpu': what the step times were measured at (devices listed when runs differ)."""
    devices = sorted({str((r.record.get("hardware") or {}).get("device")) for r in completed(study.runs)})
    return f"batch {(study.config.get('train') or {}).get('bs', '?')} on {' + '.join(devices) or '?'}"


def load_note(runs) -> str:
    """'timed at load average 1.7–1.9 on 2 CPUs' (and a warning when the load reached the CPU count): the mark
    every time taken on a shared machine carries on a figure."""
    loads = [(r.record.get("hardware") or {}).get("load") or {} for r in completed(runs)]
    avg = [x["load_avg"] for x in loads if isinstance(x.get("load_avg"), (int, float))]
    cpus = max((x["cpus"] for x in loads if isinstance(x.get("cpus"), int)), default=None)
    if not avg:
        return "load while timed not recorded"
    note = f"timed at load average {min(avg):.1f}–{max(avg):.1f}" + (f" on {cpus} CPUs" if cpus else "")
    return note + (": CPUs fully loaded, so compare times within this figure only" if cpus and max(avg) >= cpus else "")


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
    """Share of FLOPs per stage beside share of measured time; time bars only where some run was timed (a stem
    without a time among timed ones is marked "not timed"; a study with no time at all draws FLOPs alone)."""
    labels = stem_labels(study.runs)
    shares = {s: depth_shares(completed([r for r in study.runs if labels[id(r)] == s])) for s in order}
    shares = {s: d for s, d in shares.items() if len(d)}
    if not shares:
        return None
    any_time = any(np.isfinite(d["share_time"].to_numpy(float)).any() for d in shares.values())
    cols = min(4, len(shares))
    rows = math.ceil(len(shares) / cols)
    fig, axes = new_figure(rows, cols, figsize=(3.3 * cols, 2.9 * rows), sharey=True)
    bars = [("share_flops", "FLOPs", FLOPS_COLOR)] + ([("share_time", "time", TIME_COLOR)] if any_time else [])
    width = 0.8 / len(bars)
    untimed = []
    for ax, (stem, d) in zip(axes.flat, shares.items()):
        d = d.reindex([s for s in STAGES if s in d.index])
        x = np.arange(len(d))
        for k, (col, label, color) in enumerate(bars):
            offset = (k - (len(bars) - 1) / 2) * width
            mean, lo, hi = (100 * d[c].to_numpy(float) for c in (col, f"{col}_lo", f"{col}_hi"))
            if not np.isfinite(mean).any():
                continue
            ax.bar(x + offset, mean, width, yerr=np.clip([mean - lo, hi - mean], 0, None), capsize=2,
                   error_kw={"lw": 0.8}, label=label, color=color)
        missing = ~np.isfinite(d["share_time"].to_numpy(float))
        if any_time and missing.any():  # missing is not 0 %: name it where its bar would be
            untimed.append(stem)
            for xi in x[missing]:
                ax.text(xi + width / 2, 1, "not timed", rotation=90, ha="center", va="bottom", fontsize=6, color=TIME_COLOR)
        ax.set_xticks(x, d.index, rotation=45, fontsize=7)
        ax.set_xlim(-0.6, len(d) - 0.4)
        ax.set_title(stem, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes.flat[len(shares):]:
        ax.axis("off")
    if any_time:
        axes[0, 0].set_ylabel("% of a training step")
        axes[0, 0].legend(fontsize=7, loc="upper left")
        title = ("compute by depth: share of FLOPs and of measured time\n(mean; whiskers: lowest to highest seed"
                 + ("" if not untimed else f"; {len(untimed)} stem(s) not timed: no time bar") + f"; {load_note(study.runs)})")
    else:
        axes[0, 0].set_ylabel("% of a training step's FLOPs")
        title = ("compute by depth: share of FLOPs per stage (forward + backward)\n(mean; whiskers: lowest to highest "
                 "seed; the layers were not timed in these runs, so no time is shown)")
    fig.suptitle(title, fontsize=10)
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


def tuning_seeds(study: Study) -> pd.DataFrame:
    """Each completed tuning run's accuracy: stem, lr, acc (what the tuning plot draws beside the means)."""
    labels = stem_labels(study.tuning)
    return pd.DataFrame([{"stem": labels[id(r)], "lr": r.lr, "acc": r.metric("valid_acc")} for r in completed(study.tuning)],
                        columns=["stem", "lr", "acc"])


def _seed_points(ax, lr: float, accs: np.ndarray, color) -> None:
    """Each seed as a small ring; seeds that agree share a ring marked ×k, so a tie never reads as one sure value."""
    values, counts = np.unique(np.round(accs, 6), return_counts=True)
    ax.plot(np.full(len(values), lr), values, "o", ms=5, mfc="none", mec=color, mew=0.8, alpha=0.8)
    for v, k in zip(values, counts):
        if k > 1:
            ax.annotate(f"×{k}", (lr, v), xytext=(4, -3), textcoords="offset points", fontsize=6, color=color)


def plot_tuning(tuning: pd.DataFrame, seeds: pd.DataFrame, colors: dict[str, tuple]) -> Figure:
    """One small panel per stem (16 overlaid curves are unreadable), shared axes so that panels compare: the mean per
    LR, each seed, and a bar that says what it is (95 % CI from 3 seeds up, else lowest to highest seed)."""
    curves = dict(list(tuning[tuning["n"] > 0].groupby("stem", sort=True)))
    cols = min(4, len(curves))
    rows = math.ceil(len(curves) / cols)
    fig, axes = new_figure(rows, cols, figsize=(3.1 * cols, 2.7 * rows + 0.5), sharex=True, sharey=True)
    grid = sorted(set(tuning["lr"]))
    bars = set()
    for ax, (stem, g) in zip(axes.flat, curves.items()):
        ax.plot(g["lr"], 100 * g["acc_mean"], "-", color=colors[stem], lw=1.2)
        for r in g.itertuples():
            accs = 100 * seeds.loc[(seeds["stem"] == stem) & (seeds["lr"] == r.lr), "acc"].to_numpy(float)
            mean = 100 * r.acc_mean
            if r.n >= MIN_CI_SEEDS and math.isfinite(r.acc_ci95) and r.acc_ci95 > 0:
                lo, hi, bars = max(0.0, mean - 100 * r.acc_ci95), min(100.0, mean + 100 * r.acc_ci95), bars | {"ci"}
            elif r.n == 2 and np.ptp(accs) > 0:
                lo, hi, bars = accs.min(), accs.max(), bars | {"range"}
            else:  # one seed, or seeds that agree: no bar (the rings say how many)
                lo = hi = math.nan
            if math.isfinite(lo):
                ax.errorbar([r.lr], [mean], yerr=[[mean - lo], [hi - mean]], fmt="none", elinewidth=1,
                            capsize=3 if r.n >= MIN_CI_SEEDS else 0, color=colors[stem])  # caps would hide the rings
            ax.plot([r.lr], [mean], "s", ms=4, color=colors[stem])
            _seed_points(ax, r.lr, accs, colors[stem])
        chosen = g[g["chosen"]]
        ax.plot(chosen["lr"], 100 * chosen["acc_mean"], "o", ms=12, mfc="none", mec="0.2", mew=1.2)
        ax.set_title(f"{stem}: lr {chosen['lr'].iloc[0]:g} (seeds per LR: {_seed_counts(g['n'])})", fontsize=8)
        ax.set_xscale("log")
        ax.set_xticks(grid, [f"{v:g}" for v in grid], fontsize=7, rotation=45)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(labelbottom=True)  # every panel names its LRs, not only the bottom row
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(curves):]:
        ax.axis("off")
    fig.supxlabel("learning rate", fontsize=9)
    fig.supylabel("tuning-split accuracy (%)", fontsize=9)
    said = {"ci": f"bar = 95 % t-CI ({MIN_CI_SEEDS}+ seeds, cut at 0 and 100 %)", "range": "bar = lowest to highest of 2 seeds"}
    fig.suptitle("LR tuning per stem: square = mean over seeds, small rings = the seeds (×k: k seeds alike), "
                 "big circle = chosen LR\n"
                 + ("; ".join(said[k] for k in ("ci", "range") if k in bars) or "no bars: one seed per LR or seeds alike"),
                 fontsize=10)
    return fig


def _seed_counts(n: pd.Series) -> str:
    lo, hi = int(n.min()), int(n.max())
    return f"{lo}" if lo == hi else f"{lo}–{hi}"
