"""Tracking: the local result record (always) and Weights & Biases (optional, offline by default).

The record is written atomically (temp file + rename) and result.json last, so a directory that has a
result.json has a complete record."""
from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import traceback
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import torch
from fastai.callback.core import Callback
from fastai.learner import Recorder

log = logging.getLogger("stemlab")

RECORD_FORMAT = 1  # bump when result.json changes shape; analyze.report reads older ones or names them skipped


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_record(out_dir: Path, result: Mapping[str, Any], layers: pd.DataFrame | None = None,
                 history: pd.DataFrame | None = None) -> Path:
    """layers.csv, history.csv, then result.json, each atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, table in (("layers.csv", layers), ("history.csv", history)):
        if table is not None:
            atomic_write(out_dir / name, table.to_csv(index=False))
    path = out_dir / "result.json"
    atomic_write(path, json.dumps({"format": RECORD_FORMAT, **result}, indent=2, default=str))
    return path


def run_name(config: Mapping[str, Any]) -> str:
    """stem-trunk-data-sSEED: the run's name in W&B and in its record."""
    return "-".join(str(config[k]["name"]) for k in ("stem", "trunk", "data")) + f"-s{config['seed']}"


def failure(error: BaseException) -> dict[str, str]:
    """The fields a `failed` record adds: status, the error and its traceback (call inside `except`)."""
    return {"status": "failed", "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}


def environment() -> dict[str, Any]:
    """Software and hardware versions, for the record (a study must be comparable years later)."""
    import fastai
    import hydra
    import torchvision

    env = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
           "fastai": fastai.__version__, "hydra": hydra.__version__, "platform": platform.platform(),
           "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "cuda": torch.version.cuda if torch.cuda.is_available() else None,
           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                           cwd=Path(__file__).parent).stdout.strip() or None
    except OSError:
        env["git_commit"] = None
    return env


class WandbLogger:
    """One W&B run; every failure to start or to log becomes a warning, never a failed training run."""

    def __init__(self, logger_cfg: Mapping[str, Any], config: dict, name: str, tags: list[str], out_dir: Path):
        self.run = None
        try:
            import wandb  # imported only when W&B logging is on (the GPU machines travel without it)

            self.wandb = wandb
            self.run = wandb.init(project=logger_cfg["project"], entity=logger_cfg["entity"], mode=logger_cfg["mode"],
                                  group=logger_cfg["group"], job_type=logger_cfg["job_type"], name=name,
                                  tags=[*tags, *logger_cfg["tags"]], config=config, dir=str(out_dir),
                                  settings=wandb.Settings(console="off", silent=True), reinit="finish_previous")
        except Exception as e:  # no login, no network, a broken install: the local record still gets everything
            log.warning("W&B could not start (%s); continuing with the local result record only.", _first_line(e))

    def callbacks(self) -> list:
        return [] if self.run is None else [WandbEpochs(self.run)]

    def finish(self, summary: Mapping[str, Any], layers: pd.DataFrame | None, history: pd.DataFrame | None,
               images: list[Path] = ()) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update(dict(summary))
            for key, table in (("layers", layers), ("history", history)):
                if table is not None:
                    self.run.log({key: self.wandb.Table(dataframe=table.astype({c: str for c in table.columns if table[c].dtype == object}))})
            self.run.log({p.stem: self.wandb.Image(str(p)) for p in images})
            self.run.finish()
        except Exception as e:
            log.warning("W&B logging failed at the end of the run (%s); the local result record is complete.", _first_line(e))


class WandbEpochs(Callback):
    """Per-epoch curves to W&B. Not fastai's WandbCallback: its before_fit crashes collecting config from
    objects without __dict__ (a torch.device, fastai 2.8.12), and it synchronises the device every batch."""

    order = Recorder.order + 1

    def __init__(self, run):
        self.run = run

    def after_epoch(self):
        if not self.recorder.values[-1]:
            return  # an epoch skipped on resume (fit_one_cycle(start_epoch=...)): nothing was trained
        names, values = self.recorder.metric_names[1:], self.recorder.log[1:]
        metrics = {n: v for n, v in zip(names, values) if isinstance(v, float)}
        tp = getattr(self.learn, "throughput", None)
        if tp is not None and tp.img_s:
            metrics["train_img_s"] = tp.img_s[-1]
        try:
            self.run.log({"epoch": self.epoch + 1, **metrics})
        except Exception as e:
            log.warning("W&B could not log epoch %d (%s).", self.epoch, _first_line(e))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"
