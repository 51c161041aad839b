"""The report's numbers: accuracy over seeds with t confidence intervals, each stem against the study's
reference (comparison.py), the Pareto front, compute by depth, and the LR tuning curve of a tuned study."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from experiments.model import GROUPS
from experiments.sanity import loaded

from .comparison import DEFAULT_MARGIN, choose_reference, compare_with_reference, equal_time
from .data import Run
from .studies import Study, stem_labels
from .tuning import lr_choices
from .utilisation import utilisation

STAGES = list(GROUPS)  # the model's top-level children: what the per-layer tables are grouped by
TIMED = ("stem_share_time", "train_img_s", "train_ms_step", "ms_fwd")  # reported as medians over seeds


def finite(values) -> np.ndarray:
    x = np.asarray(list(values), dtype=float)
    return x[np.isfinite(x)]


def t_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the two-sided Student-t confidence interval (NaN half-width for n < 2)."""
    x = finite(values)
    if len(x) == 0:
        return math.nan, math.nan
    if len(x) < 2:
        return float(x.mean()), math.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(half)


def step_ms(run: Run) -> float:
    """Time per training step, measured by the training itself (its last epoch, batch loading included); records
    older than that measure: batch / training img/s. Never the profile's few timed steps (they give shares only)."""
    ms = run.metric("train_ms_step")
    if math.isfinite(ms):
        return ms
    img_s, bs = run.metric("train_img_s"), (run.config.get("train") or {}).get("bs")
    return 1000 * bs / img_s if isinstance(bs, (int, float)) and img_s > 0 else math.nan


def timed_under_load(run: Run) -> bool:
    """The run's timings were taken with more runnable processes than cores (experiments.sanity.loaded)."""
    return loaded((run.record.get("hardware") or {}).get("load"))


def completed(runs: list[Run]) -> list[Run]:
    return [r for r in runs if r.status == "completed" and math.isfinite(r.metric("valid_acc"))]


def accuracy_by_stem(study: Study) -> dict[str, dict[Any, float]]:
    """{stem label: {seed: final validation accuracy}} over the completed runs of the study's final stage ({} for a
    stem none of whose runs completed)."""
    labels = stem_labels(study.runs)
    out: dict[str, dict[Any, float]] = {label: {} for label in sorted(set(labels.values()))}
    for r in completed(study.runs):
        out[labels[id(r)]][r.seed] = r.metric("valid_acc")
    return out


def stem_table(study: Study) -> pd.DataFrame:
    """One row per stem: accuracy over seeds, the comparison with the reference, P(best), accuracy within the
    reference's training time, and cost metrics."""
    labels = stem_labels(study.runs)
    rows, acc_by_stem = [], accuracy_by_stem(study)
    mfu = utilisation(completed(study.runs), labels)
    for label in sorted(set(labels.values())):
        rs = [r for r in study.runs if labels[id(r)] == label]
        done = completed(rs)
        accs = acc_by_stem[label]
        mean, half = t_interval(accs.values())
        steps = finite(step_ms(r) for r in done)
        mfus = finite(mfu.mfu[id(r)] for r in done)  # a median, as the timings it is made of
        accs_seen = finite(accs.values())

        def avg(key: str) -> float:
            vals = finite(r.metric(key) for r in done)
            # timings: the median, since a busy machine slows some runs a lot and others not at all
            return (float(np.median(vals)) if key in TIMED else float(np.mean(vals))) if len(vals) else math.nan

        rows.append({"stem": label, "acc_mean": mean, "acc_ci95": half, "acc_lo": min(accs_seen, default=math.nan),
                     "acc_hi": max(accs_seen, default=math.nan), "n": len(done), "points": len(rs),
                     "not_completed": ", ".join(f"seed {r.seed}: {r.status}" for r in rs if r not in done),
                     "seeds": sorted(accs, key=str), "lr": sorted({r.lr for r in rs}), "params": avg("params"),
                     "gflops_fwd": avg("flops_fwd_per_image") / 1e9, "gflops_train": avg("flops_train_per_image") / 1e9,
                     "stem_share_flops": avg("stem_share_flops"), "stem_share_time": avg("stem_share_time"),
                     "ms_step": float(np.median(steps)) if len(steps) else math.nan,
                     "ms_lo": min(steps, default=math.nan), "ms_hi": max(steps, default=math.nan),
                     "loaded": sum(timed_under_load(r) for r in done),  # runs whose timings shared the machine
                     "epochs_trained": max((len(r.history) for r in done if r.history is not None), default=0),
                     "img_s": avg("train_img_s"), "best_acc": avg("best_valid_acc"),
                     # model FLOPs utilisation where it is one (utilisation.py); older records: NaN
                     "mfu": float(np.median(mfus)) if len(mfus) else math.nan,
                     "mfu_withheld": sum(id(r) in mfu.withheld for r in done)})
    table = pd.DataFrame(rows, columns=["stem", "acc_mean", "acc_ci95", "acc_lo", "acc_hi", "n", "points", "not_completed",
                                        "seeds", "lr", "params", "gflops_fwd", "gflops_train", "stem_share_flops",
                                        "stem_share_time", "ms_step", "ms_lo", "ms_hi", "loaded", "epochs_trained",
                                        "img_s", "best_acc", "mfu", "mfu_withheld"])
    if not len(table):  # a tuned study whose final stage has not run yet
        return table.assign(verdict="", p_best=math.nan)
    reference, _, margin = reference_of(study, table)
    table = compare_with_reference(table, acc_by_stem, reference, margin)
    histories = {label: [r.history for r in completed([r for r in study.runs if labels[id(r)] == label])
                         if r.history is not None] for label in table["stem"]}
    table = equal_time(table, histories, reference)
    return table.sort_values(["acc_mean", "stem"], ascending=[False, True], na_position="last").reset_index(drop=True)


