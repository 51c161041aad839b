"""`hydra/sweeper=tuned`: the fair protocol in one command (issue 12 §1).

    python train.py -m +experiment=stem_study_mnist5k_tuned
    python train.py -m hydra/sweeper=tuned stem=resnet_7x7,patchify_4x4 seed=0,1,2 hydra.sweeper.lrs=[0.002,0.004,0.008]

The sweep's points are expanded as Hydra's basic sweeper does (`params` and the command line). Everything but
the seed makes an *arm* (a stem, or a stem with its parameters); each arm gets one learning rate:

1. tune: every arm x `lrs` x `tune_seeds` trains with `data.tune_split=true` (the training set minus a fixed,
   stratified tuning split; the run validates on that split, never on the validation set the report shows),
   in `<sweep.dir>/tune/<overrides>/`;
2. choose (experiments/lr_choice.py): per arm, the plateau is the LRs its tuning cannot tell from the best mean
   (within a one-sided 95 % t bound of the SD over tuning seeds; an LR whose run failed or diverged on any tuning
   seed is never on it), and the choice is the plateau's middle. While an arm's plateau reaches an edge of its
   grid, the grid extends one step there (the grid's own ratio) and tunes again, never past `lr_bounds`: a curve
   still rising or flat at the grid's top is followed, not cut. `<sweep.dir>/tuning.json` holds the grid, every
   tuning run (with its wall time: the tuning's cost), the spread over tuning seeds, and the choice with its
   plateau, the edges they reach (where the bounds stopped the grid) and its stability over resampled tuning
   seeds. An arm without a usable LR skips its final points, each with a `failed` record saying why;
3. final: every arm x seed trains at its chosen LR with `data.tune_split=false` in `<sweep.dir>/final/<overrides>/`
   (the chosen LR is left out of the directory name, so a changed choice replaces that point's run).

Both stages go through the configured launcher (basic, joblib, submitit), and every point resumes the way any
study point does (train.py skips a point whose `completed` record has the same config), so re-running the command
re-uses every finished run and re-derives the same choice from their records."""
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from omegaconf import MISSING, OmegaConf, open_dict

from experiments.hydra_private import basic_sweeper
from experiments.sweeper import LaunchingSweeper


log = logging.getLogger("stemlab")


@dataclass  # no `from __future__ import annotations` here: Hydra's plugin scanner runs this module before
class TunedSweeperConf:  # registering it in sys.modules, where dataclasses would look the string annotations up
    _target_: str = "hydra_plugins.stemlab_tuned_sweeper.tuned_sweeper.TunedSweeper"
    lrs: List[float] = MISSING  # the learning rates to try (conf/hydra/sweeper/tuned.yaml gives the default grid)
    tune_seeds: List[int] = field(default_factory=lambda: [0, 1])  # the seeds each (arm, lr) is tuned over
    # the grid extends past its edges (while the plateau reaches them) but never below/above these
    lr_bounds: List[float] = field(default_factory=lambda: [1e-4, 0.1])
    max_batch_size: Optional[int] = None  # jobs handed to the launcher at once (None: a whole stage)
    params: Optional[Dict[str, str]] = None  # the swept values, as for Hydra's basic sweeper


# the schema; conf/hydra/sweeper/tuned.yaml is the project's preset on top of it (as conf/hydra/launcher/ does)
ConfigStore.instance().store(group="hydra/sweeper", name="stemlab_tuned", node=TunedSweeperConf, provider="stemlab")


