"""Runs that survive: a checkpoint at every epoch end, resume from it, interruption by a signal, final weights.

A run directory holds `checkpoints/epoch_N.pt` (N = epochs finished): model and optimizer state (what fastai's
`learn.save(with_opt=True)` writes), the epoch, every RNG state (python, numpy, torch, cuda, the data loaders'
generators), fastai's smoothed train loss, the history rows so far, and the training config they belong to.
Re-running the command in the same directory resumes from the newest one whose config matches; fastai's
`fit_one_cycle(start_epoch=N)` skips the finished epochs and puts the one-cycle schedule where it was, so the
resumed run ends with the same record an uninterrupted run writes.

Why one file and not `learn.save`: fastai's file holds only {model, opt}; a second file for the rest could
disagree with it after a kill between the two writes."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import pickle
import random
import shutil
import signal
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.learner import Recorder, save_model
from fastai.torch_core import get_model
from torch import nn

from stems.base import StemlabError, atomic_write, error_line

from .model import build_model
from .record import RESULT_FILE, Unreadable, disk_full, read_record
from .same_run import same_run_config

log = logging.getLogger("stemlab")

CHECKPOINT_DIR = "checkpoints"
WEIGHTS = "model.pt"
CHECKPOINT_FORMAT = 1
INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
# keys that change where results go or what is kept, not what is trained


class NoTrainedModel(StemlabError):
    """load_trained_model was pointed at a run directory without a readable record and weights."""


class Interrupted(BaseException):
    """A stop signal arrived. A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way
    (W&B's, fastai's) swallows it. Exit status 128 + signal number, the shell's convention (130, 143, 138)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        self.note = "before training started; this run wrote no checkpoint"  # the runner replaces it once epochs ran


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGUSR1 raise Interrupted while the block runs (the previous handlers come back after:
    under submitit they are its own)."""
    def handle(signum, frame):
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handle) for s in INTERRUPT_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold stop signals back while a checkpoint or record is written; one that came meanwhile is raised after."""
    signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPT_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPT_SIGNALS)


def training_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config without the keys that do not change training (experiments.same_run), as a record stores it."""
    return same_run_config(config, training_only=True)


def config_hash(config: Mapping[str, Any]) -> str:
    """What a checkpoint is filed under: the hash of the config's training keys."""
    return training_hash(training_config(config))


def training_hash(training: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(training, sort_keys=True).encode()).hexdigest()[:16]


def differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """`key: old -> new` for every leaf that differs (for the one line saying why a checkpoint is not used)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a} -> {b}")
    return out


def checkpoint_paths(run_dir: Path) -> list[Path]:
    """The run's checkpoints, newest (most epochs) first."""
    return sorted((run_dir / CHECKPOINT_DIR).glob("epoch_*.pt"), key=lambda p: int(p.stem.split("_")[1]), reverse=True)


def aside_dir(run_dir: Path, config_hash_: str) -> Path:
    """Where the checkpoints of another config are kept when a run of this config takes the run directory."""
    return Path(run_dir) / f"{CHECKPOINT_DIR}-{config_hash_}"


