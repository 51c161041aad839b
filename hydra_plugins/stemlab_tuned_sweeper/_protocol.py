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


class NoUsableLR(StemlabError):
    """Every learning rate of the grid failed or diverged on the tuning split for one point."""


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
        return [TuneJob(arm, lr, seed) for arm in self.arms for lr in self.lrs for seed in self.tune_seeds]

    def final_overrides(self, arm: Arm, lr: float | None) -> list[list[str]]:
        """Stage 2: the arm's points over the seeds at `lr` (None: without one, for a skipped point's record)."""
        lr_override = [f"{LR}={lr!r}"] if lr is not None else []
        return [[*arm.overrides, *([seed] if seed else []), *lr_override, f"{TUNE_SPLIT}=false"]
                for seed in self.seeds or [None]]


def mean_accuracy(accuracies: Sequence[float]) -> float:
    """The mean over tuning seeds; NaN when any seed failed or diverged (an LR unstable on one seed is unusable)."""
    return statistics.fmean(accuracies) if all(math.isfinite(a) for a in accuracies) else math.nan


def choose_lr(lrs: Sequence[float], accuracies: Sequence[float]) -> float:
    """The learning rate with the highest tuning accuracy; ties go to the smaller LR, NaN is never chosen."""
    usable = [(acc, lr) for lr, acc in zip(lrs, accuracies) if math.isfinite(acc)]
    if not usable:
        raise NoUsableLR(f"no learning rate of {list(lrs)} gave a tuning accuracy (every tuning run failed or "
                         "diverged, see their records under tune/); fix them or change hydra.sweeper.lrs, then re-run.")
    best = max(acc for acc, _ in usable)
    return min(lr for acc, lr in usable if acc == best)


@dataclass(frozen=True)
class TuneResult:
    job: TuneJob
    accuracy: float  # NaN: the run failed or diverged
    run_dir: str  # relative to the sweep directory


def accuracy_table(grid: Grid, results: Sequence[TuneResult]) -> dict[Arm, list[float]]:
    """Per arm, the mean tuning accuracy at each learning rate of the grid (in grid order)."""
    by_point: dict[tuple[Arm, float], list[float]] = {}
    for r in results:
        by_point.setdefault((r.job.arm, r.job.lr), []).append(r.accuracy)
    return {arm: [mean_accuracy(by_point[arm, lr]) for lr in grid.lrs] for arm in grid.arms}


def tuning_record(grid: Grid, results: Sequence[TuneResult], table: dict[Arm, list[float]],
                  chosen: dict[Arm, float | None], errors: dict[Arm, str]) -> dict[str, Any]:
    """tuning.json: the grid, every tuning run, each arm's mean accuracy per LR and its chosen LR (or why none)."""
    def finite(x: float) -> float | None:
        return x if math.isfinite(x) else None

    return {
        "objective": "valid_acc on the tuning split (data.tune_split=true), mean over tune_seeds; "
                     "the highest wins, ties go to the smaller lr, a failed or diverged run is never chosen",
        "lrs": grid.lrs, "tune_seeds": grid.tune_seeds,
        "arms": [{"name": arm.name(), "swept": dict(arm.swept), "chosen_lr": chosen.get(arm),
                  "error": errors.get(arm), "mean_acc": [finite(a) for a in table[arm]],
                  "runs": [{"lr": r.job.lr, "seed": r.job.seed, "valid_acc": finite(r.accuracy), "dir": r.run_dir}
                           for r in results if r.job.arm == arm]}
                 for arm in grid.arms],
    }


def write_tuning(path: Path, record: dict[str, Any]) -> Path:
    return atomic_write(path, json.dumps(record, indent=2, allow_nan=False))


def write_skipped(out_dir: Path, config: dict[str, Any], error: NoUsableLR, started: float) -> Path:
    """The `failed` record of a final point whose arm has no usable learning rate (call inside `except`)."""
    config["train"]["lr"] = None  # none was chosen
    return write_failed(out_dir, config, error, started)
