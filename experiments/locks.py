"""Locks that end with the process holding them: a run folder's `.stemlab.lock` and a data cache's build lock.

POSIX record locks (`fcntl.lockf`), not `flock`: a forked child (a decoding or data-loading worker) does not inherit
them, and the kernel drops them when their process ends, so the workers left behind by a killed run never keep a
folder or a cache locked. The holder writes its process id into the file while it holds the lock and clears it on
release: an id found there by the next holder names a process that died holding the lock, and one log line says
that its lock is taken over.

Stdlib only: Hydra imports experiments.rundir for every command. Where there is no fcntl (Windows) nothing is locked."""
from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

try:
    import fcntl
except ImportError:
    fcntl = None

log = logging.getLogger("stemlab")


class Held(Exception):
    """The lock is held by a live process; `holder` is its process id as it wrote it ("unknown" when it did not)."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


def open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def holder(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip()


def acquire(fd: int, path: Path, wait: bool = False) -> None:
    """Take the lock of the open file `fd` (at `path`, for the log line), waiting for it when `wait`, else raising
    Held at once; then write this process's id into it."""
    if fcntl is None:
        return
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        raise Held(holder(fd) or "unknown") from None
    try:
        unlinked = os.fstat(fd).st_ino != os.stat(path).st_ino
    except FileNotFoundError:
        unlinked = True
    if unlinked:  # its holder removed the file while we waited to lock it: another run may lock a new one there
        raise Held(holder(fd) or "ended")
    left = holder(fd)
    if left and left != str(os.getpid()):
        log.warning("%s was held by process %s, which ended without releasing it; its lock is taken over.", path, left)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def release(fd: int) -> None:
    """Clear the holder's id (an ended holder is thus told from a dead one) and close: the lock goes with the file."""
    try:
        os.ftruncate(fd, 0)
    except OSError:  # a read-only or vanished file: closing still releases the lock
        pass
    os.close(fd)