def reference_of(study: Study, table: pd.DataFrame) -> tuple[str, str, float]:
    """The study's reference stem, where it comes from, and its equivalence margin in points: the `compare`
    setting of its most recently finished record (a re-run skips completed points, which keep the setting they
    ran under, so the newest record carries the study's current one)."""
    compare = newest_compare(study.runs)
    reference, source = choose_reference(list(table["stem"]), compare.get("reference"))
    return reference, source, float(compare.get("margin") or DEFAULT_MARGIN)


def newest_compare(runs: list[Run]) -> dict[str, Any]:
    """The `compare` setting of the most recently finished (else started) of `runs`; {} without runs."""
    runs = sorted(runs, key=lambda r: str(r.record.get("finished") or r.record.get("started") or ""))
    return (runs[-1].config.get("compare") or {}) if runs else {}


def pareto_front(cost: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both (lower cost, higher accuracy), by cost."""
    ok = [i for i in range(len(cost)) if math.isfinite(cost[i]) and math.isfinite(acc[i])]
    front = [i for i in ok if not any((cost[j] <= cost[i] and acc[j] >= acc[i]) and (cost[j] < cost[i] or acc[j] > acc[i])
                                      for j in ok)]
    return np.array(sorted(front, key=lambda i: cost[i]), dtype=int)


def run_depth_shares(layers: pd.DataFrame) -> pd.DataFrame:
    """One run's share of a training step's FLOPs and time per stage; time NaN unless every stage was timed."""
    flops = layers["flops_fwd"] + layers["flops_bwd"] if "flops_bwd" in layers else layers["flops_fwd"]
    ms = (layers["ms_fwd"] + layers["ms_bwd"] if "ms_bwd" in layers else layers["ms_fwd"]) if "ms_fwd" in layers \
        else pd.Series(math.nan, index=layers.index)
    g = pd.DataFrame({"group": layers["group"], "flops": flops, "ms": ms}).groupby("group", sort=False)
    flops, ms = g["flops"].sum(), g["ms"].sum(min_count=1)
    timed = bool(ms.notna().all()) and ms.sum() > 0
    order = [s for s in STAGES if s in flops.index] + [s for s in flops.index if s not in STAGES]
    return pd.DataFrame({"share_flops": flops / flops.sum(), "share_time": ms / ms.sum() if timed else math.nan}).reindex(order)


def depth_shares(runs: list[Run]) -> pd.DataFrame:
    """Per stage: mean, lowest and highest share of FLOPs and of time over the runs with a layers table
    (`*_lo`, `*_hi`), and how many runs timed their layers (`timed`); time shares NaN when none did."""
    frames = [run_depth_shares(r.layers) for r in runs
              if r.layers is not None and {"group", "flops_fwd"} <= set(r.layers.columns)]
    columns = ["share_flops", "share_flops_lo", "share_flops_hi", "share_time", "share_time_lo", "share_time_hi", "timed"]
    if not frames:
        return pd.DataFrame(columns=columns)
    g = pd.concat(frames).groupby(level=0, sort=False)
    out = pd.DataFrame({"share_flops": g["share_flops"].mean(), "share_flops_lo": g["share_flops"].min(),
                        "share_flops_hi": g["share_flops"].max(), "share_time": g["share_time"].mean(),
                        "share_time_lo": g["share_time"].min(), "share_time_hi": g["share_time"].max(),
                        "timed": g["share_time"].count()})
    return out[columns]


def tuning_table(study: Study) -> pd.DataFrame:
    """The tuning curve: per stem and LR, tuning-split accuracy over seeds (mean, 95 % CI half-width, SD, n),
    and `chosen`: the LR the sweeper's rule chooses from these runs (tuning.py)."""
    labels = stem_labels(study.tuning)
    rows = []
    for (stem, lr), rs in _group(study.tuning, lambda r: (labels[id(r)], r.lr)).items():
        accs = [r.metric("valid_acc") for r in completed(rs)]
        mean, half = t_interval(accs)
        sd = float(np.std(accs, ddof=1)) if len(accs) > 1 else math.nan
        rows.append({"stem": stem, "lr": lr, "acc_mean": mean, "acc_ci95": half, "acc_sd": sd, "n": len(accs),
                     "points": len(rs)})
    table = pd.DataFrame(rows, columns=["stem", "lr", "acc_mean", "acc_ci95", "acc_sd", "n", "points"]).sort_values(["stem", "lr"])
    chosen = {stem: t.choice.lr for stem, t in lr_choices(study).items() if t.choice is not None}
    table["chosen"] = [chosen.get(stem) == lr for stem, lr in zip(table["stem"], table["lr"])]
    return table.reset_index(drop=True)


def _group(runs: list[Run], key) -> dict[Any, list[Run]]:
    out: dict[Any, list[Run]] = {}
    for r in runs:
        out.setdefault(key(r), []).append(r)
    return out
