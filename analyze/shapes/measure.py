"""Measuring the layer families: one cost profile per layer (``profiler.profile_model``: its FLOP
rules, bytes, timer and calibrated peaks), one row of ``shapes.csv`` per layer × batch × precision ×
memory format, written after every layer so an interrupted run loses nothing it finished and the same
command continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from profiler import profile_model
from profiler.calibrate import device_name, peaks
from profiler.runtime import num_threads
from stems.base import atomic_write

from .families import FORMATS as FORMAT_NAMES
from .families import PRECISIONS as PRECISION_NAMES
from .families import LayerSpec, ShapesError

__all__ = ["DTYPES", "Point", "plan", "Settings", "reusable", "measure_all", "build_layer", "KEY"]

DTYPES: dict[str, torch.dtype | None] = dict(zip(PRECISION_NAMES, (None, torch.bfloat16, torch.float16)))
CHANNELS_LAST = dict(zip(FORMAT_NAMES, (False, True)))
KEY = ["precision", "memory_format", "family", "batch", "channels", "size"]
TIMED, SKIPPED = "timed", "not timed: budget spent"


@dataclass(frozen=True)
class Point:
    """One measurement: a layer at a batch size, precision and memory format."""

    spec: LayerSpec
    batch: int
    precision: str
    memory_format: str

    @property
    def key(self) -> tuple:
        return (self.precision, self.memory_format, self.spec.family, self.batch, self.spec.channels, self.spec.size)


def plan(layers: list[LayerSpec], batch: int, sweep: list[int], precisions: list[str],
         formats: list[str]) -> list[Point]:
    """Every layer at the training batch in every precision and format first, then the batch sweep
    (so a short budget spends itself on the main comparison)."""
    first = [Point(s, batch, p, f) for p in precisions for f in formats for s in layers]
    rest = [Point(s, b, p, f) for b in sweep if b != batch for p in precisions for f in formats for s in layers]
    return first + rest


@dataclass(frozen=True)
class Settings:
    """What a row's figures depend on besides its point: rows measured under other settings are not reused."""

    device: str
    device_name: str
    threads: int
    repeats: int
    torch: str
    allocator: str | None = None  # what the process's allocator does with freed memory (experiments.allocator)

    @classmethod
    def of(cls, dev: torch.device, threads: int | None, repeats: int, allocator: str | None = None) -> Settings:
        with num_threads(threads):
            return cls(str(dev), device_name(dev), torch.get_num_threads(), repeats, torch.__version__, allocator)


class Feed(nn.Module):
    """Stands in for the layer before the measured one, as inside a network: its output needs a
    gradient (so the measured layer computes its input gradient as well as its weight gradient)
    and is already in the run's precision (so the measured layer casts no input)."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.scale).to(self.dtype)


def build_layer(spec: LayerSpec, dtype: torch.dtype) -> nn.Sequential:
    """``feed`` → ``layer`` (bias-free, as convs before a norm are); the profile's ``layer`` row is the one measured."""
    conv = nn.Conv2d(spec.channels, spec.channels_out, spec.kernel, stride=spec.stride, padding=spec.kernel // 2,
                     groups=spec.groups, bias=False)
    return nn.Sequential(OrderedDict(feed=Feed(dtype), layer=conv))


def _row(point: Point, prof: Any, status: str) -> dict[str, Any]:
    """The ``layer`` row of a single-layer profile as a shapes.csv row (achieved FLOP/s from the medians;
    their spread from the time quartiles)."""
    r = prof.layers.set_index("name").loc["layer"]
    row: dict[str, Any] = {"precision": point.precision, "memory_format": point.memory_format,
                           "batch": point.batch, **point.spec.row(), "status": status,
                           "timed_steps": prof.totals.get("timed_steps", 0.0)}
    for d, bytes_col in (("fwd", "bytes_moved"), ("bwd", "bytes_bwd")):
        flops, moved = float(r[f"flops_{d}"]), float(r[bytes_col])
        row.update({f"flops_{d}": flops, f"bytes_{d}": moved, f"intensity_{d}": flops / moved})
        for q in ("", "_q1", "_q3"):
            row[f"ms_{d}{q}"] = float(r[f"ms_{d}{q}"]) if f"ms_{d}{q}" in r else math.nan
        row[f"gflops_{d}_s"] = flops / row[f"ms_{d}"] / 1e6
        row[f"gflops_{d}_s_lo"] = flops / row[f"ms_{d}_q3"] / 1e6
        row[f"gflops_{d}_s_hi"] = flops / row[f"ms_{d}_q1"] / 1e6
    return row  # the peak columns are added once all rows are in (_against_current_peaks)


