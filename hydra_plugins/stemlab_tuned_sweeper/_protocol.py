"""The fair protocol's rules, apart from Hydra's plumbing: which runs each stage holds, which learning rate a
point gets, what tuning.json says, and the record a point gets when no learning rate can be chosen for it.

The leading underscore keeps this module out of Hydra's plugin scan, which imports every other module under
hydra_plugins/ whenever any Hydra app starts (`--help` included): this one imports torch (through stems and
experiments), so the sweeper imports it only when a sweep starts."""
from __future__ import annotations

import itertools
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra.core.override_parser.types import Override

from experiments.lr_choice import RULE, LRChoice, NoUsableLR, choose_lr, stability
from experiments.sweep import write_failed
from stems.base import StemlabError, atomic_write

SEED = "seed"
LR = "train.lr"
TUNE_SPLIT = "data.tune_split"  # true: train on the training set minus the tuning split, validate on that split
# a stage's runs live in <sweep dir>/<stage>/<their overrides>, without the keys the stage sets (the final LR is
# left out so that a changed choice replaces the point's run instead of leaving a stale one beside it)
UNNAMED = {"tune": (TUNE_SPLIT,), "final": (TUNE_SPLIT, LR)}
SET_BY_PROTOCOL = {LR: "give the candidates as hydra.sweeper.lrs=[...]",
                   TUNE_SPLIT: "the sweeper sets it per stage (true to tune, false for the final runs)"}


class ProtocolError(StemlabError):
    """A tuned sweep's command line or grid that the protocol cannot run."""


@dataclass(frozen=True)
class Arm:
    """One point of the sweep apart from its seed: what gets one tuned learning rate."""

    overrides: tuple[str, ...]  # every override of the point but the seed, as Hydra's BasicSweeper spells them
    swept: tuple[tuple[str, str], ...]  # (key, value) of the swept ones: the arm's name in tuning.json

    def name(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.swept) or "all"


@dataclass(frozen=True)
class TuneJob:
    arm: Arm
    lr: float
    seed: int

    def overrides(self) -> list[str]:
        return [*self.arm.overrides, f"{SEED}={self.seed}", f"{LR}={self.lr!r}", f"{TUNE_SPLIT}=true"]


@dataclass(frozen=True)
class Grid:
    """The sweep's points (arms x seeds, as Hydra's basic sweeper expands them) and the tuning grid."""

    arms: list[Arm]
    seeds: list[str]  # the final runs' seed overrides ("seed=0", ...); empty: the config's seed
    lrs: list[float]  # ascending: ties go to the first, the smaller learning rate
    tune_seeds: list[int]

    @classmethod
    def from_overrides(cls, overrides: Sequence[Override], lrs: Sequence[float], tune_seeds: Sequence[int]) -> Grid:
        lrs, tune_seeds = [float(lr) for lr in lrs], [int(s) for s in tune_seeds]
        if not lrs or any(not math.isfinite(lr) or lr <= 0 for lr in lrs) or len(set(lrs)) < len(lrs):
            raise ProtocolError(f"hydra.sweeper.lrs={lrs} is not a list of distinct positive learning rates; "
                                "give one, e.g. hydra.sweeper.lrs=[0.001,0.004,0.016].")
        if not tune_seeds:
            raise ProtocolError("hydra.sweeper.tune_seeds is empty; give at least one seed, e.g. hydra.sweeper.tune_seeds=[0].")
        choices: dict[str, list[str]] = {}  # the key as written (+key, key) -> its values; the last one wins
        names: dict[str, str] = {}
        swept: set[str] = set()
        for o in overrides:
            key = o.get_key_element()
            if o.key_or_group in SET_BY_PROTOCOL:
                raise ProtocolError(f"{o.input_line} cannot be given to the tuned sweeper: "
                                    f"{SET_BY_PROTOCOL[o.key_or_group]}.")
            if o.is_sweep_override():
                if not o.is_discrete_sweep():
                    raise ProtocolError(f"{o.input_line} is not a list of values; the tuned sweeper sweeps "
                                        "lists (a,b,c), range() and glob() only.")
                choices[key], names[key] = list(o.sweep_string_iterator()), o.key_or_group
                swept.add(key)
            else:
                choices[key], names[key] = [o.get_value_element_as_str()], o.key_or_group
        seed_key = next((k for k, name in names.items() if name == SEED), None)
        seeds = [f"{seed_key}={v}" for v in choices.pop(seed_key)] if seed_key else []
        arms = [Arm(overrides=tuple(f"{k}={v}" for k, v in zip(choices, values)),
                    swept=tuple((k, v) for k, v in zip(choices, values) if k in swept))
                for values in itertools.product(*choices.values())]
        return cls(arms=arms, seeds=seeds, lrs=sorted(lrs), tune_seeds=tune_seeds)

    def tune_jobs(self) -> list[TuneJob]:
        """Stage 1: every arm at every learning rate and tuning seed, on the tuning split."""
        return [job for arm in self.arms for lr in self.lrs for job in self.tune_jobs_at(arm, lr)]

    def tune_jobs_at(self, arm: Arm, lr: float) -> list[TuneJob]:
        """One arm at one learning rate over the tuning seeds (also for a learning rate the grid extended to)."""
        return [TuneJob(arm, lr, seed) for seed in self.tune_seeds]

    def final_overrides(self, arm: Arm, lr: float | None, seeds: Sequence[str] | None = None) -> list[list[str]]:
        """Stage 2: the arm's points over the seeds (all, or `seeds` of them) at `lr` (None: without one, for a
        skipped point's record)."""
        lr_override = [f"{LR}={lr!r}"] if lr is not None else []
        return [[*arm.overrides, *([seed] if seed else []), *lr_override, f"{TUNE_SPLIT}=false"]
                for seed in (self.seeds if seeds is None else seeds) or [None]]