class TunedSweeper(LaunchingSweeper, basic_sweeper()):  # runs in Hydra's plugin scan: its BasicSweeper
    """Hydra's basic sweeper (point expansion, launcher set-up) with the two-stage protocol as its sweep."""

    def __init__(self, lrs: Sequence[float], tune_seeds: Sequence[int], lr_bounds: Sequence[float] = (1e-4, 0.1),
                 max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.lrs, self.tune_seeds, self.lr_bounds = list(lrs), list(tune_seeds), [float(b) for b in lr_bounds]

    def sweep(self, arguments: List[str]) -> Any:
        from . import _protocol as protocol  # imports torch: see that module's docstring
        from ._by_power import check_plan_settings, final_by_power
        from stems.base import StemlabError

        assert self.config is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        try:
            grid = protocol.Grid.from_overrides(parser.parse_overrides([*self._parse_config(), *arguments]),
                                                self.lrs, self.tune_seeds)
            protocol.check_bounds(self.lr_bounds, grid.lrs)
            by_power = self.config.compare.seeds == "auto"
            if by_power:
                check_plan_settings(self.config.compare, grid)
        except protocol.ProtocolError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        sweep_dir = self.save_sweep_config()

        results, tune_returns = [], []
        arm_lrs = {arm: list(grid.lrs) for arm in grid.arms}
        jobs = grid.tune_jobs()
        while jobs:  # the grid, then one step past each edge an arm's plateau reaches, until none does
            returns = self.launch_stage([job.overrides() for job in jobs], "tune", protocol.UNNAMED["tune"])
            results += [protocol.TuneResult(job, accuracy(r), run_dir(r, sweep_dir), wall_s(r)) for job, r in zip(jobs, returns)]
            tune_returns += returns
            table = protocol.seed_table(arm_lrs, results)
            jobs = []
            for arm in grid.arms:
                for nxt in protocol.extend_grid(arm_lrs[arm], table[arm], self.lr_bounds):
                    arm_lrs[arm] = sorted([*arm_lrs[arm], nxt])
                    jobs += grid.tune_jobs_at(arm, nxt)
        table = protocol.seed_table(arm_lrs, results)
        chosen: dict[protocol.Arm, protocol.LRChoice | None] = {}
        errors: dict[protocol.Arm, str] = {}
        for arm in grid.arms:
            try:
                chosen[arm] = protocol.choose_lr(arm_lrs[arm], table[arm])
            except protocol.NoUsableLR as e:
                chosen[arm], errors[arm] = None, f"{arm.name()}: {e}"
                for overrides in grid.final_overrides(arm, None):
                    protocol.write_skipped(*self.compose(overrides, "final", protocol.UNNAMED["final"]), e, time.perf_counter())
        protocol.write_tuning(sweep_dir / "tuning.json",
                              protocol.tuning_record(grid, results, arm_lrs, chosen, errors, self.lr_bounds))
        for arm, choice in chosen.items():  # the choice in the log, not only in tuning.json
            if choice is None:
                log.warning("tuned: %s; its final points are skipped.", errors[arm])
            else:
                log.info("tuned: %s trains at lr %g (plateau %s%s)", arm.name(), choice.lr,
                         ", ".join(f"{lr:g}" for lr in choice.plateau),
                         f"; at the {choice.edge} lr of its grid" if choice.edge else "")

        launch_final = lambda jobs: self.launch_stage(jobs, "final", protocol.UNNAMED["final"])  # noqa: E731
        usable = {arm: c.lr for arm, c in chosen.items() if c is not None}
        if by_power:
            try:
                return [tune_returns, final_by_power(grid, usable, self.config.compare, sweep_dir, launch_final, accuracy)]
            except StemlabError as e:  # no reference in the final stage, a damaged plan, no spread to plan from
                print(f"error: {e}", file=sys.stderr)
                sys.exit(2)
        return [tune_returns, launch_final([o for arm, lr in usable.items() for o in grid.final_overrides(arm, lr)])]

    def stage_overrides(self, stage: str, unnamed: Sequence[str]) -> list[str]:
        """A stage's points live in `<sweep.dir>/<stage>/<their overrides>`, without the keys the stage sets."""
        return self.folder_overrides(stage, unnamed)

    def launch_stage(self, jobs: list[list[str]], stage: str, unnamed: Sequence[str]) -> list[JobReturn]:
        """Every job of a stage through the configured launcher (none: e.g. every stem's tuning failed)."""
        return self.launch_all([[*job, *self.stage_overrides(stage, unnamed)] for job in jobs])

    def compose(self, overrides: list[str], stage: str, unnamed: Sequence[str]) -> tuple[Path, dict[str, Any]]:
        """A point's output directory and resolved task config, without running it (for a skipped point's record)."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, [*overrides, *self.stage_overrides(stage, unnamed)])
        HydraConfig.instance().set_config(cfg)  # resolves ${hydra:...} in the task config, as Hydra's run_job does
        out_dir = Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir)
        with open_dict(cfg):
            del cfg["hydra"]
        return out_dir, OmegaConf.to_container(cfg, resolve=True)


def accuracy(job: JobReturn) -> float:
    """A tuning run's return: train.py's validation accuracy (on the tuning split), NaN when it failed."""
    value = job.return_value
    return float(value) if value is not None else float("nan")


def wall_s(job: JobReturn) -> float:
    """A run's wall time from its record (a resumed run's record keeps the time it took when it ran)."""
    from experiments.record import RESULT_FILE, Unreadable, read_record

    record = read_record(Path(job.hydra_cfg.hydra.runtime.output_dir) / RESULT_FILE)
    # no record or an unreadable one: the cost is unknown, the tuning goes on
    value = None if isinstance(record, Unreadable) else record.get("wall_s")
    return float(value) if isinstance(value, (int, float)) else float("nan")


def run_dir(job: JobReturn, sweep_dir: Path) -> str:
    out = Path(job.hydra_cfg.hydra.runtime.output_dir)
    try:
        return str(out.relative_to(sweep_dir.resolve()))
    except ValueError:
        return str(out)
