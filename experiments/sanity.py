"""Numbers that deserve a warning, for the run's log and the report alike: an accuracy near chance, and timings
taken on a machine busier than its cores (other processes share them, so times and img/s come out inflated)."""
from __future__ import annotations

import math
import os

# a classifier this close to guessing has not learned (much); 1.5x chance: 15 % for 10 classes
NEAR_CHANCE = 1.5


def near_chance(accuracy: float, num_classes: int | None) -> bool:
    return bool(num_classes) and math.isfinite(accuracy) and accuracy <= NEAR_CHANCE / num_classes


def machine_load() -> dict[str, float]:
    """The 1-minute load average and the cores it is compared with (what a record keeps beside its timings)."""
    return {"load_avg": round(os.getloadavg()[0], 2), "cpus": os.cpu_count() or 1}


def loaded(load: dict | None) -> bool:
    """More runnable processes than cores (on average over the last minute): the timings shared the machine."""
    return bool(load) and isinstance(load.get("load_avg"), (int, float)) and load["load_avg"] > load.get("cpus", math.inf)


def load_warning(load: dict) -> str:
    return (f"timings taken on a loaded machine (load average {load['load_avg']:.1f} on {load['cpus']} cores): "
            "ms per step and img/s are inflated; re-measure on a quiet machine before comparing them")
