"""The report's input: every result record under a directory, read through experiments.record.

A record that cannot be read (bad bytes, not JSON, not a record, a newer format) is skipped and named;
a run whose history.csv or layers.csv cannot be read is kept without that table, and the table named.
Hydra's multirun.yaml tells which (stem, seed) points a sweep asked for, in every combination of the other
settings it sweeps (e.g. context=a,b), so never-run points are named too."""
from __future__ import annotations

import itertools
import math
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob
from omegaconf import OmegaConf

import stems
from experiments.record import HISTORY_FILE, LAYERS_FILE, RESULT_FILE, Unreadable, read_record, read_table
from experiments.seed_plan import saved_plan
from stems.base import StemlabError


class ReportError(StemlabError):
    """Input the report cannot use; the message is one sentence naming the fix."""


@dataclass
class Run:
    """One point of a sweep: its record, and its per-epoch and per-layer tables when present."""

    source: str
    record: dict[str, Any]
    history: pd.DataFrame | None = None
    layers: pd.DataFrame | None = None
    sweep: str | None = None    # the sweep directory it ran in (where Hydra's multirun.yaml is), when known
    sweeper: str | None = None  # that sweep's kind: basic | tuned | space (None: unknown, e.g. a W&B run)

    @property
    def config(self) -> dict[str, Any]:
        return self.record.get("config") or {}

    @property
    def stem(self) -> str:
        return str((self.config.get("stem") or {}).get("name"))

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def lr(self) -> float:
        value = (self.config.get("train") or {}).get("lr")
        return float(value) if isinstance(value, (int, float)) else math.nan

    @property
    def tuning(self) -> bool:
        """A run of a tuned study's first stage (LR search on the tuning split carved from the training set)."""
        return (self.config.get("data") or {}).get("tune_split") is True

    @property
    def status(self) -> str:
        return str(self.record.get("status", "unknown"))

    def metric(self, key: str) -> float:
        value = (self.record.get("metrics") or {}).get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


@dataclass
class Inputs:
    runs: list[Run]
    skipped: list[tuple[str, str]] = field(default_factory=list)       # (record, why) not used
    incomplete: list[tuple[str, str]] = field(default_factory=list)    # (table, why) not used; its run is kept
    unfinished: list[str] = field(default_factory=list)                # job dirs without a record
    missing: list[tuple[str, str, Any]] = field(default_factory=list)  # (sweep dir, stem, seed) never run
    sweep_commands: list[str] = field(default_factory=list)

    def add(self, other: "Inputs") -> None:
        """Another folder's records and what its sweeps left undone, beside these."""
        for name in ("runs", "skipped", "incomplete", "unfinished", "missing", "sweep_commands"):
            getattr(self, name).extend(getattr(other, name))


def from_one(history: pd.DataFrame | None) -> pd.DataFrame | None:
    """history.csv with its epochs counted from 1, as records since 2026-12-01 count them (older ones from 0); None
    where the run wrote none."""
    if history is not None and "epoch" in history.columns and len(history) and history["epoch"].min() == 0:
        history = history.assign(epoch=history["epoch"] + 1)
    return history


def read_records(root: Path) -> Inputs:
    """Every result record under `root` (recursively), with the points its sweeps asked for and never ran."""
    if not root.is_dir():
        raise ReportError(f"{root} is not a directory; pass the sweep directory, e.g. multirun/stem_study_mnist5k.")
    inputs = Inputs(runs=[])
    for path in sorted(root.rglob(RESULT_FILE)):
        record = read_record(path)
        if isinstance(record, Unreadable):
            inputs.skipped.append((str(path), record.reason))
            continue
        run = Run(str(path.parent), record)
        for name, attr in ((HISTORY_FILE, "history"), (LAYERS_FILE, "layers")):
            table = read_table(path.parent / name)
            if isinstance(table, Unreadable):
                inputs.incomplete.append((str(table.path), table.reason))
            else:
                setattr(run, attr, from_one(table) if attr == "history" else table)
        inputs.runs.append(run)
    label_sweeps(inputs.runs, root)
    recorded = {Path(r.source).resolve() for r in inputs.runs} | {Path(p).parent.resolve() for p, _ in inputs.skipped}
    for hydra_dir in sorted(root.rglob(".hydra")):
        job = hydra_dir.parent
        if (hydra_dir / "overrides.yaml").exists() and job.resolve() not in recorded and not (job / "multirun.yaml").exists():
            inputs.unfinished.append(str(job))
    for multirun in sorted(root.rglob("multirun.yaml")):
        expected, command, settings = expected_points(multirun)
        if command:
            inputs.sweep_commands.append(command)
        runs = [r for r in inputs.runs if not r.tuning and Path(r.source).resolve().is_relative_to(multirun.parent.resolve())]
        # a sweep over other settings too (e.g. context=a,b): each (stem, seed) is asked for once per combination
        here = {(r.stem, str(r.seed), tuple(run_overrides(r.source).get(k) for k in settings)) for r in runs}
        for values in itertools.product(*settings.values()):
            where = str(multirun.parent) + (f" ({', '.join(f'{k}={v}' for k, v in zip(settings, values))})" if settings else "")
            inputs.missing += [(where, s, seed) for s, seed in expected if (s, seed, values) not in here]
    if not inputs.runs:
        why = f" ({len(inputs.skipped)} skipped, e.g. {': '.join(inputs.skipped[0])})" if inputs.skipped else ""
        raise ReportError(f"no readable result records ({RESULT_FILE}) under {root}{why}; run a sweep first "
                          "(python train.py -m +experiment=stem_study_mnist5k) or pass its directory.")
    return inputs


