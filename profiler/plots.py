"""The profile's two pictures, as PNG files.

1. ``shares.png`` — each layer's (or, on deep models, each block's) share of FLOPs next to its share
   of time along the depth, for the forward pass and for a training step (forward + backward): the
   seed question ("most of the computation is in the early layers") answered in one picture.  An
   untimed profile gets one panel, share of FLOPs vs share of bytes moved, titled so.
2. ``roofline.png`` — every timed layer as a point (arithmetic intensity, achieved FLOP/s) under the
   device's two ceilings (peak FLOP/s, peak bandwidth × intensity), coloured by group, the layers
   that take the most time named (labels placed without overlap, ``figure_files.place_labels``); beside it the
   same for each stage (group) as a whole, named with its time and intensity.

Matplotlib's object API with the Agg canvas: no display and no global pyplot state are needed.
Every file is written atomically and regenerates byte for byte (``figure_files.save_figure``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .figure_files import place_labels, save_figure
from .tables import Profile

__all__ = ["plot_shares", "plot_roofline", "save_plots", "depth_units"]

MAX_LAYER_BARS = 40  # more leaves than this: one bar per block (stage2.0, stage2.1, ...)
NAMED_ON_ROOFLINE = 8  # the layers taking the most forward time get their names on the roofline
_DPI = 130


def _figure(width: float, height: float, rows: int = 1) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, list(axes)


def _save(fig: Figure, path: str | Path) -> Path:
    return save_figure(fig, path, _DPI)


def depth_units(layers: pd.DataFrame) -> pd.DataFrame:
    """The layers summed per drawn unit along the depth: each leaf on small models, each block on deep ones.

    A block is the first two parts of a layer's name (``stage2.1.convpath.0.0`` → ``stage2.1``); the
    columns are the sums of the shares and bytes of its leaves, in execution order.
    """
    cols = ["share_flops", "share_time", "share_flops_train", "share_time_train", "bytes_moved"]
    units = layers["name"].astype(str)
    if len(layers) > MAX_LAYER_BARS:
        units = units.map(lambda n: ".".join(n.split(".")[:2]))
    frame = layers[cols].assign(unit=units.to_numpy(), group=layers["group"].astype(str).to_numpy())
    out = frame.groupby("unit", sort=False).agg({**{c: lambda s: s.sum(min_count=1) for c in cols}, "group": "first"})
    return out.reset_index()


def _group_spans(groups: list[str]) -> list[tuple[str, int, int]]:
    """(group, first index, last index) runs along the depth."""
    spans: list[tuple[str, int, int]] = []
    for i, g in enumerate(groups):
        if spans and spans[-1][0] == g:
            spans[-1] = (g, spans[-1][1], i)
        else:
            spans.append((g, i, i))
    return spans


def _shade_groups(ax: Axes, groups: list[str]) -> None:
    for k, (g, a, b) in enumerate(_group_spans(groups)):
        if k % 2:
            ax.axvspan(a - 0.5, b + 0.5, color="0.93", zorder=0)
        ax.text((a + b) / 2, 1.0, g, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=7)


def _shares_panel(ax: Axes, flops: pd.Series, other: pd.Series, other_label: str, title: str,
                  groups: list[str]) -> None:
    x = np.arange(len(flops))
    w = 0.42
    ax.bar(x - w / 2, 100 * flops.fillna(0).to_numpy(float), w, label="share of FLOPs", color="tab:blue")
    ax.bar(x + w / 2, 100 * other.fillna(0).to_numpy(float), w, label=other_label, color="tab:orange")
    ax.set_ylim(0, 1.25 * max(100 * flops.max(), 100 * other.max(), 1e-9))  # headroom for the legend
    ax.set_ylabel("% of model")
    ax.set_title(title, fontsize=9, loc="left", pad=12)
    ax.legend(fontsize=7, loc="upper right")
    _shade_groups(ax, groups)


def plot_shares(profile: Profile, path: str | Path) -> Path:
    """Bars of FLOPs share vs time share per layer or block: forward and training step; untimed: FLOPs vs bytes."""
    units = depth_units(profile.layers)
    groups = units["group"].tolist()
    timed = profile.layers["ms_fwd"].notna().any()
    rows = 2 if timed else 1
    width = min(max(6.0, 0.28 * len(units) + 2.0), 16.0)
    fig, axes = _figure(width, 2.2 + 2.6 * rows, rows=rows)
    if timed:
        _shares_panel(axes[0], units["share_flops"], units["share_time"], "share of time", "forward", groups)
        _shares_panel(axes[1], units["share_flops_train"], units["share_time_train"], "share of time",
                      "training step (forward + backward)", groups)
        what = "FLOPs vs time"
    else:
        bytes_share = units["bytes_moved"] / units["bytes_moved"].sum()
        _shares_panel(axes[0], units["share_flops"], bytes_share, "share of bytes moved",
                      "forward (not timed: bytes moved stand in for time)", groups)
        what = "FLOPs vs bytes moved"
    per = "block" if len(units) < len(profile.layers) else "layer"
    bottom = axes[-1]
    bottom.set_xticks(np.arange(len(units)), units["unit"].tolist(), rotation=60, ha="right", fontsize=7)
    bottom.set_xlim(-0.6, len(units) - 0.4)
    bottom.set_xlabel(f"{per} (execution order)")
    meta = profile.meta
    fig.suptitle(f"{what} per {per} — input {meta.get('input_shape')}, {meta.get('device')}", fontsize=10)
    return _save(fig, path)


def _ceilings(ax: Axes, peak: dict, intensity: np.ndarray) -> None:
    """The device's two ceilings (peak FLOP/s, peak bandwidth × intensity) over the points' range, log axes."""
    lo = min(intensity.min(initial=1.0), 0.05)
    hi = max(intensity.max(initial=1.0), 4 * peak["flops_per_s"] / peak["bytes_per_s"])
    xs = np.logspace(math.log10(lo), math.log10(hi), 200)
    ax.plot(xs, np.minimum(peak["flops_per_s"], xs * peak["bytes_per_s"]), color="black", lw=1.2,
            label=f"ceilings: {peak['flops_per_s'] / 1e9:.0f} GFLOP/s, {peak['bytes_per_s'] / 1e9:.0f} GB/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (forward FLOPs / byte moved)")
    ax.grid(True, which="both", lw=0.3, alpha=0.5)


def _timed_points(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    pts = frame[(frame["flops_fwd"] > 0) & (frame["ms_fwd"] > 0) & (frame["bytes_moved"] > 0)]
    return pts, pts["intensity"].to_numpy(float), (pts["flops_fwd"] / (pts["ms_fwd"] / 1e3)).to_numpy(float)


def _stage_panel(ax: Axes, groups: pd.DataFrame, peak: dict) -> None:
    """One point per stage (group): its summed FLOPs over its summed bytes and time, named with both."""
    pts, intensity, achieved = _timed_points(groups[groups["group"] != "total"])
    _ceilings(ax, peak, intensity)
    labels = []
    for k, (_, r) in enumerate(pts.iterrows()):
        ax.scatter(intensity[k], achieved[k], s=30, color=f"C{k % 10}", zorder=3)
        labels.append(ax.text(intensity[k], achieved[k], f"{r['group']}: {r['ms_fwd']:.3g} ms, {r['intensity']:.3g} FLOP/B",
                              fontsize=7, color=f"C{k % 10}"))
    ax.set_title("per stage (each stage's FLOPs / its bytes and time)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    place_labels(labels, ax, x=intensity, y=achieved, expand=(1.2, 1.6))


def plot_roofline(profile: Profile, path: str | Path) -> Path | None:
    """Roofline of the timed layers (the slowest named) and, beside it, of the stages; None when the
    profile has no timings or peaks."""
    layers = profile.layers
    peak = profile.meta.get("peaks")
    if peak is None or "tflops" not in layers or not layers["ms_fwd"].notna().any():
        return None
    pts, intensity, achieved = _timed_points(layers)
    fig = Figure(figsize=(15.0, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax, stage_ax = fig.subplots(1, 2, width_ratios=[1.6, 1.0])
    _ceilings(ax, peak, intensity)
    for g in dict.fromkeys(pts["group"]):
        sel = (pts["group"] == g).to_numpy()
        ax.scatter(intensity[sel], achieved[sel], s=14, label=str(g), alpha=0.8)
    ax.set_ylabel("achieved FLOP/s (forward)")
    ax.set_title(f"per layer; the {NAMED_ON_ROOFLINE} slowest named", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the points and names stay clear
    slowest = np.argsort(-pts["ms_fwd"].to_numpy(float), kind="stable")[:NAMED_ON_ROOFLINE]
    labels = [ax.text(intensity[i], achieved[i], f"{pts['name'].iloc[i]} {pts['ms_fwd'].iloc[i]:.3g} ms",
                      fontsize=6.5) for i in slowest]
    place_labels(labels, ax, x=intensity, y=achieved, expand=(1.3, 1.9), force_text=(0.3, 0.6))
    _stage_panel(stage_ax, profile.groups, peak)
    fig.suptitle(f"roofline — {peak['device']}, {peak['dtype']}", fontsize=10)
    return _save(fig, path)


def save_plots(profile: Profile, out_dir: str | Path) -> list[Path]:
    """Both plots into `out_dir` (the roofline only when the profile was timed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    made = [plot_shares(profile, out / "shares.png"), plot_roofline(profile, out / "roofline.png")]
    return [p for p in made if p is not None]
