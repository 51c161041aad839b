"""How one run goes: data → model → cost profile → fastai fit → evaluate → result record (+ W&B)."""
from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig

from profiler.calibrate import Peaks, peaks
from profiler.runtime import AUTOCAST_DTYPES
from profiler.plots import save_plots
from stems.base import StemlabError, error_line

from .checkpoint import Checkpoint, Interrupted, drop_checkpoints, find_resumable, save_weights, signals_deferred
from .config import to_dict
from .fit import fit, make_learner
from .record import disk_full, environment, failure, run_name, write_record
from .sanity import load_warning, loaded, machine_load, near_chance
from .setup import log_progress, profile_run, set_up
from .tracking import WandbLogger, previous_run_id, wandb_config

log = logging.getLogger("stemlab")


class RunFailed(StemlabError):
    """Training raised; the record (status `failed`) says why. train.py exits 1 for it (2 is for bad input)."""


def run(cfg: DictConfig, out_dir: Path, sweep_dir: Path | None = None) -> float:
    """Train `cfg.stem` on `cfg.trunk` with `cfg.data`, write the record in `out_dir`, return the valid accuracy.
    A sweep point passes its `sweep_dir`: it trains in its study's one format (experiments.study_format).

    Bad input raises before anything is written; a failure during training writes a `failed` record."""
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    parts = WallParts()
    config = to_dict(cfg)
    name = run_name(config)
    # first: a resumed run says so before the minutes of setup and profiling
    resume = find_resumable(out_dir, config, name)  # a checkpoint of this config in the run directory
    start_epoch = resume["epoch"] if resume else 0
    setup = set_up(cfg, parts, sweep_dir=sweep_dir)
    data, hw, model = setup.data, setup.hw, setup.model
    with parts("profile"):
        profile, per_image = profile_run(setup, cfg)
        peak = peaks(hw.device, AUTOCAST_DTYPES[hw.precision], say=log_progress)

    tags = [cfg.stem.name, cfg.trunk.name, cfg.data.name, f"seed{cfg.seed}"]
    record: dict[str, Any] = {"name": name, "config": config, "data": data.info, "environment": environment(),
                              "hardware": {"device": str(hw.device), "precision": hw.precision, "channels_last": hw.channels_last,
                                           # a sweep's parallel launcher gives each point cores // n_jobs threads
                                           "threads": torch.get_num_threads(), "allocator": setup.allocator, "decided": hw.decided, "peak_flops_per_s": peak.flops_per_s,
                                           "peak_load": peak.load},  # the machine while the peak was measured
                              "stem_match": setup.stem_match, "pairing": setup.pairing, "started": started.isoformat(),
                              "resumed_from_epoch": resume["epoch"] if resume else None,
                              "resumed_epochs": [row["epoch"] for row in resume["history"]] if resume else []}
    wb = (WandbLogger(cfg.logger, wandb_config(record, data), name, tags, out_dir,
                      run_id=previous_run_id(out_dir) if resume else None)  # a resumed run continues its W&B run
          if cfg.logger.name == "wandb" else None)
    checkpoint = Checkpoint(out_dir, config, resume, keep=cfg.train.keep_checkpoints)
    learn = make_learner(model, data, cfg.train, hw, [*(wb.callbacks() if wb else []), checkpoint])
    layers = profile.layers  # layers.csv: the profiler's per-layer table, the columns `analyze profile` writes too
    try:
        finite = fit(learn, cfg.train, start_epoch)
        # inside the try: weights that do not fit on the disk are a failed run whose checkpoint stays for the re-run
        # save_model null (train.py resolves it for sweeps): keep
        weights = save_weights(out_dir, learn.model).name if finite and cfg.train.save_model is not False else None
    except Interrupted as e:  # a stop signal: the finished epochs are in checkpoints/, the record says so
        history = learn.epoch_history.table()
        record.update(status="interrupted", metrics=summarize(history, profile, per_image, peak), epochs_run=len(history),
                      wall_s=time.perf_counter() - t0, finished=datetime.now(timezone.utc).isoformat())
        with signals_deferred():
            path = write_record(out_dir, record, layers, history)
        e.note = f"after epoch {len(history)} of {cfg.train.epochs} (the partial epoch is lost); record: {path}"
        raise
    except Exception as e:
        record.update(failure(e), wall_s=time.perf_counter() - t0)
        raise record_failure(e, out_dir, record, layers, learn.epoch_history.table()) from e

    history = learn.epoch_history.table()
    summary = summarize(history, profile, per_image, peak)
    record.update(status="completed" if finite else "diverged", metrics=summary, profile_totals=profile.totals,
                  epochs_run=len(history), wall_s=time.perf_counter() - t0, finished=datetime.now(timezone.utc).isoformat(),
                  checkpoint_s=checkpoint.save_s)  # seconds per epoch-end checkpoint (this session's epochs)
    record["wall_parts_s"] = parts.of_run(record["wall_s"], history, checkpoint.save_s, start_epoch)
    # what rebuilds model.pt: experiments.checkpoint.load_trained_model(run_dir)
    record["model"] = {"weights": weights, "stem": setup.stem, "in_channels": data.in_channels,
                       "num_classes": data.num_classes, "image_size": data.image_size}
    record["hardware"]["load"] = machine_load()  # the machine at the end of training: were its timings shared?
    if not finite:
        log.warning("The loss became NaN/inf at epoch %d: the run is recorded as diverged.", len(history))
    elif near_chance(summary["valid_acc"], data.num_classes):
        log.warning("Valid accuracy %.2f%% is near chance (%.2f%% for %d classes): the model has barely learned; check "
                    "the learning rate, the epochs and the data.", 100 * summary["valid_acc"], 100 / data.num_classes,
                    data.num_classes)
    if loaded(record["hardware"]["load"]):
        log.warning("Training %s.", load_warning(record["hardware"]["load"]))
    path = write_record(out_dir, record, layers, history)  # the record first: nothing after it can lose the run
    if not cfg.train.keep_checkpoints:
        drop_checkpoints(out_dir)
    plots = extra_plots(profile, out_dir)
    if wb:
        wb.finish(summary, profile.groups, layers, history, plots)
    log.info("%s | valid acc %.2f%% | %.2f M params | %.3f GFLOPs fwd/img | stem %.1f%% of FLOPs | %.0f img/s train | %.0f s | %s",
             record["status"], 100 * summary["valid_acc"], summary["params"] / 1e6, summary["flops_fwd_per_image"] / 1e9,
             100 * summary["stem_share_flops"], summary["train_img_s"], record["wall_s"], path)
    return float(summary["valid_acc"]) if finite else math.nan


