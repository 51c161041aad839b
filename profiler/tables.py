"""Tables: the :class:`Profile` result, its per-layer and per-group frames, shares and roofline columns."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from torch import nn

from .calibrate import Peaks
from .counting import LeafCount

__all__ = ["Profile", "build_tables"]

# columns that add up over layers (the rest are ratios, recomputed from these for groups)
_SUM_COLS = ["params", "macs", "flops_fwd", "flops_bwd", "flops_fwd_ew", "flops_bwd_ew",
             "act_bytes", "bytes_moved", "bytes_bwd", "ms_fwd", "ms_bwd"]
_TOTAL_COLS = ["macs", "flops_fwd", "flops_bwd", "act_bytes", "bytes_moved", "bytes_bwd", "ms_fwd", "ms_bwd"]
_SHARES = [("share_flops", "flops_fwd"), ("share_time", "ms_fwd"),
           ("share_flops_train", "flops_train"), ("share_time_train", "ms_train")]


@dataclass
class Profile:
    """The result of :func:`profiler.profile_model`."""

    layers: pd.DataFrame  # one row per leaf module, in execution order
    groups: pd.DataFrame  # summed per top-level child, then a `total` row
    totals: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict)


def _group_of(name: str, kind: str) -> str:
    return name.split(".", 1)[0] if name else kind


def _quartiles(ms: list[float]) -> tuple[float, float]:
    """First and third quartile of the timed steps (NaN when untimed): the spread beside the median."""
    if len(ms) < 2:
        return (ms[0], ms[0]) if ms else (math.nan, math.nan)
    q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    return q1, q3


def _layers_frame(leaves: list[LeafCount]) -> pd.DataFrame:
    ran = sorted((lf for lf in leaves if lf.calls > 0), key=lambda lf: lf.order)
    # Leaves that never ran but own weights still count towards params (sums = model totals).
    idle = [lf for lf in leaves if lf.calls == 0 and any(True for _ in lf.module.parameters())]
    rows = []
    for lf in ran + idle:
        kind = type(lf.module).__name__
        rows.append(
            {
                "name": lf.name,
                "kind": kind,
                "group": _group_of(lf.name, kind),
                "calls": lf.calls,
                "in_shape": lf.in_shape,
                "out_shape": lf.out_shape,
                "params": sum(p.numel() for p in lf.module.parameters()),
                "macs": lf.mm_fwd // 2,
                "flops_fwd": lf.mm_fwd + lf.ew_fwd,
                "flops_bwd": lf.mm_bwd + lf.ew_bwd,
                "flops_fwd_ew": lf.ew_fwd,
                "flops_bwd_ew": lf.ew_bwd,
                "act_bytes": lf.out_bytes,
                "bytes_moved": lf.in_bytes + lf.param_bytes + lf.out_bytes,
                "bytes_bwd": lf.bwd_bytes,
                "ms_fwd": statistics.median(lf.ms_fwd) if lf.ms_fwd else math.nan,
                "ms_bwd": statistics.median(lf.ms_bwd) if lf.ms_bwd else math.nan,
                **dict(zip(("ms_fwd_q1", "ms_fwd_q3"), _quartiles(lf.ms_fwd))),
                **dict(zip(("ms_bwd_q1", "ms_bwd_q3"), _quartiles(lf.ms_bwd))),
            }
        )
    return _derive(pd.DataFrame(rows))


def _derive(df: pd.DataFrame) -> pd.DataFrame:
    """Ratio columns, recomputed from the summed ones (so they are right for groups too)."""
    df["flops_train"] = df["flops_fwd"] + df["flops_bwd"]
    df["ms_train"] = df["ms_fwd"] + df["ms_bwd"]
    df["intensity"] = df["flops_fwd"] / df["bytes_moved"].where(df["bytes_moved"] > 0)
    return df


def _add_shares(df: pd.DataFrame, mask: pd.Series | None = None) -> pd.DataFrame:
    """Each row's share of the column's sum over the rows in `mask` (all rows when None)."""
    part = df if mask is None else df[mask]
    for col, src in _SHARES:
        df[col] = df[src] / part[src].sum(min_count=1) if part[src].notna().any() else math.nan
    return df


def _add_roofline(df: pd.DataFrame, peak: Peaks | None) -> pd.DataFrame:
    """Achieved throughput of each forward and its roofline bound against the device's peaks."""
    if peak is None:
        return df
    sec = df["ms_fwd"].where(df["ms_fwd"] > 0) / 1e3
    df["tflops"] = df["flops_fwd"] / sec / 1e12
    df["gbps"] = df["bytes_moved"] / sec / 1e9
    bound_s = pd.concat([df["flops_fwd"] / peak.flops_per_s, df["bytes_moved"] / peak.bytes_per_s], axis=1).max(axis=1)
    df["roofline_ms"] = bound_s * 1e3
    df["efficiency"] = df["roofline_ms"] / df["ms_fwd"].where(df["ms_fwd"] > 0)
    return df


def _groups_frame(layers: pd.DataFrame) -> pd.DataFrame:
    order = list(dict.fromkeys(layers["group"]))
    g = layers.groupby("group", sort=False)[_SUM_COLS].sum(min_count=1).reindex(order)
    g.loc["total"] = layers[_SUM_COLS].sum(min_count=1)
    g = g.reset_index().rename(columns={"index": "group"})
    g = _derive(g)
    return _add_shares(g, g["group"] != "total")


def _totals(model: nn.Module, groups: pd.DataFrame) -> dict[str, float]:
    by_group = groups.set_index("group")
    tot = by_group.loc["total"]
    out: dict[str, float] = {
        "params": float(sum(p.numel() for p in model.parameters())),
        **{k: float(tot[k]) for k in _TOTAL_COLS},
        "ms_fwd_e2e": math.nan,
        "ms_train_step_e2e": math.nan,
        "gap_fwd": math.nan,
        "gap_train": math.nan,
    }
    for col, _ in _SHARES:
        out[f"stem_{col}"] = float(by_group.loc["stem", col]) if "stem" in by_group.index else math.nan
    return out


def build_tables(model: nn.Module, leaves: list[LeafCount], timing: dict[str, float],
                 peak: Peaks | None, meta: dict[str, Any]) -> Profile:
    """The Profile of `model` from its leaves' counts (and times), the end-to-end `timing` and the peaks."""
    layers = _add_roofline(_add_shares(_layers_frame(leaves)), peak)
    groups = _add_roofline(_groups_frame(layers), peak)
    totals = _totals(model, groups)
    totals.update(timing)
    if peak is not None:
        totals["peak_tflops"] = peak.flops_per_s / 1e12
        totals["peak_gbps"] = peak.bytes_per_s / 1e9
    if "ms_fwd_e2e" in timing:
        totals["gap_fwd"] = totals["ms_fwd"] / totals["ms_fwd_e2e"] - 1
    if "ms_train_step_e2e" in timing:
        totals["gap_train"] = (totals["ms_fwd"] + totals["ms_bwd"]) / totals["ms_train_step_e2e"] - 1
    return Profile(layers=layers, groups=groups, totals=totals, meta=meta)
