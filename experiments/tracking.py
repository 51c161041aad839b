"""Tracking with Weights & Biases (optional, offline by default). The local result record, which every
run writes whatever happens here, is experiments.record's."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
from fastai.callback.core import Callback
from fastai.learner import Recorder

log = logging.getLogger("stemlab")


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
