"""Bytes moved and arithmetic intensity per stage, for a study report: a table beside the FLOPs → time table and a
per-stage roofline (one point per stem and stage, achieved forward FLOP/s against the runs' calibrated peaks).

From each run's per-layer profile (layers.csv: ``group``, ``flops_fwd``, ``bytes_moved``, ``ms_fwd``), summed per
stage, then averaged over the stem's completed runs; a stage's intensity is its FLOPs over its bytes."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from adjustText import adjust_text

from .figures import new_figure, save, stem_colors
from .statistics import STAGES, completed
from .studies import Study, stem_labels

__all__ = ["stage_costs", "stage_cost_lines", "write_stage_roofline"]

_COLUMNS = ["flops_fwd", "bytes_moved", "ms_fwd"]
CAPTION = ("Per stage, forward: bytes moved (a lower bound: each layer's input, weights and output once) and "
           "arithmetic intensity (FLOPs per byte), means over seeds; the roofline places each stage by its "
           "intensity and achieved FLOP/s under the device's calibrated ceilings (`profiler/calibrate.py`).")


def stage_costs(study: Study) -> pd.DataFrame:
    """One row per stem and stage: mean forward FLOPs, bytes and ms over the stem's completed runs with a
    layers table, the stage's intensity and achieved GFLOP/s, and the runs' mean peaks."""
    labels = stem_labels(study.runs)
    rows = []
    for run in completed(study.runs):
        layers = run.layers
        if layers is None or not {"group", *_COLUMNS[:2]} <= set(layers.columns):
            continue
        g = layers.assign(ms_fwd=layers["ms_fwd"] if "ms_fwd" in layers else math.nan)
        sums = g.groupby("group", sort=False)[_COLUMNS].sum(min_count=1)
        totals = run.record.get("profile_totals") or {}
        for stage, r in sums.iterrows():
            rows.append({"stem": labels[id(run)], "stage": stage, **r.to_dict(),
                         "peak_gflops_s": 1e3 * totals.get("peak_tflops", math.nan),
                         "peak_gbytes_s": totals.get("peak_gbps", math.nan)})
    if not rows:
        return pd.DataFrame(columns=["stem", "stage", *_COLUMNS, "intensity", "gflops_s", "peak_gflops_s", "peak_gbytes_s"])
    means = pd.DataFrame(rows).groupby(["stem", "stage"], sort=False).mean().reset_index()
    means["intensity"] = means["flops_fwd"] / means["bytes_moved"]
    means["gflops_s"] = means["flops_fwd"] / means["ms_fwd"] / 1e6
    return means


def _stage_order(stages: pd.Series) -> list[str]:
    seen = list(dict.fromkeys(stages))
    return [s for s in STAGES if s in seen] + [s for s in seen if s not in STAGES]


def stage_cost_table(costs: pd.DataFrame, order: list[str]) -> str:
    stages = _stage_order(costs["stage"])
    by = costs.set_index(["stem", "stage"])
    rows = [[f"`{stem}`"] + [(f"{by.at[(stem, s), 'bytes_moved'] / 1e6:,.1f} MB, {by.at[(stem, s), 'intensity']:.3g}"
                              if (stem, s) in by.index else "–") for s in stages]
            for stem in order if stem in set(costs["stem"])]
    return pd.DataFrame(rows, columns=["stem", *stages]).to_markdown(index=False, colalign=["left"] + ["right"] * len(stages))


def write_stage_roofline(study: Study, order: list[str], out: Path) -> dict[str, str]:
    """{'stage_roofline': file name} when the runs were timed against calibrated peaks, else {}."""
    costs = stage_costs(study)
    timed = costs[np.isfinite(costs["gflops_s"].astype(float)) & np.isfinite(costs["peak_gflops_s"].astype(float))]
    if not len(timed):
        return {}
    fig, axes = new_figure(1, 1, (9.0, 5.5))
    ax = axes[0, 0]
    peak_f, peak_b = timed["peak_gflops_s"].mean(), timed["peak_gbytes_s"].mean()
    xs = np.logspace(math.log10(timed["intensity"].min() / 2), math.log10(max(timed["intensity"].max(), peak_f / peak_b) * 2), 200)
    ax.plot(xs, np.minimum(peak_f, xs * peak_b), color="black", lw=1.2, label=f"ceilings: {peak_f:.0f} GFLOP/s, {peak_b:.0f} GB/s")
    colors, markers = stem_colors([s for s in order if s in set(timed["stem"])]), dict(zip(_stage_order(timed["stage"]), "osD^vP*X"))
    for stem in [s for s in order if s in colors]:
        d = timed[timed["stem"] == stem]
        for _, r in d.iterrows():
            ax.scatter(r["intensity"], r["gflops_s"], color=colors[stem], marker=markers[r["stage"]], s=30, zorder=3)
        ax.plot(d["intensity"], d["gflops_s"], color=colors[stem], lw=0.6, alpha=0.5, label=stem)
    for stage, m in markers.items():
        ax.scatter([], [], marker=m, color="0.3", label=stage)
    stem_points = timed[timed["stage"] == "stem"]
    labels = [ax.text(r["intensity"], r["gflops_s"], r["stem"], fontsize=7, color=colors[r["stem"]]) for _, r in stem_points.iterrows()]
    adjust_text(labels, x=stem_points["intensity"].to_numpy(float), y=stem_points["gflops_s"].to_numpy(float), ax=ax,
                arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.4})
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (forward FLOPs / byte moved)")
    ax.set_ylabel("achieved GFLOP/s (forward)")
    ax.grid(True, which="both", lw=0.3, alpha=0.5)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{study.label}: per-stage roofline (lines join a stem's stages; stem stages named)", fontsize=9)
    return {"stage_roofline": save(fig, out / f"{study.slug}_stage_roofline.png")}


def stage_cost_lines(study: Study, order: list[str], figure: str | None) -> list[str]:
    """The report's lines: the bytes and intensity table, and the per-stage roofline when there is one."""
    costs = stage_costs(study)
    if not len(costs):
        return []
    out = ["Bytes moved and arithmetic intensity (FLOP/B) per stage (forward, per step):", "",
           stage_cost_table(costs, order), ""]
    if figure:
        out += [f"![stage roofline]({figure})", ""]
    return out + [CAPTION, ""]
