"""Model FLOPs utilisation (MFU) in the report, only where it is one.

A run's MFU is its training FLOPs per image × its training img/s over the peak FLOP/s measured on its device at its
precision and thread count (`hardware.peak_flops_per_s`, profiler/calibrate.py). That peak is an achieved one, the
best of a few kernels timed alone, so a training step cannot beat it: a run that did proves the peak was measured too
low (other work on the machine slows the calibration), and every MFU against that same peak is overstated. Such
MFUs are withheld, and so are those against a peak measured on a loaded machine or whose load was not recorded
(`hardware.peak_load`, records before it): the record lacks what tells the peak true."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from experiments.sanity import loaded

from .data import Run

WITHHELD = " §"  # beside an MFU cell whose runs' peak cannot be trusted; the note under the details table says why


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def peak_of(run: Run) -> float:
    """The peak FLOP/s the run measured itself against (NaN: an older record without one)."""
    return _number((run.record.get("hardware") or {}).get("peak_flops_per_s"))


def achieved(run: Run) -> float:
    """The training FLOP/s the run reached: its training FLOPs per image × its training img/s."""
    return run.metric("flops_train_per_image") * run.metric("train_img_s")


@dataclass
class Utilisation:
    """Each run's MFU (NaN where it has none or it is withheld), the runs withheld, and the note that says why."""

    mfu: dict[int, float] = field(default_factory=dict)  # id(run) → MFU
    withheld: set[int] = field(default_factory=set)      # id(run) of the runs whose MFU is withheld
    notes: list[str] = field(default_factory=list)


def utilisation(runs: list[Run], labels: dict[int, str]) -> Utilisation:
    """The MFU of `runs` (a study's completed ones; `labels`: their stems' labels by id), with a note per peak that
    cannot be trusted: one a run beat (named with the figures), else one measured on a loaded machine or without its
    load recorded."""
    out = Utilisation()
    by_peak: dict[float, list[Run]] = {}
    for run in runs:
        by_peak.setdefault(peak_of(run), []).append(run)
    for peak, group in by_peak.items():
        for run in group:
            out.mfu[id(run)] = achieved(run) / peak if math.isfinite(peak) and peak > 0 else math.nan
        if not math.isfinite(peak):
            continue
        fastest = max(group, key=lambda r: achieved(r) if math.isfinite(achieved(r)) else -math.inf)
        hardware = fastest.record.get("hardware") or {}
        threads = hardware.get("threads", "?")
        measured = (f"the peak of {len(group)} run{'s' * (len(group) != 1)} ({peak / 1e9:.1f} GFLOP/s, "
                    f"{hardware.get('precision', '?')}, {threads} thread{'s' * (threads != 1)})")
        loads = [(r.record.get("hardware") or {}).get("peak_load") for r in group]
        if achieved(fastest) > peak:
            why = (f"{measured} is below the {achieved(fastest) / 1e9:.1f} GFLOP/s that `{labels[id(fastest)]}` "
                   f"reached in training (seed {fastest.seed}), so it was measured too low and every utilisation "
                   f"against it is overstated (`{labels[id(fastest)]}`'s would read {100 * achieved(fastest) / peak:.1f} %)")
        elif any(loaded(load) for load in loads):
            why = f"{measured} was measured on a loaded machine (more runnable processes than cores), so it is too low"
        elif not all(isinstance(load, dict) for load in loads):
            why = (f"the records do not say how loaded the machine was when {measured} was measured (older records), "
                   "and one measured on a busy machine is too low")
        else:
            continue
        out.withheld |= {id(r) for r in group}
        out.notes.append(f"{WITHHELD.strip()} MFU withheld: {why}; new runs measure the peak again on a machine quieter "
                         "than it was then (profiler/calibrate.py).")
    for key in out.withheld:
        out.mfu[key] = math.nan
    return out
