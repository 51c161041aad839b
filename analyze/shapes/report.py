"""``shapes.md``: the measured rows of ``shapes.csv`` as tables (every figure in them comes from the rows)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .families import FAMILIES, LADDER

__all__ = ["render"]

METHOD = """Each layer is a bias-free conv fed by a one-parameter layer whose output needs a gradient and is already
in the run's precision, as inside a network: its backward computes the input gradient and the weight
gradient (2× the forward FLOPs by the profiler's rule, `profiler/rules.py`). Per layer, the cost
profiler (`profiler.profile_model`) counts the FLOPs (torch's `FlopCounterMode` formulas) and the
bytes moved (a lower bound, each tensor touched once: forward = input + weights + output; backward =
output gradient + input + weights read, input and weight gradients written), and times the forward and
the backward under `torch.profiler` (median of the timed steps; spread = first–third quartile). Achieved
FLOP/s = FLOPs / median time; the share of peak is against the device's calibrated peak
(`profiler/calibrate.py`: the best of a large matmul and two CNN convs in the same precision and
thread count). bf16 runs under autocast, as training does, so the weights are cast each step
(inside the layer's time)."""

CANNOT_SHOW = """- The allocator: on the CPU the layers are timed as a run trains them, with freed memory kept for reuse
  (the allocator named above; `experiments/allocator.py`). With glibc's defaults a block larger than its mmap
  threshold (at most 32 MiB) is handed back to the operating system and page-faulted in again every step
  (`benchmarks/fresh_activation.py`), which slows the big maps at large batches several-fold:
  `STEMLAB_KEEP_FREED_MEMORY=0` measures that way. A GPU's caching allocator keeps its blocks, as here.
- One machine, one library build (oneDNN through PyTorch) and one thread count: another CPU, a GPU, or
  other kernels can rank the shapes differently (the GPU run of the same command is another issue's).
- Single layers in isolation: inside a network, caches carry activations from layer to layer and
  norms and activations (memory-bound, element-wise) add time this experiment leaves out.
- The machine was shared: absolute figures move with its load (recorded above); ratios within this
  run are firmer than the absolute figures."""


def _f(v: float, digits: int = 1) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.{digits}f}"


def _g(v: float) -> str:
    """A rate or ratio to two significant figures below 10 (0.41, 3.2), whole above (45, 1,327)."""
    return _f(v, 0) if isinstance(v, float) and not math.isnan(v) and abs(v) >= 10 else ("–" if math.isnan(v) else f"{v:.2g}")


def _ms(r: pd.Series, d: str) -> str:
    if r["status"] != "timed":
        return "–"
    return f"{_f(r[f'ms_{d}'], 2)} ({_f(r[f'ms_{d}_q1'], 2)}–{_f(r[f'ms_{d}_q3'], 2)})"


def _shape(r: pd.Series) -> str:
    return f"{r['size']}²×{r['channels']} → {r['size_out']}²×{r['channels_out']}"


def _variant(r: pd.Series) -> str:
    return f"{r['precision']} {r['memory_format']}"


def _md(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, colalign=["left"] + ["right"] * (frame.shape[1] - 1))


def family_table(rows: pd.DataFrame, family: str, batch: int) -> str:
    d = rows[(rows["family"] == family) & (rows["batch"] == batch)].sort_values(["size", "precision"], ascending=[False, True])
    return _md(pd.DataFrame([{
        "shape": _shape(r), "run": _variant(r), "MFLOPs fwd": _f(r["flops_fwd"] / 1e6, 0),
        "MB fwd / bwd": f"{_f(r['bytes_fwd'] / 1e6)} / {_f(r['bytes_bwd'] / 1e6)}",
        "FLOP/B fwd": _f(r["intensity_fwd"]), "ms fwd (quartiles)": _ms(r, "fwd"), "ms bwd (quartiles)": _ms(r, "bwd"),
        "GFLOP/s fwd / bwd": f"{_g(r['gflops_fwd_s'])} / {_g(r['gflops_bwd_s'])}",
        "% of peak fwd / bwd": f"{_f(100 * r['peak_share_fwd'], 0)} / {_f(100 * r['peak_share_bwd'], 0)}",
    } for _, r in d.iterrows()]))


def ends_table(rows: pd.DataFrame, batch: int) -> str:
    """Per family and run: achieved forward FLOP/s on every rung, and the time of the many-filter end
    (the smallest map) over that of 112²×32 (the first rung after a stride-2 stem)."""
    d = rows[(rows["batch"] == batch) & (rows["status"] == "timed")]
    out = []
    for fam in FAMILIES:
        for (p, m), g in d[d["family"] == fam].groupby(["precision", "memory_format"], sort=False):
            g = g.set_index("size")
            small = g.index.min()
            ref = 112 if 112 in g.index else g.index.max()
            out.append({"family": fam, "run": f"{p} {m}",
                        **{f"GFLOP/s fwd {s}²×{c}": _g(g.at[s, "gflops_fwd_s"]) if s in g.index else "–" for c, s in LADDER},
                        "many-filter end": f"{small}²×{g.at[small, 'channels']}",
                        f"its time / {ref}²'s, fwd": _g(g.at[small, "ms_fwd"] / g.at[ref, "ms_fwd"]),
                        f"its time / {ref}²'s, bwd": _g(g.at[small, "ms_bwd"] / g.at[ref, "ms_bwd"])})
    return _md(pd.DataFrame(out)) if out else "No timed rows at this batch."


def precision_table(rows: pd.DataFrame, batch: int, base: str, other: str) -> str:
    d = rows[(rows["batch"] == batch) & (rows["status"] == "timed")]
    key = ["family", "memory_format", "size", "channels"]
    a = d[d["precision"] == base].set_index(key)
    b = d[d["precision"] == other].set_index(key)
    both = a.index.intersection(b.index)
    return _md(pd.DataFrame([{
        "family": k[0], "format": k[1], "shape": f"{k[2]}²×{k[3]}",
        f"{other} / {base} time, fwd": _g(b.at[k, "ms_fwd"] / a.at[k, "ms_fwd"]),
        f"{other} / {base} time, bwd": _g(b.at[k, "ms_bwd"] / a.at[k, "ms_bwd"]),
    } for k in both]))


def batch_table(rows: pd.DataFrame, family: str) -> str:
    d = rows[(rows["family"] == family) & (rows["status"] == "timed")]
    d = d[d["memory_format"] == d["memory_format"].iloc[0]] if len(d) else d
    table = d.pivot_table(index=["precision", "size", "channels"], columns="batch", values="gflops_fwd_s")
    table = table.sort_index(level=[0, 1], ascending=[True, False])
    return _md(pd.DataFrame([{"run": p, "shape": f"{s}²×{c}", **{f"batch {b}": _g(v) for b, v in r.items()}}
                             for (p, s, c), r in table.iterrows()]))


def _embed(figures: list[str], name: str) -> list[str]:
    return [f"![{name}]({name})"] if name in figures else []


def render(rows: pd.DataFrame, meta: dict[str, Any], command: str, figures: list[str]) -> str:
    s, batch = meta["settings"], meta["batch"]
    peaks = rows.groupby("precision", sort=False)[["peak_gflops_s", "peak_gbytes_s"]].first()
    out = [f"# Few filters on big maps, or many filters on small maps? Layer shapes on {s['device']}", "",
           f"Regenerated by `{command}`", "",
           f"Machine: {s['device_name']}, torch {s['torch']}; bf16: {meta['bf16']}"
           + (f"; allocator: {s['allocator']}" if s.get("allocator") else "") + ". "
           + ("Measured by " + "; ".join(f"{r['rows']} rows in {r['wall_s']:.0f} s at load average (1 min) "
                                         f"{r['load_before']:.1f} → {r['load_after']:.1f}" for r in meta["measured"])
              if meta["measured"] else "Measured by runs that recorded no load")
           + (f" (this run reused all {meta['reused']} rows and redrew the report in {meta['wall_s']:.0f} s)"
              if meta["reused"] == len(rows) else "") + ". "
           "Calibrated peaks: " + "; ".join(f"{p} {_f(r['peak_gflops_s'], 0)} GFLOP/s, {_f(r['peak_gbytes_s'], 0)} GB/s"
                                            for p, r in peaks.iterrows()) + ".", "",
           METHOD, "", "## Families", "",
           _md(pd.DataFrame([{"family": k, "layer": f.description, "iso-FLOP": "yes" if f.iso_flop else "no"}
                             for k, f in FAMILIES.items() if k in set(rows["family"])])), "",
           f"## Both ends of each family (batch {batch})", "", ends_table(rows, batch), ""]
    out += _embed(figures, "families.png")
    for fam in FAMILIES:
        if fam in set(rows["family"]):
            out += ["", f"### {fam}: {FAMILIES[fam].description}, batch {batch}", "", family_table(rows, fam, batch)]
    precisions = list(dict.fromkeys(rows["precision"]))
    if len(precisions) > 1:
        out += ["", f"## {precisions[1]} against {precisions[0]} (time ratio within this run, batch {batch})", "",
                precision_table(rows, batch, precisions[0], precisions[1])]
    out += ["", "## Roofline", ""] + _embed(figures, "roofline.png")
    if rows["batch"].nunique() > 1:
        out += ["", "## Batch sweep: achieved forward GFLOP/s", ""] + _embed(figures, "batch.png")
        for fam in FAMILIES:
            if fam in set(rows["family"]):
                out += ["", f"### {fam}", "", batch_table(rows, fam)]
    skipped = rows[rows["status"] != "timed"]
    if len(skipped):
        out += ["", "## Not timed", "", f"{len(skipped)} layers were counted but not timed: the time budget was spent "
                "(a larger `--budget-s` times them; re-running the same command keeps the timed rows)."]
    out += ["", "## What this cannot show", "", CANNOT_SHOW]
    over = rows[rows["peak_share_fwd"] > 1]
    if len(over):
        out += [f"- {len(over)} timed rows exceed the calibrated peak (share over 100 %): the calibration, a best of "
                "a few runs, met the same load and underestimates the peaks; compare the shapes with each other, "
                "not with the peak (`--recalibrate` on a quiet machine measures them again)."]
    return "\n".join(out) + "\n"
