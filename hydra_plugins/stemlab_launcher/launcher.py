"""Hydra's submitit launchers (hydra-submitit-launcher), with failures kept local to their point.

The plugin collects results with `job.results()`, which raises submitit's UncompletedJobError for a job that
ended without a result (killed from outside: scancel, out of memory, a node failure): `python train.py -m`
then stops with exit 1 and the other points' results are lost. Here such a point returns NaN and gets a
`failed` record (or keeps the `interrupted` record its stop-signal handler wrote), like any failing point.

Hydra finds this module because `hydra_plugins` is a namespace package (the repository root is on the path of
train.py and of submitit's workers); conf/hydra/launcher/{slurm,local_queue}.yaml name these classes."""
from __future__ import annotations

import logging
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from unittest import mock

import submitit
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from omegaconf import OmegaConf, open_dict

log = logging.getLogger(__name__)


@contextmanager
def job_results_replaced(results: Callable[[submitit.Job], list[Any]]) -> Iterator[None]:
    """Within the block, `job.results()` of every submitit Job calls `results(job)`. The one private hook here:
    hydra-submitit-launcher's launch() calls job.results() for every job in one list comprehension, and this is
    the one place to catch a job's failure without copying launch() (tests/test_private_apis.py fails when the
    plugin stops calling it, or submitit renames it)."""
    with mock.patch.object(submitit.Job, "results", results):
        yield


class KeepFailuresLocal:
    """Mixin for BaseSubmititLauncher: a job without a result becomes a failed point, not a failed sweep."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        started = time.time()
        collect = submitit.Job.results

        def results_or_failure(job: submitit.Job) -> list[Any]:
            try:
                return collect(job)
            except submitit.core.utils.UncompletedJobError as e:
                overrides, _, job_num, *_ = job.submission().args  # what BaseSubmititLauncher.launch submitted
                return [self.failed_point(list(overrides), job_num, job, e, started)]

        with job_results_replaced(results_or_failure):
            return super().launch(job_overrides, initial_job_idx)

    def failed_point(self, overrides: list[str], job_num: int, job: submitit.Job, error: Exception,
                     started: float) -> JobReturn:
        # Hydra imports every plugin at every start (train.py --help too): the record's torch and pandas load here
        from experiments.config import to_dict
        from experiments.record import RESULT_FILE, failed_record, read_record, write_record
        from stems.base import error_line

        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_config.hydra.job):
            sweep_config.hydra.job.num = job_num
        out_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
        task_cfg = OmegaConf.masked_copy(sweep_config, [k for k in sweep_config if k != "hydra"])
        record_path = out_dir / RESULT_FILE
        previous = read_record(record_path) if record_path.exists() and record_path.stat().st_mtime >= started else None
        interrupted = isinstance(previous, dict) and previous.get("status") == "interrupted"
        log.error("point %s: job %s ended without a result (%s); %s", " ".join(overrides), job.job_id, job.state,
                  "its interrupted record and checkpoint stay" if interrupted else f"recorded as failed in {record_path}")
        if not interrupted:  # the error's first line: submitit appends the job's whole stderr to its message
            write_record(out_dir, failed_record(to_dict(task_cfg), error, "job", error=error_line(error),
                                                job={"id": job.job_id, "state": job.state}))
        return JobReturn(overrides=overrides, cfg=task_cfg, hydra_cfg=sweep_config, working_dir=str(out_dir),
                         status=JobStatus.COMPLETED, _return_value=math.nan)


class SlurmLauncher(KeepFailuresLocal, submitit_launcher.SlurmLauncher):
    pass


class LocalLauncher(KeepFailuresLocal, submitit_launcher.LocalLauncher):
    """Submitit's local executor starts every point at once, each with as many threads as the machine has cores
    (SLURM confines a job to its cpus_per_task; a local job is confined by nothing). Its jobs inherit this process's
    environment, so OMP_NUM_THREADS = cpus_per_task gives each point the threads it asked for."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        with mock.patch.dict(os.environ, {"OMP_NUM_THREADS": str(self.params["cpus_per_task"])}):
            return super().launch(job_overrides, initial_job_idx)
