"""One writer per run folder, and a full disk said in one sentence, before Hydra writes anything.

A Hydra callback (conf/config.yaml, `hydra.callbacks`): Hydra calls on_run_start / on_multirun_start after composing
the config and before it creates the run (sweep) folder and writes its config and log there. The callback takes an
exclusive lock on `<folder>/.stemlab.lock` for the life of the process, so a second run or sweep into the same
folder stops at once with one sentence (two writers would interleave checkpoints and records); and it refuses a
disk without room for the config, the log and the record (Hydra would end in a traceback at its first write).

Kept free of torch and stemlab's heavy modules: Hydra imports it for every command."""
from __future__ import annotations

import atexit
import errno
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

LOCK_FILE = ".stemlab.lock"
MIN_FREE = 1 << 20  # bytes: Hydra's config and log, the record and its tables take a few hundred kB


class FolderRefused(Exception):
    """The run's folder is taken by another writer, or its disk is full; the message is one sentence."""


def existing_parent(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_room(folder: Path, key: str) -> None:
    free = shutil.disk_usage(existing_parent(folder)).free
    if free < MIN_FREE:
        raise FolderRefused(f"the disk holding {folder} is full ({free // 1024} KiB free, a run needs "
                            f"{MIN_FREE // 2**20} MiB to start); free space there or set {key}= to a folder on another disk.")


def lock_folder(folder: Path, key: str) -> int | None:
    """Create `folder` and hold its lock (the returned descriptor; closing it releases the lock). None where there
    is no flock (Windows): there runs are not guarded."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise FolderRefused(f"the disk holding {folder} is full; free space there or set {key}= to a folder on "
                                "another disk.") from None
        raise FolderRefused(f"cannot write in {folder} ({e.strerror}); set {key}= to a writable folder.") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise FolderRefused(f"{folder} is being written by another run (process {holder}); wait for it to end, or "
                            f"set {key}= to another folder.") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def remove_if_unused(folder: Path) -> None:
    """Remove a folder this process created for its lock when nothing else was written into it."""
    try:
        if [p.name for p in folder.iterdir()] in ([LOCK_FILE], []):
            (folder / LOCK_FILE).unlink(missing_ok=True)
            folder.rmdir()
    except OSError:  # gone already, or not ours to remove: leave it
        pass


class RunFolderGuard(Callback):
    """Locks the run folder (single run) or the sweep folder (multirun) for this process; refuses a full disk."""

    def __init__(self) -> None:
        self.fd: int | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.guard(Path(str(config.hydra.run.dir)), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.guard(Path(str(config.hydra.sweep.dir)), "hydra.sweep.dir")

    def guard(self, folder: Path, key: str) -> None:
        try:
            check_room(folder, key)
            created = not folder.exists()
            self.fd = lock_folder(folder, key)
        except FolderRefused as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        if created:  # a command refused after this point (e.g. by a sweeper) must leave no folder behind
            atexit.register(remove_if_unused, folder)

    def release(self, config: DictConfig, folder_key: str) -> None:
        """Remove the lock file, then let go of the lock: a finished run leaves no .stemlab.lock behind."""
        if self.fd is not None:
            try:
                (Path(str(OmegaConf.select(config, folder_key))) / LOCK_FILE).unlink()
            except OSError:  # already gone: nothing to clean
                pass
            os.close(self.fd)
            self.fd = None

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.release(config, "hydra.run.dir")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.release(config, "hydra.sweep.dir")
