"""Tracking with Weights & Biases (optional, offline by default). The local result record, which every
run writes whatever happens here, is experiments.record's."""
from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
from fastai.callback.core import Callback
from fastai.learner import Recorder

log = logging.getLogger("stemlab")


class WandbLogger:
    """One W&B run; every failure to start or to log becomes a warning, never a failed training run.

    An online run that cannot start within `logger.init_timeout` seconds (no network, a stalled proxy, no
    login) is started offline instead, so nothing is lost: the log names its directory and the `wandb sync`
    command that uploads it."""

    def __init__(self, logger_cfg: Mapping[str, Any], config: dict, name: str, tags: list[str], out_dir: Path,
                 run_id: str | None = None):
        self.run, self.name, self.out_dir, self.run_id = None, name, Path(out_dir), run_id
        try:
            import wandb  # imported only when W&B logging is on (the GPU machines travel without it)

            self.wandb = wandb
            self.run, online_error = self._start(logger_cfg, config, tags)
            # per-epoch metrics are charted against the epoch, not W&B's step (every log() call advances the step)
            self.run.define_metric("epoch")
            self.run.define_metric("*", step_metric="epoch")
            where = f"{self.run.sync_dir}; upload later with: wandb sync {self.run.sync_dir}"
        except Exception as e:  # a broken install, an unwritable directory: the local record still gets everything
            log.warning("W&B could not start (%s); continuing with the local result record only.", _first_line(e))
            self.run = None
            return
        if online_error:
            log.warning("W&B could not start (%s); logging offline to %s", online_error, where)
        elif self.run.offline:
            log.info("W&B logs offline to %s", where)

    def _start(self, logger_cfg: Mapping[str, Any], config: dict, tags: list[str]):
        """The run, and why it is offline when online was asked for (None otherwise)."""
        settings = self.wandb.Settings(console="off", silent=True, init_timeout=float(logger_cfg["init_timeout"]))
        init = dict(project=logger_cfg["project"], entity=logger_cfg["entity"], group=logger_cfg["group"],
                    job_type=logger_cfg["job_type"], name=self.name, tags=[*tags, *logger_cfg["tags"]], config=config,
                    dir=str(self.out_dir), settings=settings, reinit="finish_previous",
                    **({"id": self.run_id, "resume": "allow"} if self.run_id else {}))
        try:
            return self.wandb.init(mode=logger_cfg["mode"], **init), None
        except Exception as e:
            if logger_cfg["mode"] != "online":
                raise
            return self.wandb.init(mode="offline", **init), _first_line(e)

    def callbacks(self) -> list:
        return [] if self.run is None else [WandbEpochs(self.run)]

    def finish(self, summary: Mapping[str, Any], groups: pd.DataFrame, layers: pd.DataFrame | None,
               history: pd.DataFrame | None, images: list[Path] = ()) -> None:
        """Summary scalars (with per-stage ones), the tables and plots, the final weights when saved; then finish.

        Tables and plots go into the summary, not the history, so the history holds epochs only."""
        if self.run is None:
            return
        try:
            tables = {key: self.wandb.Table(dataframe=table.astype({c: str for c in table.columns if table[c].dtype == object}))
                      for key, table in (("layers", layers), ("history", history)) if table is not None}
            plots = {p.stem: self.wandb.Image(str(p)) for p in images}
            self.run.summary.update({**summary, **stage_summary(groups), **tables, **plots})
            weights = self.out_dir / "model.pt"
            if weights.is_file():
                artifact = self.wandb.Artifact(f"model-{self.name}", type="model",
                                               description="the run's final weights (model.pt in its run directory)")
                # by reference (path and checksum): add_file would copy the weights into W&B's staging folder
                # (~/.local/share/wandb/artifacts/staging), a copy per run until it is uploaded
                artifact.add_reference(weights.resolve().as_uri())
                self.run.log_artifact(artifact, aliases=["final"])
            self.run.finish()
        except Exception as e:
            log.warning("W&B logging failed at the end of the run (%s); the local result record is complete.", _first_line(e))


def previous_run_id(out_dir: Path) -> str | None:
    """The id of the newest W&B run in a run folder (wandb names its folders `[offline-]run-<time>-<id>`), so
    that a resumed run logs to the same W&B run; None when the folder has none."""
    folders = sorted((Path(out_dir) / "wandb").glob("*run-*-*"), key=lambda p: p.name.split("run-", 1)[1])
    return folders[-1].name.rsplit("-", 1)[1] if folders else None


STAGE_COLUMNS = ("share_flops", "share_time", "ms_fwd", "ms_bwd")


def stage_summary(groups: pd.DataFrame) -> dict[str, float]:
    """`depth/<group>/<column>` scalars for stem, stage1..4 and head: W&B charts compare runs on summary
    scalars, not on a Table's cells. Unmeasured values (NaN) are left out, so no chart reads them as 0."""
    stages = groups[groups["group"] != "total"]
    return {f"depth/{row['group']}/{col}": float(row[col])
            for _, row in stages.iterrows() for col in STAGE_COLUMNS if col in row and pd.notna(row[col])}


def wandb_config(record: Mapping[str, Any], data) -> dict[str, Any]:
    """The run's config as W&B shows it: what ran, not what was asked. `train.device|precision|channels_last`
    resolved (not `auto`), the data's sizes, and the code version (git commit, stemlab version)."""
    config = record["config"]
    try:
        stemlab_version = version("stemlab")
    except PackageNotFoundError:  # run from a checkout that was never pip-installed
        stemlab_version = None
    return {**config,
            "train": {**config["train"], **record["hardware"]},
            "data": {**config["data"], "n_train": data.info.get("n_train"), "n_valid": data.info.get("n_valid"),
                     "image_size": data.image_size, "in_channels": data.in_channels, "num_classes": data.num_classes},
            "stem_match": record["stem_match"],
            "code": {"git_commit": record["environment"].get("git_commit"), "stemlab": stemlab_version}}


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
            log.warning("W&B could not log epoch %d (%s).", self.epoch + 1, _first_line(e))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"
