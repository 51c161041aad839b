"""Fitting with fastai's Learner: device / precision / memory format chosen from the hardware, one-cycle AdamW."""
from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Mapping

import pandas as pd
import torch
from fastai.callback.channelslast import ChannelsLast
from fastai.callback.core import Callback
from fastai.callback.fp16 import AMPMode, MixedPrecision
from fastai.callback.progress import ProgressCallback
from fastai.callback.schedule import fit_one_cycle  # noqa: F401  (patches Learner.fit_one_cycle)
from fastai.callback.tracker import TerminateOnNaNCallback
from fastai.learner import Learner, Recorder
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.optimizer import OptimWrapper
from torch import nn

from stems.base import StemlabError

from .cpu_format import Workload, resolve_cpu_format
from .data import DataBundle

log = logging.getLogger("stemlab")


class FitError(StemlabError):
    """A training setting this machine cannot honour; the message is one sentence naming the fix."""


@dataclass(frozen=True)
class Hardware:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    channels_last: bool
    decided: dict[str, Any] = field(default_factory=dict)  # how auto chose on the CPU (capability, probe timings)


def resolve_device(train_cfg: Mapping[str, Any]) -> torch.device:
    """`auto` picks CUDA when a GPU is visible, else the CPU."""
    has_cuda = torch.cuda.is_available()
    device = train_cfg["device"]
    if device == "cuda" and not has_cuda:
        raise FitError("train.device=cuda but no CUDA GPU is visible; use train.device=auto or train.device=cpu.")
    if device == "auto":
        device = "cuda" if has_cuda else "cpu"
    return torch.device(device)


def resolve_hardware(train_cfg: Mapping[str, Any], device: torch.device, workload: Workload) -> Hardware:
    """Precision and memory format on `device`: on a GPU `auto` is bf16 + channels_last; on the CPU `auto` is
    what the CPU computes natively and a cached probe of `workload` (the run's model) finds fastest
    (experiments.cpu_format). The choice is said once in the log."""
    precision, channels_last = train_cfg["precision"], train_cfg["channels_last"]
    if device.type == "cuda":
        return Hardware(device, "bf16" if precision == "auto" else precision,
                        True if channels_last == "auto" else bool(channels_last))
    chosen, decided = resolve_cpu_format(precision, channels_last, workload)
    native = "AMX bf16" if decided["amx_bf16"] else "AVX-512 bf16" if decided["avx512_bf16"] else "no native bf16"
    how = {"setting": "as set", "capability": "by capability",
           "probe": f"probed: {decided.get('speedup', 1):.2f}x the speed of {next(iter(decided.get('probe_ms', {})), '')}"}
    log.info("Training on the CPU (%s, %s) in %s (%s).", decided["cpu_model"], native, chosen.label, how[decided["how"]])
    return Hardware(device, chosen.precision, chosen.channels_last, decided)


class AutocastOnDevice(MixedPrecision):
    """fastai's MixedPrecision on the learner's device: fastai's own enters torch.autocast('cuda') only, which leaves
    a CPU run in fp32."""

    def before_fit(self):
        device = self.dls.device.type
        if device == "cuda":
            return super().before_fit()
        dtype = torch.bfloat16 if self.amp_mode == AMPMode.BF16 else torch.float16
        self.kwargs["enabled"] = dtype == torch.float16  # as fastai's: bf16 has fp32's range and needs no loss scaling
        self.autocast, self.learn.scaler, self.scales = torch.autocast(device, dtype=dtype), \
            torch.amp.GradScaler(device, **self.kwargs), []


class Throughput(Callback):
    """Per-epoch training images/s, ms per training step (batch loading included) and wall seconds, and the seconds the training loop waited for its batches
    (from the end of one batch, or the epoch's start, to the start of the next). The device is synchronised only
    at epoch ends."""

    order = 0

    def before_fit(self):
        self.img_s, self.ms_step, self.train_s, self.valid_s, self.load_s = [], [], [], [], []

    def _sync(self):
        if self.dls.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def before_train(self):
        self.seen, self.steps, self.t0 = 0, 0, self._sync()
        self.waited, self.batch_end = 0.0, self.t0

    def before_batch(self):
        if self.training:
            self.waited += time.perf_counter() - self.batch_end

    def after_batch(self):
        if self.training:
            self.seen += len(self.yb[0])
            self.steps += 1
            self.batch_end = time.perf_counter()

    def after_train(self):
        dt = self._sync() - self.t0
        self.train_s.append(dt)
        self.load_s.append(self.waited)
        self.img_s.append(self.seen / dt if dt > 0 else float("nan"))
        self.ms_step.append(1000 * dt / self.steps if self.steps else float("nan"))

    def before_validate(self):
        self.t0 = self._sync()

    def after_validate(self):
        self.valid_s.append(self._sync() - self.t0)


