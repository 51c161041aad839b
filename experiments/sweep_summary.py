"""The line a sweep ends on: how many of its points are done, failed and skipped, and the command that reports it.

A Hydra callback (conf/config.yaml, `hydra.callbacks`), so it ends every sweep alike: Hydra's basic sweeper and
stemlab's, under any launcher. It reads the points' records when the sweep returns: a point is a job folder (one
with Hydra's `.hydra/overrides.yaml`); done: its record says `completed` and was finished by this sweep; skipped:
completed before this sweep began (a re-run skips it); failed: any other status (failed, diverged, interrupted) or
no record at all. Light at import (Hydra imports every callback at every start): the record reader loads on use."""
from __future__ import annotations

import shlex
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def point_states(sweep_dir: Path, began: datetime) -> Counter:
    """{'done' | 'skipped' | 'failed': points} of the job folders under `sweep_dir`."""
    from .record import RESULT_FILE, Unreadable, read_record

    states: Counter = Counter()
    for hydra_dir in sweep_dir.rglob(".hydra"):
        job = hydra_dir.parent
        if not (hydra_dir / "overrides.yaml").exists() or (job / "multirun.yaml").exists():
            continue  # not a point's folder (the sweep's own)
        record = read_record(job / RESULT_FILE) if (job / RESULT_FILE).exists() else None
        if isinstance(record, Unreadable) or record is None or record.get("status") != "completed":
            states["failed"] += 1
        else:
            states["skipped" if finished_before(record, began) else "done"] += 1
    return states


def finished_before(record: dict[str, Any], began: datetime) -> bool:
    try:
        return datetime.fromisoformat(str(record.get("finished"))) < began
    except (TypeError, ValueError):  # no finish time, or one without a time zone (older records): not this sweep's
        return True


def summary_line(sweep_dir: Path, states: Counter) -> str:
    total = sum(states.values())
    return (f"Sweep ended: {states['done']} of {total} point{'s' * (total != 1)} done, {states['failed']} failed (or "
            f"without a record), {states['skipped']} skipped (completed before); report: "
            f"python -m analyze report {shlex.quote(str(sweep_dir))}")


class SweepSummary(Callback):
    """Prints summary_line when a multirun returns."""

    def __init__(self) -> None:
        self.began = datetime.now(timezone.utc)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.began = datetime.now(timezone.utc)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        print(summary_line(sweep_dir, point_states(sweep_dir, self.began)), flush=True)