def measure_point(point: Point, dev: torch.device, settings: Settings, timed: bool) -> dict:
    """The row of one point: counted, and timed with `settings.repeats` profiled steps when `timed`."""
    dtype = DTYPES[point.precision]
    spec = point.spec
    model = build_layer(spec, dtype or torch.float32)
    prof = profile_model(model, (point.batch, spec.channels, spec.size, spec.size), device=dev, latency=timed,
                         backward=True, dtype=dtype, channels_last=CHANNELS_LAST[point.memory_format],
                         repeats=settings.repeats, threads=settings.threads, roofline=False)
    return _row(point, prof, TIMED if timed else SKIPPED)


def reusable(out: Path, settings: Settings, say: Callable[[str], None]) -> dict[tuple, dict]:
    """Timed rows of an earlier run of the same settings in `out` (the run continues from them)."""
    csv, meta = out / "shapes.csv", out / "shapes.json"
    if not (csv.exists() and meta.exists()):
        return {}
    try:
        before = json.loads(meta.read_text())["settings"]
        rows = pd.read_csv(csv)
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as e:
        say(f"ignoring the unreadable earlier results in {out} ({type(e).__name__}); measuring afresh")
        return {}
    if before != dataclasses.asdict(settings):
        say(f"the results in {out} were measured with other settings ({before}); measuring afresh")
        return {}
    rows = rows[rows["status"] == TIMED]
    return {tuple(r[k] for k in KEY): r.to_dict() for _, r in rows.iterrows()}


def write_meta(out: Path, settings: Settings, extra: dict[str, Any]) -> None:
    atomic_write(out / "shapes.json", json.dumps({"settings": dataclasses.asdict(settings), **extra}, indent=1, default=str))


def measure_all(points: list[Point], dev: torch.device, settings: Settings, budget_s: float, out: Path,
                done: dict[tuple, dict], say: Callable[[str], None], measured: list[dict]) -> tuple[pd.DataFrame, int]:
    """Every point's row (reused from `done`, timed, or counted only once `budget_s` seconds of measuring are
    spent); shapes.csv rewritten after each; `measured` receives the rows measured here as they come. Returns the
    rows and how many were reused. The budget decides how many layers are timed, never how many steps each gets
    (every timed row has `repeats` profiled steps)."""
    if not points:
        raise ShapesError("nothing to measure: the families, precisions, formats and batches asked for are empty.")
    reused = sum(p.key in done for p in points)
    if reused:
        say(f"continuing: {reused} of {len(points)} layers already measured in {out}")
    started = time.perf_counter()
    rows: list[dict] = []
    for i, p in enumerate(points, 1):
        if p.key in done:
            rows.append(done[p.key])
            continue
        timed = time.perf_counter() - started < budget_s
        say(f"{i}/{len(points)} {p.spec.family} {p.spec.label} batch {p.batch} {p.precision} {p.memory_format}"
            + ("" if timed else " (budget spent: counting only)"))
        rows.append(measure_point(p, dev, settings, timed))
        measured.append(rows[-1])
        later = [done[q.key] for q in points[i:] if q.key in done]  # kept should this run be stopped too
        atomic_write(out / "shapes.csv", pd.DataFrame(rows + later).to_csv(index=False))
    frame = _against_current_peaks(pd.DataFrame(rows), dev, settings)
    atomic_write(out / "shapes.csv", frame.to_csv(index=False))
    return frame, reused


def _against_current_peaks(rows: pd.DataFrame, dev: torch.device, settings: Settings) -> pd.DataFrame:
    """Every row's peak share against the same peaks (the calibration cached now), rows reused from an
    earlier run included."""
    for precision in rows["precision"].unique():
        with num_threads(settings.threads):
            peak = peaks(dev, DTYPES[precision])
        sel = rows["precision"] == precision
        rows.loc[sel, "peak_gflops_s"] = peak.flops_per_s / 1e9
        rows.loc[sel, "peak_gbytes_s"] = peak.bytes_per_s / 1e9
    rows["peak_share_fwd"] = rows["gflops_fwd_s"] / rows["peak_gflops_s"]
    rows["peak_share_bwd"] = rows["gflops_bwd_s"] / rows["peak_gflops_s"]
    return rows