def mean_accuracy(accuracies: Sequence[float]) -> float:
    """The mean over tuning seeds; NaN when any seed failed or diverged (an LR unstable on one seed is unusable)."""
    return statistics.fmean(accuracies) if all(math.isfinite(a) for a in accuracies) else math.nan


@dataclass(frozen=True)
class TuneResult:
    job: TuneJob
    accuracy: float  # NaN: the run failed or diverged
    run_dir: str  # relative to the sweep directory
    wall_s: float = math.nan  # the run's wall time from its record (NaN: not recorded)


def seed_table(arm_lrs: dict[Arm, list[float]], results: Sequence[TuneResult]) -> dict[Arm, list[list[float]]]:
    """Per arm, the tuning accuracy at each of its learning rates (rows) and tuning seeds (columns, ascending);
    NaN where a run failed, diverged or is missing."""
    accuracy = {(r.job.arm, r.job.lr, r.job.seed): r.accuracy for r in results}
    seeds = sorted({r.job.seed for r in results})
    return {arm: [[accuracy.get((arm, lr, s), math.nan) for s in seeds] for lr in lrs] for arm, lrs in arm_lrs.items()}


def check_bounds(bounds: Sequence[float], lrs: Sequence[float]) -> None:
    """lr_bounds must be (lowest, highest) positive learning rates around the grid."""
    if len(bounds) != 2 or not 0 < bounds[0] <= min(lrs) <= max(lrs) <= bounds[1]:
        raise ProtocolError(f"hydra.sweeper.lr_bounds={list(bounds)} is not [lowest, highest] around the grid {sorted(lrs)}; "
                            "give two positive learning rates that enclose it, e.g. hydra.sweeper.lr_bounds=[0.0001,0.1].")


def extend_grid(lrs: Sequence[float], accuracies: Sequence[Sequence[float]], bounds: Sequence[float]) -> list[float]:
    """The learning rates to try next (per LR of `lrs`, ascending, the accuracy at each tuning seed): at each edge
    of the grid that the plateau reaches (its extent unknown there), one more step of the grid's own ratio, unless
    it would leave `bounds` (lowest, highest); none when the plateau is inside (or no LR is usable, or the grid has
    one LR and so no step)."""
    if len(lrs) < 2:
        return []
    try:
        edges, (lo, hi) = choose_lr(lrs, accuracies).plateau_edges, bounds
    except NoUsableLR:
        return []
    below, above = float(f"{lrs[0] * lrs[0] / lrs[1]:.6g}"), float(f"{lrs[-1] * lrs[-1] / lrs[-2]:.6g}")
    return ([below] if "lowest" in edges and below >= lo * (1 - 1e-9) else []) + \
        ([above] if "highest" in edges and above <= hi * (1 + 1e-9) else [])


def tuning_record(grid: Grid, results: Sequence[TuneResult], arm_lrs: dict[Arm, list[float]],
                  choices: dict[Arm, LRChoice | None], errors: dict[Arm, str], bounds: Sequence[float]) -> dict[str, Any]:
    """tuning.json: the grid and its bounds, every tuning run (with its wall time: the tuning's cost), each arm's
    learning rates (the grid plus its extensions), mean and spread of accuracy per LR, and its chosen LR (or why
    none) with the plateau, the grid edges the choice and the plateau reach, the seeds' noise and the choice's
    stability."""
    def finite(x: float | None) -> float | None:
        return x if x is not None and math.isfinite(x) else None

    seeds = seed_table(arm_lrs, results)

    def spread(accs: list[float]) -> float | None:  # sample SD over the tuning seeds
        return finite(statistics.stdev(accs)) if len(accs) > 1 and all(math.isfinite(a) for a in accs) else None

    def choice(arm: Arm) -> dict[str, Any]:
        c = choices.get(arm)
        if c is None:
            return {"chosen_lr": None, "plateau": None, "edge": None, "plateau_edges": None, "noise_sd": None,
                    "stability": None}
        return {"chosen_lr": c.lr, "plateau": list(c.plateau), "edge": c.edge, "plateau_edges": list(c.plateau_edges),
                "noise_sd": c.noise_sd, "stability": stability(arm_lrs[arm], seeds[arm])}

    return {
        "objective": "valid_acc on the tuning split (data.tune_split=true) at each of tune_seeds; the choice: " + RULE
                     + "; while the plateau reaches an edge of an arm's grid, the grid extends one step there (within lr_bounds)",
        "lrs": grid.lrs, "lr_bounds": list(bounds), "tune_seeds": grid.tune_seeds,
        "wall_s": sum(r.wall_s for r in results if math.isfinite(r.wall_s)),
        "arms": [{"name": arm.name(), "swept": dict(arm.swept), "lrs": arm_lrs[arm], **choice(arm),
                  "error": errors.get(arm), "mean_acc": [finite(mean_accuracy(accs)) for accs in seeds[arm]],
                  "sd_acc": [spread(accs) for accs in seeds[arm]],
                  "runs": [{"lr": r.job.lr, "seed": r.job.seed, "valid_acc": finite(r.accuracy), "dir": r.run_dir,
                            "wall_s": finite(r.wall_s)} for r in results if r.job.arm == arm]}
                 for arm in grid.arms],
    }


def write_tuning(path: Path, record: dict[str, Any]) -> Path:
    return atomic_write(path, json.dumps(record, indent=2, allow_nan=False))


def write_skipped(out_dir: Path, config: dict[str, Any], error: NoUsableLR, started: float) -> Path:
    """The `failed` record of a final point whose arm has no usable learning rate (call inside `except`)."""
    config["train"]["lr"] = None  # none was chosen
    return write_failed(out_dir, config, error, started)