def record_failure(error: Exception, out_dir: Path, record: dict[str, Any], layers, history) -> RunFailed:
    """Write the `failed` record of an error in training; the one-sentence RunFailed for train.py to print. A full
    disk says so and how to go on (the half-written file is gone by now, so the record has room again)."""
    record["epochs_run"] = len(history)
    full = disk_full(error)
    if full:
        record["stage"] = "write"
    try:
        saved = f"record: {write_record(out_dir, record, layers, history)}"
    except OSError as again:
        if not disk_full(again):
            raise
        saved, full = "no record could be written", full or disk_full(again)
    if full:
        return RunFailed(f"the disk holding {out_dir} is full ({full.strerror}: {full.filename or out_dir}); free space "
                         "there or give the run a folder on another disk, then re-run the command (it resumes from "
                         f"the last checkpoint); {saved}")
    return RunFailed(f"training failed ({error_line(error)}); "
                     f"{saved}")


def extra_plots(profile, out_dir: Path) -> list[Path]:
    """The profile's plots beside the record (FLOPs vs time share per layer; roofline when timed). A failure here
    (a full disk, a plotting error) is a warning: the record is already complete."""
    try:
        return save_plots(profile, out_dir)
    except Exception as e:
        log.warning("The profile plots could not be written (%s: %s); the result record is complete.", type(e).__name__, e)
        return []


def summarize(history: pd.DataFrame, profile, per_image: dict[str, float], peak: Peaks) -> dict[str, Any]:
    """The record's metrics: the last epoch's (its training img/s and ms per step are what the report's speed columns
    show), the best accuracy, the profile's totals (ms_train_step: the profile's few timed steps), and the model FLOPs
    utilisation (MFU): training FLOP/s achieved (the profile's FLOPs per image x training img/s) over the peak
    FLOP/s measured on this device at the run's precision and thread count (profiler.calibrate); none where the
    training beat that peak, which was then measured too low."""
    final = history.iloc[-1].to_dict() if len(history) else {}
    img_s = final.get("train_img_s", math.nan)
    mfu = per_image["flops_train_per_image"] * img_s / peak.flops_per_s
    if mfu > 1:
        when = (f"measured at load {peak.load['load_avg']:.1f} on {peak.load['cpus']} cores" if peak.load
                else "its load while measured unknown")
        log.warning("Training reached %.1f GFLOP/s, above this device's peak of %.1f GFLOP/s (%s): that peak is too "
                    "low, so the record has no MFU.", mfu * peak.flops_per_s / 1e9, peak.flops_per_s / 1e9, when)
        mfu = None
    return {
        "valid_acc": final.get("accuracy", math.nan), "valid_loss": final.get("valid_loss", math.nan),
        "train_loss": final.get("train_loss", math.nan),
        "best_valid_acc": history["accuracy"].max() if len(history) else math.nan,
        "train_img_s": img_s, "train_ms_step": final.get("train_ms_step", math.nan), "mfu": mfu,
        "params": int(profile.totals["params"]), **per_image,
        "stem_share_flops": profile.totals["stem_share_flops"], "stem_share_time": profile.totals["stem_share_time"],
        "ms_fwd": profile.totals["ms_fwd"], "ms_train_step": profile.totals["ms_train_step_e2e"],
    }


class WallParts:
    """Seconds of a run's wall time by part: the setup steps timed here, training's parts from the epochs'
    timings (batch loading within the training loop, the rest of training, evaluation, checkpoints), and
    whatever is left (building the learner, writing the record, W&B)."""

    def __init__(self):
        self.s: dict[str, float] = {}

    @contextmanager
    def __call__(self, part: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.s[part] = self.s.get(part, 0.0) + time.perf_counter() - t0

    def of_run(self, wall_s: float, history: pd.DataFrame, checkpoint_s: list[float], start_epoch: int) -> dict[str, float]:
        ran = history.iloc[start_epoch:]  # this session's epochs (a resumed run's earlier ones ran before)
        load = float(ran["load_s"].sum()) if "load_s" in ran else 0.0
        parts = {**self.s, "train_load": load, "train_compute": float(ran["train_s"].sum()) - load,
                 "evaluate": float(ran["valid_s"].sum()), "checkpoint": float(sum(checkpoint_s))}
        return {**parts, "other": wall_s - sum(parts.values())}