def find_resumable(run_dir: Path, config: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The newest readable checkpoint written for this config, or None (one log line says why it is not used).

    Checkpoints of another config are kept aside in `checkpoints-<its config hash>/` (a mistyped setting must not
    cost the finished epochs), and come back when a run of that config starts here again."""
    current = run_dir / CHECKPOINT_DIR
    wanted = training_config(config)
    digest = training_hash(wanted)
    kept = aside_dir(run_dir, digest)
    if kept.is_dir() and (current_hash := newest_hash(run_dir)) != digest:
        if current_hash is not None:  # another config's run came last: its checkpoints go aside in turn
            keep_aside(run_dir, current_hash)
        shutil.rmtree(current, ignore_errors=True)  # what is left there is unreadable
        kept.rename(current)
        log.info("the checkpoints of this config kept in %s are back in %s.", kept, current)
    for path in checkpoint_paths(run_dir):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file: try the one before it
            log.warning("not resuming from %s: unreadable (%s).", path, type(e).__name__)
            continue
        if state.get("config_hash") != digest:
            why = "; ".join(differences(json.loads(state.get("config", "{}")), wanted)[:3]) or "another format"
            aside = keep_aside(run_dir, str(state.get("config_hash") or "unknown"))
            log.warning("not resuming from %s: it was written for a different config (%s); starting from epoch 1; it "
                        "is kept in %s (re-run with that config to resume from it).", path, why, aside)
            return None
        log.info("resuming %s after epoch %d of %d (%s)", name, state["epoch"], state["n_epochs"], path)
        return state
    shutil.rmtree(current, ignore_errors=True)  # none readable: nothing to keep
    return None


def newest_hash(run_dir: Path) -> str | None:
    """The config hash of the newest readable checkpoint in checkpoints/, None when there is none."""
    for path in checkpoint_paths(run_dir):
        try:
            return str(torch.load(path, map_location="cpu", weights_only=True).get("config_hash") or "unknown")
        except Exception:  # a truncated or foreign file: the one before it says
            continue
    return None


def keep_aside(run_dir: Path, other_hash: str) -> Path:
    """Move checkpoints/ to checkpoints-<other_hash>/ (into it, file by file, when that folder exists: same config)."""
    current, aside = run_dir / CHECKPOINT_DIR, aside_dir(run_dir, other_hash)
    if not aside.exists():
        current.rename(aside)
        return aside
    for path in current.iterdir():
        path.replace(aside / path.name)
    current.rmdir()
    return aside


def rng_states(loaders) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"python": random.getstate(), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "loaders": [dl.random_states() for dl in loaders]}


def set_rng_states(states: Mapping[str, Any], loaders) -> None:
    random.setstate(states["python"])
    kind, keys, *rest = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])
    for dl, state in zip(loaders, states["loaders"]):
        dl.set_random_states(state)


def plain_state(obj):
    """numpy scalars (fastai's scheduled lr and betas) as Python numbers and fastai's tensor subclasses as plain
    tensors: torch.load(weights_only=True) refuses both."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor):
        return obj.as_subclass(torch.Tensor)
    if isinstance(obj, (list, tuple)):
        return type(obj)(map(plain_state, obj))
    if isinstance(obj, dict):
        return {k: plain_state(v) for k, v in obj.items()}
    return obj


class Checkpoint(Callback):
    """Saves the state after every finished epoch; restores a resumed run's state when the fit starts.

    Ordered after fastai's Recorder (whose before_fit resets the smoothed loss this restores) and after the
    EpochHistory callback (whose rows it saves)."""

    order = Recorder.order + 2

    def __init__(self, run_dir: Path, config: Mapping[str, Any], resume: dict[str, Any] | None = None,
                 keep: bool = False):
        self.run_dir, self.resume, self.keep = Path(run_dir), resume, keep
        self.training = training_config(config)  # what the checkpoint is for, and its hash
        self.training_hash = training_hash(self.training)
        self.start_epoch = resume["epoch"] if resume else 0
        self.save_s: list[float] = []  # seconds per save: the record's checkpoint cost

    def _loaders(self):
        return [dl for dl in self.dls.loaders if hasattr(dl, "random_states")]

    def before_fit(self):
        if not self.resume:
            return
        state = self.resume
        get_model(self.model).load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.recorder.smooth_loss.count = state["smooth_loss"]["count"]
        self.recorder.smooth_loss.val = state["smooth_loss"]["val"].to(self.dls.device)
        self.learn.epoch_history.rows[:] = state["history"]
        set_rng_states(state["rng"], self._loaders())

    def after_epoch(self):
        if self.epoch < self.start_epoch:
            return  # skipped by fit_one_cycle(start_epoch=...): nothing new to save
        t0, finished = time.perf_counter(), self.epoch + 1
        state = {"format": CHECKPOINT_FORMAT, "epoch": finished, "n_epochs": self.n_epoch,
                 "config": json.dumps(self.training), "config_hash": self.training_hash,
                 "model": get_model(self.model).state_dict(), "opt": self.opt.state_dict(),
                 "smooth_loss": {"count": self.recorder.smooth_loss.count, "val": self.recorder.smooth_loss.val},
                 "history": list(self.learn.epoch_history.rows), "rng": rng_states(self._loaders())}
        folder = self.run_dir / CHECKPOINT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"epoch_{finished}.pt"
        with signals_deferred():  # a stop signal now would lose this epoch: take it once the file is complete
            save_or_say_full(path, lambda f: torch.save(plain_state(state), f), tree_tensors(state), "a checkpoint")
            if not self.keep:
                for old in checkpoint_paths(self.run_dir)[1:]:
                    old.unlink(missing_ok=True)
        self.save_s.append(time.perf_counter() - t0)


def tree_tensors(obj) -> Iterator[torch.Tensor]:
    """The tensors in nested dicts and lists (a checkpoint's state)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from tree_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from tree_tensors(v)


def through_handle(write: Callable[[BinaryIO], None]) -> Callable[[Path], None]:
    """An atomic_write writer that saves through a file handle it closes itself: on a full disk torch.save(path)
    keeps its own handle open while the error travels, so the half-written file's space stays taken and the
    `failed` record that follows finds no room; closed here, the space is freed when atomic_write removes the file."""
    def to_path(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)
    return to_path


def save_or_say_full(path: Path, write: Callable[[BinaryIO], None], tensors: Iterable[torch.Tensor], what: str) -> Path:
    """atomic_write through a handle; a full disk (which torch.save reports as its own "enforce fail" error) as the
    ENOSPC OSError naming `what` did not fit and its size."""
    try:
        return atomic_write(path, through_handle(write))
    except Exception as e:
        if not disk_full(e):
            raise
        mb = sum(t.nbytes for t in tensors) / 2**20
        raise OSError(errno.ENOSPC, f"no space left for {what} of about {mb:,.0f} MiB", str(path)) from e


def save_weights(run_dir: Path, model: nn.Module) -> Path:
    """The final weights alone (fastai's save_model without the optimizer); `load_trained_model` rebuilds them."""
    return save_or_say_full(Path(run_dir) / WEIGHTS, lambda f: save_model(f, model, None, with_opt=False),
                            model.state_dict().values(), "the model's weights")


def drop_checkpoints(run_dir: Path) -> None:
    shutil.rmtree(Path(run_dir) / CHECKPOINT_DIR, ignore_errors=True)


def load_trained_model(run_dir: Path | str) -> nn.Module:
    """The model of a completed run, in eval mode (for inference): rebuilt from its result.json, with the weights of
    its model.pt."""
    run_dir = Path(run_dir)
    record = read_record(run_dir / RESULT_FILE)
    if isinstance(record, Unreadable):
        raise NoTrainedModel(f"{record}; re-run the command that wrote {run_dir} to rebuild it.")
    spec = record.get("model")
    if not spec or not spec.get("weights"):
        raise NoTrainedModel(f"{run_dir} holds no trained weights (its record says {record['status']}, without "
                             "model.pt); load a completed run saved with train.save_model=true.")
    model = build_model(spec["stem"], record["config"]["trunk"], spec["in_channels"], spec["num_classes"],
                        image_size=spec["image_size"])
    try:
        weights = torch.load(run_dir / WEIGHTS, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:  # code to run when unpickled, a truncated file
        raise NoTrainedModel(f"{run_dir / WEIGHTS} is not a plain weights file, so it was not loaded and nothing in it "
                             f"ran ({error_line(e)}); re-run the command that wrote {run_dir}.") from None
    model.load_state_dict(weights)
    return model.eval()
