"""What stemlab's two sweepers (hydra/sweeper=tuned, hydra/sweeper=space) add to Hydra's basic sweeper, once: the
sweep's multirun.yaml, a point's folder under a prefix of the sweeper's own, and the launch loop. A mixin, placed
before Hydra's BasicSweeper (experiments.hydra_private.basic_sweeper: why it is not a base class here). Light on
purpose (Hydra and OmegaConf only): Hydra imports every sweeper plugin at every start."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

from hydra.core.utils import JobReturn
from omegaconf import OmegaConf


class LaunchingSweeper:
    """Mixin for a subclass of Hydra's BasicSweeper (point expansion, launcher set-up) that builds its own jobs:
    `class MySweeper(LaunchingSweeper, basic_sweeper())`."""

    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.next_job_idx = 0

    def save_sweep_config(self) -> Path:
        """`<sweep.dir>/multirun.yaml`, as Hydra's basic sweeper writes it; returns the sweep's folder."""
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        return sweep_dir

    def folder_overrides(self, prefix: str, unnamed: Sequence[str]) -> List[str]:
        """A point lives in `<sweep.dir>/<prefix>/<its overrides>`, its folder named without the keys `unnamed` (those
        the sweeper sets, which `prefix` already says) nor those that make no different run."""
        exclude = [*self.config.hydra.job.config.override_dirname.exclude_keys, *unnamed]
        return [f"hydra.sweep.subdir={prefix}/" + "${hydra.job.override_dirname}",
                "hydra.job.config.override_dirname.exclude_keys=[" + ",".join(f"'{k}'" for k in exclude) + "]"]

    def launch_all(self, jobs: List[List[str]]) -> List[JobReturn]:
        """Every job through the configured launcher, `max_batch_size` at a time."""
        returns: List[JobReturn] = []
        for batch in self.split_overrides_to_chunks(jobs, self.max_batch_size) if jobs else ():
            self.validate_batch_is_legal(batch)  # composition errors before anything runs, as the basic sweeper
            results = self.launcher.launch(batch, initial_job_idx=self.next_job_idx)
            for r in results:
                _ = r.return_value  # a job that raised fails the sweep, as with the basic sweeper
            self.next_job_idx += len(batch)
            returns.extend(results)
        return returns