SWEEPERS = {"stemlab_tuned_sweeper": "tuned", "stemlab_space_sweeper": "space"}  # plugin package -> kind


def label_sweeps(runs: list[Run], root: Path) -> None:
    """Each run's sweep (the nearest folder above it holding Hydra's multirun.yaml) and that sweep's sweeper kind,
    so that the report never mixes two sweeps, nor a fixed-LR sweep with a tuned one."""
    kinds: dict[Path, str] = {}
    for multirun in root.rglob("multirun.yaml"):
        try:
            target = str(OmegaConf.load(multirun).hydra.sweeper._target_)
        except Exception:  # a damaged multirun.yaml: the sweep is still one sweep, of an unknown kind
            target = ""
        kinds[multirun.parent.resolve()] = next((k for pkg, k in SWEEPERS.items() if pkg in target), "basic")
    for run in runs:
        folder = Path(run.source).resolve()
        sweep = next((d for d in (folder, *folder.parents) if d in kinds), None)
        if sweep is not None:
            run.sweep, run.sweeper = os.path.relpath(sweep, Path.cwd()), kinds[sweep]


def expected_points(multirun_yaml: Path) -> tuple[list[tuple[str, str]], str, dict[str, list[str]]]:
    """The (stem, seed) points a sweep was asked for, from Hydra's multirun.yaml, its command line, and the other
    settings it swept with their values."""
    try:
        hydra_cfg = OmegaConf.to_container(OmegaConf.load(multirun_yaml).hydra, resolve=False)
    except Exception:  # a damaged multirun.yaml costs the list of missing points, not the report
        return [], "", {}
    points, command = sweep_points(hydra_cfg)
    plan = saved_plan(multirun_yaml.parent)  # seeds by power: the seeds past the plan were never asked for
    if plan is not None:
        seeds = list(dict.fromkeys(seed for _, seed in points))[:plan.seeds]
        points = [(s, seed) for s, seed in points if seed in seeds]
    return points, command, swept_settings(hydra_cfg)


def parsed_sweep(hydra_cfg: dict[str, Any]) -> list[Any]:
    """The sweep's overrides (the sweeper's params, then the command line's, which win as in Hydra), parsed."""
    params = hydra_cfg.get("sweeper", {}).get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(hydra_cfg.get("overrides", {}).get("task") or [])
    try:
        return OverridesParser.create().parse_overrides(lines)
    except Exception:  # Hydra's parser raises its own error types; an odd override costs only the missing list
        return []


def swept_settings(hydra_cfg: dict[str, Any]) -> dict[str, list[str]]:
    """{key: values} of every setting the sweep sweeps besides the stem and the seed (e.g. context=a,b,c)."""
    values = {}
    for o in parsed_sweep(hydra_cfg):
        if o.key_or_group not in ("stem", "seed") and o.is_sweep_override() and not isinstance(o.value(), Glob):
            values[o.key_or_group] = list(o.sweep_string_iterator())
    return values


def run_overrides(folder: str) -> dict[str, str]:
    """{key: value} of the overrides a run was launched with (Hydra's .hydra/overrides.yaml in its folder; {} where
    there is none or it cannot be read, e.g. a W&B run or copied records)."""
    try:
        overrides = OmegaConf.to_container(OmegaConf.load(Path(folder) / ".hydra" / "overrides.yaml")) or []
    except Exception:  # no Hydra folder, or a damaged one: the run is known by its record alone
        return {}
    pairs = [str(o).split("=", 1) for o in overrides if "=" in str(o)]
    return {k.lstrip("+~"): v for k, v in pairs}


def sweep_points(hydra_cfg: dict[str, Any]) -> tuple[list[tuple[str, str]], str]:
    """(stem, seed) points and command line of a sweep, from its `hydra` config (sweeper params + overrides)."""
    task = list(hydra_cfg.get("overrides", {}).get("task") or [])
    hydra_overrides = [o for o in hydra_cfg.get("overrides", {}).get("hydra") or []
                       if o.startswith(("hydra/", "hydra.launcher", "hydra.sweep"))]
    command = shlex.join(["python", "train.py", "-m", *task, *hydra_overrides])
    values: dict[str, list[str]] = {}
    for o in parsed_sweep(hydra_cfg):
        if o.key_or_group not in ("stem", "seed"):
            continue
        if isinstance(o.value(), Glob):
            values[o.key_or_group] = o.value().filter(stems.available()) if o.key_or_group == "stem" else []
        elif o.is_sweep_override():
            values[o.key_or_group] = list(o.sweep_string_iterator())
        else:
            values[o.key_or_group] = [o.get_value_element_as_str()]
    if not values.get("stem") or not values.get("seed"):
        return [], command
    return [(s, seed) for s in values["stem"] for seed in values["seed"]], command


def seeds_command(sweep: str | None, seeds: list[Any]) -> str:
    """The sweep's own command (from its multirun.yaml) with `seeds` and its folder: re-run, it adds those seeds to the
    same sweep and skips the completed points."""
    seed = "seed=" + ",".join(map(str, seeds))
    if sweep is None:  # records without Hydra's multirun.yaml (copied, or from W&B): the reader knows the command
        return f"python train.py -m <the sweep's overrides> {seed} hydra.sweep.dir=<its folder>"
    _, command, _ = expected_points(Path(sweep) / "multirun.yaml")
    kept = [a for a in shlex.split(command or "python train.py -m") if not a.startswith(("seed=", "hydra.sweep.dir="))]
    folder = os.path.abspath(sweep) if sweep.startswith("..") else sweep  # relative where it lies below the cwd
    return shlex.join([*kept, seed, f"hydra.sweep.dir={folder}"])
