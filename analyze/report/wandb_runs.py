"""The report's other input: the runs of a W&B project (optionally one group), turned into records."""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pandas as pd

from experiments.record import strict
from stems.base import first_line

from .data import Inputs, ReportError, Run

WANDB_STATES = {"finished": "completed", "crashed": "failed", "failed": "failed"}  # W&B run state -> record status


def read_wandb(project: str, group: str | None) -> Inputs:
    """Runs of a W&B project through wandb's public API, as records (config, status, summary as metrics)."""
    try:
        import wandb  # heavy and only needed with --wandb; the offline report never loads it

        api = wandb.Api(timeout=20)
        runs = list(api.runs(project, filters={"group": group} if group else None))
    except Exception as e:  # no login, no network, no such project: wandb raises many unrelated types
        reason = first_line(e, type(e).__name__)
        raise ReportError(f"cannot read W&B project {project!r} ({reason}); run `wandb login` on a machine with "
                          "network access, or report from the local records: python -m analyze report DIR.") from e
    inputs = Inputs(runs=[])
    for r in runs:
        config, summary, meta = dict(r.config), dict(r.summary._json_dict), r.metadata or {}
        if not isinstance(config.get("stem"), dict):
            inputs.skipped.append((r.url, "is not a stemlab run (no stem in its config)"))
            continue
        status = WANDB_STATES.get(r.state, r.state)
        acc = summary.get("valid_acc")
        if status == "completed" and not (isinstance(acc, (int, float)) and math.isfinite(acc)):
            status = "diverged"
        record = strict({"config": config, "status": status, "metrics": summary, "name": r.name,
                         "environment": {"python": meta.get("python"), "platform": meta.get("os"), "gpu": meta.get("gpu")},
                         "hardware": {"device": "cuda" if meta.get("gpu") else "cpu"}})
        history = r.history(keys=["epoch", "accuracy", "train_loss", "valid_loss"], pandas=True)
        inputs.runs.append(Run(r.url, record, history=history if len(history) else None, layers=layers_table(r, summary)))
    if not inputs.runs:
        raise ReportError(f"no stemlab runs in W&B project {project!r}" + (f" group {group!r}" if group else "")
                          + "; check the project and group names (logger.project, logger.group).")
    return inputs


def layers_table(run, summary: dict) -> pd.DataFrame | None:
    """The per-layer table a run logged as a W&B Table file; None when it logged none (no depth figure then)."""
    ref = summary.get("layers") or {}
    if not isinstance(ref, dict) or not ref.get("path"):
        return None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            table = json.loads(Path(run.file(ref["path"]).download(root=tmp, replace=True).name).read_text())
        return pd.DataFrame(table["data"], columns=table["columns"])
    except Exception:  # a network error or a changed Table format costs this run's depth figure, not the report
        return None
