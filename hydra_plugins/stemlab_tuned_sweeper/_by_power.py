"""The final stage with seeds chosen by power (`compare.seeds=auto`, experiments.seed_plan): the pilot's seeds
first, the plan from their paired differences with the reference (written once to `<sweep dir>/seed_plan.json`, so
a resumed study keeps it), then the seeds the plan adds. The seeds are the first ones of the sweep's seed list."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from analyze.report.comparison import DEFAULT_REFERENCE
from experiments.seed_plan import make_plan, save_plan, saved_plan

from ._protocol import Arm, Grid, ProtocolError

log = logging.getLogger("stemlab")


def check_plan_settings(compare: Any, grid: Grid) -> None:
    """compare.pilot_seeds ≤ compare.max_seeds ≤ the seeds the sweep lists, refused in one sentence otherwise."""
    pilot, cap = int(compare.pilot_seeds), int(compare.max_seeds)
    if pilot > cap:
        raise ProtocolError(f"compare.pilot_seeds={pilot} exceeds compare.max_seeds={cap}; lower the pilot or raise the cap.")
    if len(grid.seeds) < cap:
        raise ProtocolError(f"compare.seeds=auto with compare.max_seeds={cap} needs at least {cap} seeds in the sweep's "
                            f"seed list (it has {len(grid.seeds)}); sweep seed=range({cap}).")


def stem_of(arm: Arm) -> str | None:
    return next((o.split("=", 1)[1] for o in arm.overrides if o.split("=", 1)[0].lstrip("+") == "stem"), None)


def reference_arm(arms: Sequence[Arm], reference: str | None) -> Arm:
    by_stem = {stem_of(a): a for a in arms}
    name = reference or (DEFAULT_REFERENCE if DEFAULT_REFERENCE in by_stem else min(filter(None, by_stem), default=None))
    if name not in by_stem:
        raise ProtocolError(f"seeds by power compare every stem with the reference {name}, which has no final runs in "
                            f"this sweep (not swept, or its tuning failed); set compare.reference to a stem that has.")
    return by_stem[name]


def final_by_power(grid: Grid, chosen: dict[Arm, float], compare: Any, sweep_dir: Path,
                   launch: Callable[[list[list[str]]], list], accuracy: Callable[[Any], float]) -> list:
    """Launch the pilot, plan (or read the saved plan) and launch the rest; the returns of both (none when no stem
    has a usable LR: their final points' records say so)."""
    pilot, cap = int(compare.pilot_seeds), int(compare.max_seeds)
    arms = list(chosen)
    if not arms:
        return []
    jobs = [(arm, seed) for seed in grid.seeds[:pilot] for arm in arms]
    returns = launch([grid.final_overrides(arm, chosen[arm], [seed])[0] for arm, seed in jobs])
    plan = saved_plan(sweep_dir)
    if plan is None:
        acc = {(arm, seed): accuracy(r) for (arm, seed), r in zip(jobs, returns)}
        ref = reference_arm(arms, compare.reference)
        differences = [[100 * (acc[arm, s] - acc[ref, s]) for s in grid.seeds[:pilot]
                        if math.isfinite(acc[arm, s]) and math.isfinite(acc[ref, s])] for arm in arms if arm != ref]
        plan = make_plan(differences, float(compare.margin), pilot, cap)
        save_plan(sweep_dir, plan)
    log.info("tuned: %s", plan.text())
    more = [grid.final_overrides(arm, chosen[arm], [seed])[0] for seed in grid.seeds[pilot:plan.seeds] for arm in arms]
    return returns + (launch(more) if more else [])
