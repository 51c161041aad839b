"""One writer per run folder, and a full disk said in one sentence, before Hydra writes anything.

A Hydra callback (conf/config.yaml, `hydra.callbacks`): Hydra calls on_run_start / on_multirun_start after composing
the config and before it creates the run (sweep) folder and writes its config and log there. The callback takes an
exclusive lock on `<folder>/.stemlab.lock` for the life of the process, so a second run or sweep into the same
folder stops at once with one sentence (two writers would interleave checkpoints and records); and it refuses a
disk without room for the config, the log and the record (Hydra would end in a traceback at its first write).

Kept free of torch and stemlab's heavy modules: Hydra imports it for every command."""
from __future__ import annotations

import atexit
import contextlib
import errno
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from . import locks

LOCK_FILE = ".stemlab.lock"
RESERVE_FILE = ".stemlab.reserve"
RESERVE = 64 << 10  # bytes kept for a record on a disk that fills up while the run goes on (a small record: a few kB)
MIN_FREE = 1 << 20  # bytes: Hydra's config and log, the record and its tables take a few hundred kB


class FolderRefused(Exception):
    """The run's folder is taken by another writer, or its disk is full; the message is one sentence."""


def existing_parent(folder: Path) -> Path:
    while not os.path.exists(folder) and folder != folder.parent:  # os.path: False for a name too long, no error
        folder = folder.parent
    return folder


def overlong_name(folder: Path) -> tuple[str, int] | None:
    """The first name in `folder` longer than the filesystem that would hold it takes (in bytes, mostly 255), with
    that limit; None when every name fits. Creating such a folder fails with "File name too long"."""
    try:
        limit = os.pathconf(existing_parent(folder.absolute()), "PC_NAME_MAX")
    except (OSError, ValueError):  # no limit reported: the common one
        limit = 255
    return next(((name, limit) for name in folder.parts if len(os.fsencode(name)) > limit), None)


def check_room(folder: Path, key: str) -> None:
    free = shutil.disk_usage(existing_parent(folder)).free
    if free < MIN_FREE:
        raise FolderRefused(f"the disk holding {folder} is full ({free // 1024} KiB free, a run needs "
                            f"{MIN_FREE // 2**20} MiB to start); free space there or set {key}= to a folder on another disk.")


def lock_folder(folder: Path, key: str) -> int:
    """Create `folder` and hold its lock (the returned descriptor; `locks.release` releases it)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = locks.open_lock(folder / LOCK_FILE)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise FolderRefused(f"the disk holding {folder} is full; free space there or set {key}= to a folder on "
                                "another disk.") from None
        raise FolderRefused(f"cannot write in {folder} ({e.strerror}); set {key}= to a writable folder.") from None
    try:
        locks.acquire(fd, folder / LOCK_FILE)
    except locks.Held as e:
        os.close(fd)
        raise FolderRefused(f"{folder} is being written by another run (process {e.holder}); wait for it to end, or "
                            f"set {key}= to another folder.") from None
    return fd


def keep_reserve(folder: Path) -> None:
    """Reserve RESERVE bytes in `folder` (its blocks allocated, not a sparse file) for the record of a run whose disk
    fills up meanwhile; nothing is kept where there is no room or no posix_fallocate."""
    try:
        with open(folder / RESERVE_FILE, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, RESERVE)
    except (AttributeError, OSError):
        (folder / RESERVE_FILE).unlink(missing_ok=True)


def free_reserve(folder: Path) -> bool:
    """Give back the room kept in `folder` or, when it keeps none (a point that started on a full disk), in the
    nearest folder above it that does (the sweep's); whether some was freed."""
    for place in (folder, *folder.parents):
        try:
            (place / RESERVE_FILE).unlink()
            return True
        except FileNotFoundError:
            continue
        except OSError:
            return False
    return False


def remove_if_unused(folder: Path) -> None:
    """Remove a folder this process created when it holds nothing but its lock and what Hydra writes before a run
    starts (.hydra/, the job's log): a command refused in its setup (bad data settings) leaves no folder behind."""
    try:
        if all(p.name in (LOCK_FILE, RESERVE_FILE, ".hydra") or p.suffix == ".log" for p in folder.iterdir()):
            shutil.rmtree(folder)
    except OSError:  # gone already, or not ours to remove: leave it
        pass


class RunFolderGuard(Callback):
    """Locks the run folder (single run) or the sweep folder and, while each point runs, the point's folder
    (multirun) for this process, each with room kept for its record; refuses a full disk. A single run into a running
    point's folder is thus refused."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[int, Path]] = {}  # "folder" (the run's or the sweep's), "point": lock and folder
        atexit.register(self.release)  # an exit before on_run_end (an error, a stop signal) still clears the lock

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.take("folder", Path(str(config.hydra.run.dir)), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.take("folder", Path(str(config.hydra.sweep.dir)), "hydra.sweep.dir")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:  # a single run's folder is locked already; a point's room is
            # checked by the point (train.py), which then writes its failed record and stops the sweep
            self.take("point", Path(str(config.hydra.runtime.output_dir)), "hydra.sweep.dir", room=False)

    def take(self, which: str, folder: Path, key: str, room: bool = True) -> None:
        self.held[which] = (self.guard(folder, key, room), folder)
        keep_reserve(folder)

    def guard(self, folder: Path, key: str, room: bool = True) -> int:
        try:
            if room:
                check_room(folder, key)
            created = not folder.exists()
            fd = lock_folder(folder, key)
        except FolderRefused as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        if created:  # a command refused after this point (e.g. by a sweeper) must leave no folder behind
            atexit.register(remove_if_unused, folder)
        return fd

    def let_go(self, which: str) -> None:
        """Give back the reserve and the lock; the lock file goes first, while still held, so a finished run leaves
        no .stemlab.lock (a run that opened it just before sees it gone once locked: locks.acquire)."""
        if which in self.held:
            fd, folder = self.held.pop(which)
            with contextlib.suppress(OSError):
                (folder / RESERVE_FILE).unlink(missing_ok=True)
                (folder / LOCK_FILE).unlink(missing_ok=True)
            locks.release(fd)

    def release(self, **kwargs: Any) -> None:
        self.let_go("point")
        self.let_go("folder")

    def on_job_end(self, **kwargs: Any) -> None:
        self.let_go("point")

    on_run_end = on_multirun_end = release
