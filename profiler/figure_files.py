"""Figures that regenerate byte for byte: one way to make a figure, name points and write it.

matplotlib's object API on the Agg canvas (no pyplot state). A PNG carries no software version, an SVG a fixed
hash salt and no date, so the same records give the same bytes. Labels are placed by adjustText with a fixed
number of steps: its default stops after one second, so a busy machine placed them differently on every run.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from adjustText import adjust_text
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from stems.base import atomic_write

__all__ = ["new_figure", "save_figure", "place_labels", "label_points"]

LABEL_STEPS = 300  # adjustText's iterations: enough to part a dozen labels, the same on every machine
_METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}


def new_figure(rows: int, cols: int, figsize: tuple[float, float], **subplots) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure on a canvas of its own (text can be measured) and its axes as a 2-d array."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False, **subplots)


def save_figure(fig: Figure, path: str | Path, dpi: int) -> Path:
    """Writes `fig` atomically in the format of `path`'s suffix, without the metadata that changes between runs."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    with matplotlib.rc_context({"svg.hashsalt": "stemlab"}):
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=fmt, metadata=_METADATA.get(fmt)))


def place_labels(texts: list[Text], ax: Axes, x=None, y=None, **options) -> None:
    """Moves `texts` off each other and off the points (x, y), each joined to its point by a thin line."""
    if texts:
        adjust_text(texts, x=x, y=y, ax=ax, iter_lim=LABEL_STEPS, time_lim=None,
                    arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5}, **options)


def label_points(ax: Axes, x, y, names: list[str], colors: list, fontsize: float = 7) -> None:
    """Names beside few points, each right of its point, moved up just enough to clear the one below (a thin line
    joins a moved name to its point): attached, never overlapping, the same on every run."""
    fig = ax.get_figure()
    fig.canvas.draw()  # the layout settles the axes, so display positions are final
    at = ax.transData.transform(np.column_stack([np.asarray(x, float), np.asarray(y, float)]))
    gap = 1.25 * fontsize * fig.dpi / 72  # one line of text, in pixels
    placed = -np.inf
    for i in np.argsort(at[:, 1], kind="stable"):
        ty = max(at[i, 1], placed + gap)
        placed = ty
        lift = (ty - at[i, 1]) * 72 / fig.dpi
        ax.annotate(names[i], (x[i], y[i]), xytext=(6, lift), textcoords="offset points", fontsize=fontsize,
                    color=colors[i], va="center", arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5} if lift else None)
