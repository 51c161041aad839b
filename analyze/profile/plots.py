"""The profile's two pictures, as PNG files.

1. ``shares.png`` — each layer's share of FLOPs next to its share of time along the depth, for the
   forward pass and for a training step (forward + backward): the seed question ("most of the
   computation is in the early layers") answered in one picture.  Without timings, the share of
   bytes moved stands in for time.
2. ``roofline.png`` — every layer as a point (arithmetic intensity, achieved FLOP/s) under the
   device's two ceilings (peak FLOP/s, peak bandwidth × intensity), coloured by group.

Matplotlib's object API with the Agg canvas: no display and no global pyplot state are needed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from analyze.profile.tables import Profile

__all__ = ["plot_shares", "plot_roofline", "save_plots"]


def _figure(width: float, height: float, rows: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, axes


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


def _shares_panel(ax: Axes, flops: np.ndarray, other: np.ndarray, other_label: str, title: str,
                  groups: list[str]) -> None:
    x = np.arange(len(flops))
    w = 0.42
    ax.bar(x - w / 2, 100 * flops, w, label="share of FLOPs", color="tab:blue")
    ax.bar(x + w / 2, 100 * other, w, label=other_label, color="tab:orange")
    ax.set_ylabel("% of model")
    ax.set_title(title, fontsize=9, loc="left", pad=12)
    ax.legend(fontsize=7, loc="upper right")
    _shade_groups(ax, groups)


def plot_shares(profile: Profile, path: str | Path) -> Path:
    """Bars of FLOPs share vs time share per layer, forward (top) and training step (bottom)."""
    layers = profile.layers
    groups = [str(g) for g in layers["group"]]
    timed = layers["ms_fwd"].notna().any()
    fig, (top, bottom) = _figure(max(8.0, 0.12 * len(layers)), 6.5, rows=2)
    if timed:
        other_fwd, other_train, label = layers["share_time"], layers["share_time_train"], "share of time"
    else:
        bytes_share = layers["bytes_moved"] / layers["bytes_moved"].sum()
        other_fwd, other_train, label = bytes_share, bytes_share, "share of bytes moved (no timing)"
    _shares_panel(top, layers["share_flops"].to_numpy(float), other_fwd.fillna(0).to_numpy(float), label,
                  "forward", groups)
    _shares_panel(bottom, layers["share_flops_train"].to_numpy(float), other_train.fillna(0).to_numpy(float),
                  label, "training step (forward + backward)", groups)
    bottom.set_xlabel("layer (execution order)")
    meta = profile.meta
    fig.suptitle(f"FLOPs vs time per layer — input {meta.get('input_shape')}, {meta.get('device')}", fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=130)
    return path


def plot_roofline(profile: Profile, path: str | Path) -> Path | None:
    """Roofline scatter of the timed layers; None when the profile has no timings or peaks."""
    layers = profile.layers
    peak = profile.meta.get("peaks")
    if peak is None or "tflops" not in layers or not layers["ms_fwd"].notna().any():
        return None
    pts = layers[(layers["flops_fwd"] > 0) & (layers["ms_fwd"] > 0) & (layers["bytes_moved"] > 0)]
    intensity = pts["intensity"].to_numpy(float)
    achieved = (pts["flops_fwd"] / (pts["ms_fwd"] / 1e3)).to_numpy(float)
    fig, (ax,) = _figure(7.5, 5.0)
    lo = min(intensity.min(initial=1.0), 0.05)
    hi = max(intensity.max(initial=1.0), 4 * peak["flops_per_s"] / peak["bytes_per_s"])
    xs = np.logspace(math.log10(lo), math.log10(hi), 200)
    ax.plot(xs, np.minimum(peak["flops_per_s"], xs * peak["bytes_per_s"]), color="black", lw=1.2,
            label=f"ceilings: {peak['flops_per_s'] / 1e9:.0f} GFLOP/s, {peak['bytes_per_s'] / 1e9:.0f} GB/s")
    for g in dict.fromkeys(pts["group"]):
        sel = (pts["group"] == g).to_numpy()
        ax.scatter(intensity[sel], achieved[sel], s=14, label=str(g), alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (forward FLOPs / byte moved)")
    ax.set_ylabel("achieved FLOP/s (forward)")
    ax.set_title(f"roofline — {peak['device']}, {peak['dtype']}", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", lw=0.3, alpha=0.5)
    path = Path(path)
    fig.savefig(path, dpi=130)
    return path


def save_plots(profile: Profile, out_dir: str | Path) -> list[Path]:
    """Both plots into `out_dir` (the roofline only when the profile was timed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    made = [plot_shares(profile, out / "shares.png"), plot_roofline(profile, out / "roofline.png")]
    return [p for p in made if p is not None]
