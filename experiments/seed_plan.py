"""Seeds chosen by power (an internal pilot): a study trains `compare.pilot_seeds` seeds per stem, estimates from them
the spread of the paired differences (stem − reference) — their variance only, never their means — and trains as
many seeds as detect `compare.margin` with 80 % power at the study's corrected level, capped at `compare.max_seeds`.

Re-estimating the variance alone keeps the type I error near its nominal level (Wittes & Brittain 1990; Kieser &
Friede 2003): `benchmarks/seed_plan_type1.py` measures it on simulated null studies. The plan is written once to
`<sweep dir>/seed_plan.json`; a resumed study keeps it."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from statsmodels.stats.power import TTestPower

from stems.base import StemlabError, atomic_write

ALPHA, POWER = 0.05, 0.8  # the report's family-wise level (Bonferroni over its m comparisons) and target power
FILE = "seed_plan.json"


class SeedPlanError(StemlabError):
    """A seed plan that cannot be made or read; the message names the fix."""


@dataclass(frozen=True)
class SeedPlan:
    pilot: int            # seeds per stem in the pilot
    sd: float             # pooled SD of the paired differences in the pilot (accuracy points)
    df: int               # its degrees of freedom
    comparisons: int      # m: stems tested against the reference
    margin: float         # the difference to detect (accuracy points)
    needed: int | None    # seeds that reach POWER at ALPHA / m (None: no spread, any n does)
    cap: int              # compare.max_seeds
    seeds: int            # what the study trains: max(pilot, min(needed, cap))
    power: float          # the power at `seeds` if the pilot's SD is the truth

    def text(self) -> str:
        need = f"{self.needed}" if self.needed is not None else "any number (no spread)"
        capped = " (capped)" if self.needed is not None and self.needed > self.cap else ""
        return (f"Seeds by power: a pilot of {self.pilot} seeds per stem gave a pooled paired SD of {self.sd:.2f} "
                f"points ({self.df} degrees of freedom); detecting {self.margin:g} point{'s' * (self.margin != 1)} "
                f"with {POWER:.0%} power at α = {ALPHA:g}/{self.comparisons} needs {need} seeds; the study trains "
                f"{self.seeds}{capped} of at most {self.cap}, power {self.power:.0%} there.")


def pooled_sd(differences: Sequence[Sequence[float]]) -> tuple[float, int]:
    """SD of paired differences pooled over comparisons, each around its own mean (the means are not used), and its
    degrees of freedom."""
    arrays = [np.asarray(d, float) for d in differences if len(d) >= 2]
    df = sum(len(d) - 1 for d in arrays)
    if df == 0:
        raise SeedPlanError("the pilot has no comparison with 2 or more paired seeds, so the spread is unknown; "
                            "set compare.pilot_seeds to 2 or more.")
    return math.sqrt(sum(float(((d - d.mean()) ** 2).sum()) for d in arrays) / df), df


def power_at(n: int, sd: float, margin: float, comparisons: int) -> float:
    if sd == 0:
        return 1.0
    p = float(TTestPower().power(effect_size=margin / sd, nobs=n, alpha=ALPHA / comparisons, alternative="two-sided"))
    return 1.0 if math.isnan(p) else p  # the noncentral t's NaN comes where the power has saturated


def seeds_needed(sd: float, margin: float, comparisons: int, most: int = 1000) -> int:
    """The fewest seeds (≥ 2) whose paired t-test reaches POWER against `margin` at ALPHA / m (`most` + 1 when none
    up to `most` does). Searched upwards, as power rises with n: statsmodels' root finder fails on large effects, and
    the noncentral t returns NaN only where the power has long saturated, past the first n that reaches it."""
    for start in range(2, most + 1, 128):
        ns = np.arange(start, min(start + 128, most + 1))
        reached = TTestPower().power(effect_size=margin / sd, nobs=ns, alpha=ALPHA / comparisons, alternative="two-sided")
        hits = np.flatnonzero(reached >= POWER)
        if len(hits):
            return int(ns[hits[0]])
    return most + 1


def make_plan(differences: Sequence[Sequence[float]], margin: float, pilot: int, cap: int) -> SeedPlan:
    """The plan from the pilot's paired differences (one sequence per comparison, accuracy points)."""
    sd, df = pooled_sd(differences)
    m = len(differences)
    needed = seeds_needed(sd, margin, m) if sd > 0 else None
    seeds = pilot if needed is None else max(pilot, min(needed, cap))
    return SeedPlan(pilot, sd, df, m, margin, needed, cap, seeds, power_at(seeds, sd, margin, m))


def saved_plan(sweep_dir: Path) -> SeedPlan | None:
    path = Path(sweep_dir) / FILE
    if not path.exists():
        return None
    try:
        return SeedPlan(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as e:
        raise SeedPlanError(f"{path} is damaged ({type(e).__name__}); it holds the study's seed plan: restore it, or "
                            "delete it to plan again from the pilot's records.") from e


def save_plan(sweep_dir: Path, plan: SeedPlan) -> None:
    atomic_write(Path(sweep_dir) / FILE, json.dumps(asdict(plan), indent=2) + "\n")
