"""How one run behaves inside a sweep (multirun): resume from a completed record, share a W&B group,
and leave a `failed` record when anything goes wrong before training starts.

A point finds its previous record by its output directory: the study presets (conf/experiment/) make
`hydra.sweep.dir` and `hydra.sweep.subdir` deterministic (the study's name, then the point's overrides),
so re-running the same command lands every point in the directory it used last time."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from .record import RESULT_FILE, Unreadable, environment, failed_record, read_record, strict, write_record
from .same_run import same_run_config

log = logging.getLogger("stemlab")


def completed_result(out_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The record in `out_dir` if it is `completed` for the same run (experiments.same_run); else None (re-run)."""
    path = out_dir / RESULT_FILE
    if not path.exists():
        return None
    record = read_record(path)
    if isinstance(record, Unreadable):
        log.warning("%s; re-running this point and replacing it.", record)
        return None
    if record.get("status") != "completed":
        log.info("%s says %s; re-running this point.", path, record.get("status"))
        return None
    # compared as the record stores it (tuples as lists, NaN as None)
    if same_run_config(record["config"]) != same_run_config(strict(config)):
        log.warning("%s was completed with a different config; re-running this point and replacing it.", path)
        return None
    return record


def group_name(sweep_dir: str, cwd: Path) -> str:
    """The W&B group of an ad-hoc sweep: its directory (relative to the launch directory, without `multirun/`)."""
    path = Path(sweep_dir)
    try:
        path = path.resolve().relative_to(cwd.resolve())
    except ValueError:
        pass
    parts = path.parts[1:] if path.parts[:1] == ("multirun",) and len(path.parts) > 1 else path.parts
    return "/".join(parts)[-128:]  # W&B's limit on a group name


def write_failed(out_dir: Path, config: dict[str, Any], error: BaseException, started: float) -> Path:
    """A `failed` record for a point that stopped before training (bad input, a build or profile error)."""
    return write_record(out_dir, failed_record(config, error, "setup", environment=environment(),
                                               wall_s=time.perf_counter() - started))

