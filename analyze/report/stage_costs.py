"""Bytes moved and arithmetic intensity per stage, for a study report: a table beside the FLOPs → time table and a
per-stage roofline (one point per stem and stage, achieved forward FLOP/s against the runs' calibrated peaks).

From each run's per-layer profile (layers.csv: ``group``, ``flops_fwd``, ``bytes_moved``, ``ms_fwd``), summed per
stage, then averaged over the stem's completed runs; a stage's intensity is its FLOPs over its bytes."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from profiler.figure_files import label_points

from .figures import load_note, new_figure, save, stem_colors
from .statistics import STAGES, completed
from .studies import Study, stem_labels
from .utilisation import WITHHELD, utilisation

__all__ = ["stage_costs", "stage_cost_lines", "write_stage_roofline"]

_COLUMNS = ["flops_fwd", "bytes_moved", "ms_fwd"]
CAPTION = ("Per stage, forward: bytes moved (a lower bound: each layer's input, weights and output once) and "
           "arithmetic intensity (FLOPs per byte), means over seeds.")
ROOFLINE_CAPTION = ("The roofline places each stage by its intensity and achieved FLOP/s, one panel per precision, under "
                    "the ceilings its runs recorded: the device's calibrated peaks in that precision "
                    "(`profiler/calibrate.py`: a best of a few runs, cached per device, precision and torch version; "
                    "dashed and not called ceilings where the MFU note withholds them). A "
                    "calibration is one measurement on a possibly busy machine, so another study's calibration of the "
                    "same CPU (the layer-shape study's, say) can differ: compare stages under one calibration, not "
                    "across studies.")


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
        precision = str((run.record.get("hardware") or {}).get("precision", "?"))
        for stage, r in sums.iterrows():
            rows.append({"stem": labels[id(run)], "precision": precision, "stage": stage, **r.to_dict(),
                         "peak_gflops_s": 1e3 * totals.get("peak_tflops", math.nan),
                         "peak_gbytes_s": totals.get("peak_gbps", math.nan)})
    if not rows:
        return pd.DataFrame(columns=["stem", "precision", "stage", *_COLUMNS, "intensity", "gflops_s", "peak_gflops_s", "peak_gbytes_s"])
    means = pd.DataFrame(rows).groupby(["stem", "precision", "stage"], sort=False).mean().reset_index()
    means["intensity"] = means["flops_fwd"] / means["bytes_moved"]
    means["gflops_s"] = means["flops_fwd"] / means["ms_fwd"] / 1e6
    return means


def _stage_order(stages: pd.Series) -> list[str]:
    seen = list(dict.fromkeys(stages))
    return [s for s in STAGES if s in seen] + [s for s in seen if s not in STAGES]


def stage_cost_table(costs: pd.DataFrame, order: list[str]) -> str:
    """One row per stem (per stem and precision where a stem's runs ran in several)."""
    stages = _stage_order(costs["stage"])
    by = costs.set_index(["stem", "precision", "stage"])
    rows = []
    for stem in [s for s in order if s in set(costs["stem"])]:
        precisions = list(dict.fromkeys(costs.loc[costs["stem"] == stem, "precision"]))
        for p in precisions:
            rows.append([f"`{stem}`" + (f" ({p})" if len(precisions) > 1 else "")]
                        + [(f"{by.at[(stem, p, s), 'bytes_moved'] / 1e6:,.1f} MB, {by.at[(stem, p, s), 'intensity']:.3g}"
                            if (stem, p, s) in by.index else "–") for s in stages])
    return pd.DataFrame(rows, columns=["stem", *stages]).to_markdown(index=False, colalign=["left"] + ["right"] * len(stages))


def write_stage_roofline(study: Study, order: list[str], out: Path) -> dict[str, str]:
    """{'stage_roofline': file name} when the runs were timed against calibrated peaks, else {}: one panel per
    precision under that precision's calibrated ceilings (each run records the peaks it was measured against)."""
    costs = stage_costs(study)
    timed = costs[np.isfinite(costs["gflops_s"].astype(float)) & np.isfinite(costs["peak_gflops_s"].astype(float))]
    if not len(timed):
        return {}
    precisions = list(dict.fromkeys(timed["precision"]))
    runs = completed(study.runs)
    untrusted = utilisation(runs, {id(r): r.stem for r in runs}).withheld  # peaks the MFU note shows too low
    too_low = {str((r.record.get("hardware") or {}).get("precision", "?")) for r in runs if id(r) in untrusted}
    fig, axes = new_figure(1, len(precisions), (6.2 * len(precisions) + 1.6, 5.2), sharey=True)
    colors = stem_colors([s for s in order if s in set(timed["stem"])])
    markers = dict(zip(_stage_order(timed["stage"]), "osD^vP*X"))
    for ax, precision in zip(axes[0], precisions):
        d = timed[timed["precision"] == precision]
        _ceilings(ax, d, precision in too_low)
        for stem in [s for s in order if s in set(d["stem"])]:
            ds = d[d["stem"] == stem]
            ax.plot(ds["intensity"], ds["gflops_s"], color=colors[stem], lw=0.6, alpha=0.5)
            for _, r in ds.iterrows():
                ax.scatter(r["intensity"], r["gflops_s"], color=colors[stem], marker=markers[r["stage"]], s=30, zorder=3)
        stem_points = d[d["stage"] == "stem"]
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (forward FLOPs / byte moved)")
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title(f"{precision}: {', '.join(sorted(set(d['stem'])))}", fontsize=8)
    axes[0, 0].set_ylabel("achieved GFLOP/s (forward)")
    handles = [axes[0, 0].scatter([], [], marker=m, color="0.3", label=stage) for stage, m in markers.items()]
    handles += [axes[0, 0].plot([], [], color=c, label=s)[0] for s, c in colors.items()]
    fig.legend(handles=handles, fontsize=7, loc="outside right upper")
    for ax, precision in zip(axes[0], precisions):  # once the legend and every panel take their room
        stem_points = timed[(timed["precision"] == precision) & (timed["stage"] == "stem")]
        label_points(ax, stem_points["intensity"].to_numpy(float), stem_points["gflops_s"].to_numpy(float),
                     list(stem_points["stem"]), [colors[s] for s in stem_points["stem"]])
    title = (f"{study.label}: per-stage roofline (lines join a stem's stages; each stem's stem stage named). "
             "Ceilings: the calibration recorded in these runs (profiler/calibrate.py), per precision"
             + ("; dashed where too low to be one (§, the MFU note)" if too_low else "") + f"; {load_note(study.runs)}")
    fig.suptitle(textwrap.fill(title, 78), fontsize=9)  # wrapped: one long line ran past the figure and the legend
    return {"stage_roofline": save(fig, out / f"{study.slug}_stage_roofline.png")}


def _ceilings(ax, d: pd.DataFrame, too_low: bool) -> None:
    """The precision's two ceilings, named with their numbers (and how many calibrations, when runs differ); dashed
    and named as no ceiling where the report withholds MFU against these runs' peak (utilisation.py: measured too
    low, under load, or at an unrecorded load)."""
    peak_f, peak_b = d["peak_gflops_s"].mean(), d["peak_gbytes_s"].mean()
    n = len(d[["peak_gflops_s", "peak_gbytes_s"]].drop_duplicates())
    xs = np.logspace(math.log10(d["intensity"].min() / 2), math.log10(max(d["intensity"].max(), peak_f / peak_b) * 2), 200)
    what = f"calibrated peaks ({WITHHELD.strip()} not trusted as ceilings, see the MFU note)" if too_low else "ceilings"
    ax.plot(xs, np.minimum(peak_f, xs * peak_b), color="0.5" if too_low else "black", lw=1.2, ls="--" if too_low else "-",
            label=f"{what}: {peak_f:.0f} GFLOP/s, {peak_b:.0f} GB/s" + (f" (mean of {n} calibrations)" if n > 1 else ""))


def stage_cost_lines(study: Study, order: list[str], figure: str | None) -> list[str]:
    """The report's lines: the bytes and intensity table, and the per-stage roofline when there is one."""
    costs = stage_costs(study)
    if not len(costs):
        return []
    out = ["Bytes moved and arithmetic intensity (FLOP/B) per stage (forward, per step):", "",
           stage_cost_table(costs, order), ""]
    if figure:
        return out + [f"![stage roofline]({figure})", "", f"{CAPTION} {ROOFLINE_CAPTION}", ""]
    return out + [CAPTION, ""]
