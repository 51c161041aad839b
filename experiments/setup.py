"""A run's setup, the one both training (experiments.runner) and `python -m analyze profile` use: hardware (on the CPU
with freed memory kept for reuse) → data → precision and memory format → stem (`stem.match` applied) → model → its
cost profile, each as the run trains (docs/DESIGN.md, One run)."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from fastai.torch_core import set_seed
from omegaconf import DictConfig
from torch import nn

from profiler import COUNTING, Profile, profile_model
from profiler.calibrate import MEASURING
from profiler.runtime import AUTOCAST_DTYPES
from profiler.timing import ESTIMATE

from .allocator import keep_freed_memory
from .data import DataBundle, build_data
from .fit import Hardware, resolve_device, resolve_hardware
from .model import build_model, plain, resolve_stem, trunk_digest
from .sanity import load_warning, loaded, machine_load
from .schema import stem_node
from .study_format import FILE as STUDY_FORMAT_FILE, label, study_format

log = logging.getLogger("stemlab")


@dataclass
class RunSetup:
    """What a run trains: its data, hardware choices, resolved stem (and the match record) and model."""

    data: DataBundle
    hw: Hardware
    stem: dict[str, Any]  # the stem node with stem.match applied
    stem_match: dict[str, Any] | None
    model: nn.Module
    allocator: str | None  # what glibc does with freed memory in a CPU run (experiments.allocator); None on a GPU
    pairing: dict[str, Any]  # digests of what a seed shares across stems: the initial trunk + head, the data order


def set_up(cfg: DictConfig, parts: Callable[[str], AbstractContextManager] | None = None,
           data_device: torch.device | None = None, sweep_dir: Path | None = None) -> RunSetup:
    """The run's data, hardware, stem and model. `parts(name)` times the data, format probe and stem match (a run's
    wall parts); `data_device` (default: the training device) is where the loaders put batches: `analyze profile`
    needs only the data's shapes and keeps them on the CPU; `sweep_dir` (a sweep point's) gives the run its study's
    one format (experiments.study_format)."""
    parts = parts or (lambda part: nullcontext())
    device = resolve_device(cfg.train)
    # first: the data, the format probe and a time match allocate with it too, and their timings depend on it
    allocator = keep_freed_memory(device.type)
    set_seed(cfg.seed)
    with parts("data"):
        data = build_data(cfg.data, bs=cfg.train.bs, seed=cfg.seed, device=data_device or device)
    with parts("format_probe"):
        hw = hardware_for(cfg, data, device, sweep_dir)
    with parts("stem_match"):  # iso-cost widths; a time match is timed as the run trains: device, batch, precision
        stem, stem_match = resolve_stem(cfg.stem, data.in_channels, data.image_size, str(hw.device), cfg.train.bs,
                                        precision=hw.precision, channels_last=hw.channels_last)
    model = build_model(stem, cfg.trunk, data.in_channels, data.num_classes, image_size=data.image_size, seed=cfg.seed)
    pairing = {"trunk_init": trunk_digest(model), "data_order": data.train.order_digest()}
    return RunSetup(data, hw, stem, stem_match, model, allocator, pairing)


def hardware_for(cfg: DictConfig, data: DataBundle, device: torch.device, sweep_dir: Path | None = None) -> Hardware:
    """The run's precision and memory format on `device`. On the CPU `auto` probes a model (its stem before any
    stem.match: a match only rescales the stem's widths) at the training batch: a single run its own; a sweep point
    takes its study's format, decided once by the first point with the reference stem's model."""
    def workload(stem: dict[str, Any]):
        return lambda: (build_model({**stem, "match": None}, cfg.trunk, data.in_channels, data.num_classes,
                                    image_size=data.image_size),
                        (cfg.train.bs, data.in_channels, data.image_size, data.image_size))
    if sweep_dir is None or device.type != "cpu":
        return resolve_hardware(cfg.train, device, workload(plain(cfg.stem)))

    def decide() -> dict[str, Any]:
        reference = cfg.compare.reference
        stem = plain(cfg.stem) if reference in (None, cfg.stem.name) else stem_node(reference)
        hw = resolve_hardware(cfg.train, device, workload(stem))
        return {"precision": hw.precision, "channels_last": hw.channels_last, "decided": {**hw.decided, "stem": stem["name"]}}
    fmt = study_format(sweep_dir, cfg.train, decide)
    log.info("Training in the study's format: %s, %d thread%s (%s, decided with %s's model).", label(fmt),
             fmt["threads"], "s" * (fmt["threads"] != 1), sweep_dir / STUDY_FORMAT_FILE, fmt["decided"]["stem"])
    return Hardware(device, fmt["precision"], fmt["channels_last"],
                    {**fmt["decided"], "how": "study", "study_how": fmt["decided"]["how"]})


def log_progress(message: str) -> None:
    """The profiler's progress in a run's log: what can take a while (the count, a calibration) and the timing's
    estimate at INFO, each step at DEBUG."""
    log.log(logging.INFO if message.startswith((ESTIMATE, COUNTING, MEASURING)) else logging.DEBUG, "%s", message)


def profile_run(setup: RunSetup, cfg: DictConfig, threads: int | None = None,
                progress: Callable[[str], None] = log_progress) -> tuple[Profile, dict[str, float]]:
    """The cost profile of the run's model at its input size, timed per layer on the training device, at the
    training batch size and precision, unless profile.latency=false (profile_model works on its own copy); and the
    FLOPs per image, forward and of a training step."""
    data, hw = setup.data, setup.hw
    latency = bool(cfg.profile.latency)
    # FLOPs are linear in the batch; 2, not 1, because BatchNorm in training mode needs two values per channel
    batch = cfg.profile.batch_size or (cfg.train.bs if latency else 2)
    shape = (batch, data.in_channels, data.image_size, data.image_size)
    log.info("Profiling the model (input %s on %s%s).", shape, hw.device,
             f"; timing: a budget of {cfg.profile.budget_s:g} s, but at least 4 steps however long they take"
             if latency and cfg.profile.budget_s is not None else "")
    t0 = time.perf_counter()
    profile = profile_model(setup.model, shape, device=str(hw.device), latency=latency, backward=True,
                            dtype=AUTOCAST_DTYPES[hw.precision], channels_last=hw.channels_last,
                            budget_s=cfg.profile.budget_s, threads=threads, progress=progress)
    log.info("Profiled in %.1f s.", time.perf_counter() - t0)
    if latency and loaded(load := machine_load()):
        log.warning("The profile's %s.", load_warning(load))
    per_image = {"flops_fwd_per_image": profile.totals["flops_fwd"] / batch,
                 "flops_train_per_image": (profile.totals["flops_fwd"] + profile.totals["flops_bwd"]) / batch}
    return profile, per_image