class EpochHistory(Callback):
    """One row per finished epoch, numbered from 1 as the log, W&B and checkpoints/epoch_N.pt number them:
    fastai's Recorder values plus the Throughput callback's timings. A resumed run's Checkpoint callback puts
    back the rows of the epochs finished before (fastai's Recorder starts empty)."""

    order = Recorder.order + 1
    timings = ("train_img_s", "train_ms_step", "train_s", "valid_s", "load_s")

    def __init__(self):
        self.rows: list[dict[str, float]] = []

    def after_epoch(self):
        values = self.recorder.values[-1]
        if not values:
            return  # an epoch skipped by fit_one_cycle(start_epoch=...): cancelled before it began
        names = [n for n in self.recorder.metric_names[1:] if n != "time"]
        tp = self.learn.throughput  # fastai exposes each callback as an attribute named after its class
        self.rows.append({"epoch": self.epoch + 1, **dict(zip(names, map(float, values))),
                          "train_img_s": tp.img_s[-1], "train_ms_step": tp.ms_step[-1], "train_s": tp.train_s[-1], "valid_s": tp.valid_s[-1],
                          "load_s": tp.load_s[-1]})

    def table(self) -> pd.DataFrame:
        # fastai's Recorder names its metrics when fit begins: a run that failed before has no rows and no names
        names = [n for n in getattr(self.recorder, "metric_names", ["epoch"])[1:] if n != "time"]
        return pd.DataFrame(self.rows, columns=["epoch", *names, *self.timings])


PROGRESS_EVERY_S = 30.0  # seconds between progress lines inside an epoch when there is no terminal


class BatchProgress(Callback):
    """Without a terminal (fastai's progress bar is removed there), a log line every `every_s` seconds inside an
    epoch: batch k/n, training img/s so far and the epoch's remaining time, so a long epoch is never silent."""

    order = 0

    def __init__(self, every_s: float | None = None):
        self.every_s = PROGRESS_EVERY_S if every_s is None else every_s

    def before_epoch(self):
        self.t0 = self.last = time.perf_counter()
        self.seen = 0

    def after_batch(self):
        if not self.training:
            return
        self.seen += len(self.yb[0])
        now = time.perf_counter()
        if now - self.last < self.every_s:
            return
        self.last = now
        done, total, spent = self.iter + 1, self.n_iter, now - self.t0
        log.info("  epoch %d/%d  batch %d/%d  %.0f img/s  training ETA %s", self.epoch + 1, self.n_epoch, done, total,
                 self.seen / spent, _duration(spent / done * (total - done)))


class EpochsFromOne(ProgressCallback):
    """fastai's progress bar (in a terminal), its table's epochs counted from 1 as everywhere else."""

    def _write_stats(self, log):
        super()._write_stats([log[0] + 1, *log[1:]] if log and isinstance(log[0], int) else log)


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes} min {s:02d} s" if minutes else f"{s} s"


def make_learner(model: nn.Module, data: DataBundle, train_cfg: Mapping[str, Any], hw: Hardware,
                 cbs: list[Callback] = ()) -> Learner:
    """A fastai Learner with torch's AdamW (fused on CUDA: fastai's own Adam steps parameter by parameter)."""
    adamw = partial(torch.optim.AdamW, fused=True) if hw.device.type == "cuda" else torch.optim.AdamW
    callbacks = [Throughput(), EpochHistory(), TerminateOnNaNCallback(), *cbs]
    if hw.precision != "fp32":
        callbacks.append(AutocastOnDevice(amp_mode=hw.precision))
    if hw.channels_last:
        callbacks.append(ChannelsLast())
    learn = Learner(data.dataloaders(), model.to(hw.device), loss_func=CrossEntropyLossFlat(label_smoothing=train_cfg["label_smoothing"]),
                    opt_func=partial(OptimWrapper, opt=adamw), metrics=accuracy, wd=train_cfg["wd"], cbs=callbacks,
                    path=".", model_dir=".")
    learn.remove_cb(ProgressCallback)
    if sys.stdout.isatty():
        learn.add_cb(EpochsFromOne())
    else:  # progress bars redraw with \r: unreadable in log files and CI; log epoch and progress lines instead
        learn.add_cb(BatchProgress())
        learn.logger = partial(_log_epoch, learn.recorder)
    return learn


def _log_epoch(recorder, values: list) -> None:
    """fastai's Recorder hands each epoch's [epoch, losses..., metrics..., time] to learn.logger."""
    if len(values) <= 2:
        return  # [epoch, time]: an epoch skipped on resume
    values = [values[0] + 1, *values[1:]]  # fastai counts from 0; people (and W&B, history.csv) from 1
    log.info("  ".join(f"{n} {v:.4f}" if isinstance(v, float) else f"{n} {v}" for n, v in zip(recorder.metric_names, values)))


def fit(learn: Learner, train_cfg: Mapping[str, Any], start_epoch: int = 0) -> bool:
    """fit_one_cycle (from `start_epoch` when resuming: fastai skips the epochs before it and sets the schedule
    there); returns False when the loss became NaN/inf (the fit was stopped there)."""
    learn.fit_one_cycle(train_cfg["epochs"], lr_max=train_cfg["lr"], start_epoch=start_epoch)
    rows = learn.epoch_history.rows  # TerminateOnNaNCallback cancels the fit mid-epoch: that epoch is missing
    return len(rows) == train_cfg["epochs"] and all(math.isfinite(v) for k, v in rows[-1].items() if k not in EpochHistory.timings)


def validate(model: nn.Module, data: DataBundle) -> tuple[float, float]:
    """Loss and accuracy of `model` on `data`'s validation set, through fastai's Learner.validate (eval mode)."""
    learn = Learner(data.dataloaders(), model, loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    with learn.no_bar():
        loss, acc = learn.validate()
    return float(loss), float(acc)
