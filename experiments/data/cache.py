"""Decode an image-folder split once into a memory-mapped uint8 cache, so training never decodes a JPEG.

Layout of one split: `<split_dir>/<class>/<file>`; any file Pillow reads is an image (JPEG, PNG, WebP...).
Each image is stored as a `side × side` RGB square: resized so its shorter side is `side`, then
center-cropped to a square (`side` a little above the training size, e.g. 152 for 128 by fastai's
`val_xtra` rule, leaves room for the validation center crop and the training random-resized-crop).
Non-square photos thus lose their left/right (or top/bottom) margins; in exchange every image is one
fixed-size row of one tensor.

16-bit images (PNG's 16-bit grayscale, which Pillow opens as mode `I;16` or `I`) keep their high byte,
the rule Pillow itself applies to 48-bit RGB and 16-bit gray+alpha PNGs (`convert("RGB")` would clip
them at 255: a white image).

A cache lives in `<cache_dir>/<dataset>-<split>-<side>px-<fingerprint>/`: `images.u8` holds the raw
(N, side, side, 3) uint8 pixels (channels-last: the layout torch's fast uint8 resize wants), `meta.json`
the labels, classes, skipped files and the size and block digests of images.u8 (`integrity.py`). The
fingerprint hashes every file's relative path, size and mtime, so adding, removing or rewriting a file
builds a new cache (and the stale one built from the same folder is deleted). Every open checks the
cache against its meta.json; a damaged cache (truncated, flipped bytes in a checked block, unreadable
meta.json) is rebuilt after one warning. Builds write to a temporary folder `<cache>.tmp-<host>-<pid>`
renamed into place, under a file lock, so parallel runs of a sweep build a cache once and never read a
half-written one; the next build under the lock removes the temporary folders of builds that died
(killed, out of memory) before finishing. A cache folder that cannot be written is one DataError naming
it and `data.cache_dir`; a complete cache in a read-only folder is read as is.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import signal
import socket
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from stems.base import error_line

from .. import locks
from . import DataError
from .integrity import VERIFY_MODES, damage, describe

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # bump when the stored layout or the decoding rule changes: old caches are then ignored
HOST = socket.gethostname()
# what a folder that cannot take the cache raises: read-only, not a folder, no permission, disk or quota full
CHUNK = 32  # images per task handed to a worker
STALL_S = 30.0  # seconds without a finished chunk (about 32 images: normally under a second) that mean a stuck worker
UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.ENOSPC, errno.EDQUOT}


@dataclass
class CachedSplit:
    images: torch.Tensor       # (N, 3, side, side) uint8 (channels-last strides), memory-mapped from images.u8
    labels: torch.Tensor       # (N,) int64
    classes: list[str]
    skipped: dict[str, str]    # relative path -> why it could not be decoded
    path: Path                 # the cache folder
    built: bool                # True when this call decoded the images, False when it reused the cache
    build_seconds: float       # time of this call's build (0 when reused)


def user_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stemlab"


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def list_split(split_dir: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Files and labels of a split; `classes` (the train split's) fixes the label order of a valid split."""
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} does not exist; the dataset folder needs train/ and val/ subfolders of class folders.")
    found = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise DataError(f"{split_dir} has no class folders; put each class's images in {split_dir}/<class name>/.")
    if classes is not None and found != classes:
        diff = sorted(set(found) ^ set(classes))
        raise DataError(f"{split_dir} has different class folders than the train split ({', '.join(diff)}); "
                        f"make both splits hold the same class folders.")
    files, labels = [], []
    for label, name in enumerate(found):
        # hidden files (.DS_Store, editor swap files) are not data; anything else is tried as an image
        with os.scandir(split_dir / name) as entries:  # is_file() from the listing (no stat); strings sort faster
            members = [Path(p) for p in sorted(e.path for e in entries if not e.name.startswith(".") and e.is_file())]
        if not members:
            raise DataError(f"class folder {split_dir / name} is empty; add its images or remove the folder.")
        files += members
        labels += [label] * len(members)
    return files, labels, found


def fingerprint(split_dir: Path, files: list[Path]) -> str:
    """Hash of relative path (`<class>/<file>`), size and mtime of every file (cheap: no file is read)."""
    h = hashlib.sha1(f"v{FORMAT_VERSION}".encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{f.parent.name}/{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def to_8bit(im: Image.Image) -> Image.Image:
    """16-bit grayscale (mode I;16*, or I as older Pillow opens 16-bit PNGs) as 8-bit L: the high byte, v >> 8."""
    if im.mode.startswith("I;16") or im.mode == "I":
        return Image.fromarray((np.asarray(im).astype(np.int64).clip(0, 65535) >> 8).astype(np.uint8))
    return im


def decode_square(path: Path, side: int) -> np.ndarray:
    """(side, side, 3) uint8: shorter side resized to `side`, center square kept."""
    with Image.open(path) as im:
        im.draft("RGB", (side, side))  # JPEG: let libjpeg decode at the smallest scale still >= side (much faster)
        im = to_8bit(im).convert("RGB")
        w, h = im.size
        s = min(w, h)
        box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
        return np.asarray(im.resize((side, side), Image.Resampling.BILINEAR, box=box))


_worker_out: np.memmap | None = None


def _open_output(path: str, n: int, side: int) -> None:
    global _worker_out
    _worker_out = np.memmap(path, dtype=np.uint8, mode="r+", shape=(n, side, side, 3))


def _start_worker(path: str, n: int, side: int, parent: int) -> None:
    """A forked worker drops the run's stop-signal handlers (experiments.checkpoint.interruptible): with them, the
    pool's own SIGTERM at shutdown raised in a worker holding the task queue's lock, and the pool hung in join.
    Ctrl-C is the parent's to handle; SIGTERM and SIGUSR1 end a worker at once. A worker ends with its parent
    `parent`, also when that one is killed outright (SIGKILL runs no clean-up)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for s in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(s, signal.SIG_DFL)
    _end_with(parent)
    _open_output(path, n, side)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _end_with(parent: int) -> None:
    """Linux kills this process when its parent ends (prctl PR_SET_PDEATHSIG); elsewhere, and for a parent that
    ended before the call, a watchdog thread ends it once it has been handed to another parent."""
    with contextlib.suppress(AttributeError, OSError):  # no prctl outside Linux: the watchdog alone
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _decode_rows(jobs: list[tuple[int, str, int]]) -> list[tuple[int, str | None]]:
    """Decode files into their rows of the shared output; a file's failure is returned, never raised."""
    results = []
    for i, path, side in jobs:
        try:
            _worker_out[i] = decode_square(Path(path), side)
            results.append((i, None))
        except Exception as e:  # corrupt, truncated, not an image, too large: skip it, say why
            results.append((i, error_line(e)[:200]))
    return results


def _allocate(path: Path, nbytes: int) -> None:
    """Create `path` with all its blocks reserved: a full disk is an OSError now, not a SIGBUS later in a process
    that writes to the memory map (a file is sparse until written)."""
    with open(path, "wb") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, nbytes)
        except (AttributeError, OSError) as e:  # no posix_fallocate (macOS), or a file system without it
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OSError(e.errno, f"{e.strerror}; it needs {nbytes / 2**20:,.0f} MiB", str(path)) from None
            if isinstance(e, OSError) and e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            f.truncate(nbytes)


def _decode_all(files: list[Path], out: Path, side: int, workers: int, desc: str) -> dict[int, str]:
    n = len(files)
    _allocate(out, n * side * side * 3)
    jobs = [(i, str(f), side) for i, f in enumerate(files)]
    failed: dict[int, str] = {}
    output = (str(out), n, side)
    chunks = _in_workers(jobs, workers, output, desc) if workers > 1 else _in_process(jobs, output)
    # closing: an exception here (a stop signal) stops the workers now, not when its traceback is freed
    with tqdm(total=n, desc=desc, unit="img", mininterval=1.0) as bar, contextlib.closing(chunks):
        for results in chunks:
            for i, err in results:
                if err is not None:
                    failed[i] = err
            bar.update(len(results))
    return failed


def _in_process(jobs: list[tuple[int, str, int]], output: tuple):
    _open_output(*output)
    for k in range(0, len(jobs), CHUNK):
        yield _decode_rows(jobs[k:k + CHUNK])


def _in_workers(jobs: list[tuple[int, str, int]], workers: int, output: tuple, desc: str):
    """Decode `jobs` in worker processes; yields each finished chunk's results. concurrent.futures notices a worker
    that dies (multiprocessing.Pool waits forever for its task), and a chunk that takes STALL_S means a stuck
    worker: either is a DataError naming the cause, and the workers are stopped."""
    # fork where available: workers only run PIL/numpy, and spawning would re-import torch in each
    ctx = _Tracked(mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None))
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker, initargs=(*output, os.getpid()))
    finished = False
    try:
        pending = {pool.submit(_decode_rows, jobs[k:k + CHUNK]) for k in range(0, len(jobs), CHUNK)}
        while pending:
            done, pending = wait(pending, timeout=STALL_S, return_when=FIRST_COMPLETED)
            if not done:
                raise DataError(f"{desc}: no image decoded for {STALL_S} s, a decoding process is stuck (a hung "
                                "network drive?); make the images readable, or try data.workers=1.")
            for future in done:
                try:
                    yield future.result()
                except BrokenProcessPool:
                    codes = ctx.exit_codes()
                    raise DataError(f"{desc}: a decoding process died ({_death(codes)}); free memory or disk "
                                    "space, or try data.workers=1.") from None
        finished = True
    finally:
        if not finished:  # stuck, dead or interrupted: kill the workers before the pool's own shutdown, which cannot
            for p in ctx.started:  # stop a busy one (killed after it, a worker could outlive the parent's wait)
                if p.exitcode is None:
                    p.kill()
        pool.shutdown(wait=finished, cancel_futures=True)


class _Tracked:
    """A multiprocessing context that keeps every process it starts: the pool's workers, whose exit codes say how one
    died (the pool only says that one did) and which can be killed when the pool cannot stop them."""

    def __init__(self, ctx):
        self.ctx, self.started = ctx, []

    def Process(self, *args, **kwargs):  # noqa: N802 (the context's own name)
        process = self.ctx.Process(*args, **kwargs)
        self.started.append(process)
        return process

    def exit_codes(self, wait_s: float = 5.0) -> list[int]:
        """The non-zero exit codes of the processes that ended. The pool may report a death before the dead process
        can be reaped (its pipe closes first), so this polls for up to `wait_s` seconds until one is there."""
        deadline = time.monotonic() + wait_s
        while not (codes := [p.exitcode for p in self.started if p.exitcode]) and time.monotonic() < deadline:
            time.sleep(0.02)
        return codes

    def __getattr__(self, name):
        return getattr(self.ctx, name)


def _death(exitcodes: list[int]) -> str:
    """How a worker died, in words (a negative exit code is the signal that killed it)."""
    if not exitcodes:
        return "no exit code"
    code = exitcodes[0]
    if code > 0:
        return f"exit code {code}"
    name = signal.Signals(-code).name
    hint = {"SIGBUS": ": the cache file could not be written, is the disk full?",
            "SIGKILL": ": out of memory?"}.get(name, "")
    return f"killed by {name}{hint}"


def _compact(src: Path, dst: Path, keep: np.ndarray, side: int, n: int) -> None:
    """Copy the rows that decoded into a file without holes (only when some file was skipped)."""
    full = np.memmap(src, dtype=np.uint8, mode="r", shape=(n, side, side, 3))
    out = np.memmap(dst, dtype=np.uint8, mode="w+", shape=(len(keep), side, side, 3))
    for start in range(0, len(keep), 1024):
        out[start:start + 1024] = full[keep[start:start + 1024]]
    out.flush()
    del full, out
    src.unlink()


def _load(path: Path, meta: dict, built: bool, seconds: float) -> CachedSplit:
    n, side = len(meta["labels"]), meta["side"]
    # shared=False maps the file copy-on-write: lazily paged in, never written back
    images = torch.from_file(str(path / "images.u8"), shared=False, size=n * 3 * side * side, dtype=torch.uint8)
    # stored (N, H, W, C) as decoded; handed out as an (N, C, H, W) view with channels-last strides (no copy)
    return CachedSplit(images.view(n, side, side, 3).permute(0, 3, 1, 2), torch.tensor(meta["labels"], dtype=torch.long),
                       meta["classes"], meta["skipped"], path, built, seconds)


def _reuse(path: Path, verify: str) -> tuple[CachedSplit | None, str | None]:
    """(the cache at `path` if it is intact, else None; why it is not, None when there is simply no cache)."""
    if not path.is_dir():
        return None, None
    try:
        meta = json.loads((path / "meta.json").read_text())
        kept = meta["images"]
        expected = len(meta["labels"]) * meta["side"] ** 2 * 3
        if kept["bytes"] != expected or len(kept["blake2b_8"]) != -(-expected // kept["block_bytes"]):
            return None, "meta.json does not describe its images"
    except FileNotFoundError:
        return None, "meta.json is missing"
    except (OSError, ValueError, KeyError, TypeError) as e:  # truncated, not JSON, wrong shape
        return None, f"meta.json is unreadable ({type(e).__name__})"
    try:
        why = damage(path / "images.u8", kept, verify)
    except OSError as e:
        why = f"images.u8 is unreadable ({e.strerror or type(e).__name__})"
    return (None, why) if why else (_load(path, meta, built=False, seconds=0.0), None)


@contextlib.contextmanager
def _writable(cache_dir: Path):
    """A folder that cannot take the cache becomes one sentence naming it and the setting to change."""
    try:
        yield
    except OSError as e:
        if e.errno not in UNWRITABLE:
            raise
        raise DataError(f"cannot write the data cache in {cache_dir} ({e.strerror or type(e).__name__}); set data.cache_dir= to a "
                        f"writable folder with room for it.") from e


@contextlib.contextmanager
def _locked(lock_path: Path):
    """Hold the build lock (experiments.locks: the decoding workers never hold it); yields the time it was taken. A
    wait for another run's build says so in one line."""
    fd = locks.open_lock(lock_path)
    try:
        try:
            locks.acquire(fd, lock_path)
        except locks.Held as e:
            log.info(f"waiting for the data cache build of process {e.holder} ({lock_path})")
            locks.acquire(fd, lock_path, wait=True)
        yield time.time() if locks.fcntl else None  # no lock (Windows): parallel builds race, the rename keeps one
    finally:
        locks.release(fd)


def _alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) is no probe there: assume alive
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to someone else
        pass
    return True


def _remove_dead_builds(cache_dir: Path, prefix: str, locked_since: float | None) -> None:
    """Delete the temporary folders of builds that cannot be running: their process (on this host) is gone,
    or they were last written before we took the lock (only the lock holder builds)."""
    for tmp in cache_dir.glob(prefix + "*.tmp-*"):
        host, _, pid = tmp.name.rpartition(".tmp-")[2].rpartition("-")
        dead = host == HOST and pid.isdigit() and not _alive(int(pid))
        with contextlib.suppress(FileNotFoundError):  # without a lock, its own builder may remove it meanwhile
            if dead or (locked_since is not None and tmp.stat().st_mtime < locked_since):
                shutil.rmtree(tmp)
                log.info(f"removed {tmp}, left by a cache build that did not finish")


def cached_split(split_dir: Path | str, *, dataset: str, split: str, side: int, cache_dir: Path | str | None = None,
                 classes: list[str] | None = None, workers: int | None = None, verify: str = "sample") -> CachedSplit:
    """The decoded split, from its cache when the folder is unchanged and the cache intact, else decoded now
    (all cores). `verify`: "sample" (size + sampled blocks, the default) or "full" (every block)."""
    if verify not in VERIFY_MODES:
        raise DataError(f"cache check {verify!r} is unknown; use one of: {', '.join(VERIFY_MODES)}.")
    split_dir = Path(split_dir).resolve()
    cache_dir = Path(cache_dir).expanduser() if cache_dir else user_cache_dir() / "cache"
    files, labels, found = list_split(split_dir, classes)
    prefix = f"{dataset}-{split}-{side}px-"
    final = cache_dir / (prefix + fingerprint(split_dir, files))
    cached, why = _reuse(final, verify)
    if cached:
        return cached
    if why:
        log.warning(f"the data cache {final} is damaged ({why}); rebuilding it")
    with _writable(cache_dir):
        cache_dir.mkdir(parents=True, exist_ok=True)
        with _locked(cache_dir / (prefix + "lock")) as locked_since:
            cached, _ = _reuse(final, verify)  # another process built (or rebuilt) it while we waited
            if cached:
                return cached
            _remove_dead_builds(cache_dir, prefix, locked_since)
            if final.exists():  # damaged
                shutil.rmtree(final)
            t0 = time.perf_counter()
            meta = _build(files, labels, found, split_dir, final, dataset=dataset, split=split, side=side, workers=workers)
            _remove_stale(cache_dir, prefix, keep=final, source=str(split_dir))
            return _load(final, meta, built=True, seconds=time.perf_counter() - t0)


def _build(files: list[Path], labels: list[int], found: list[str], split_dir: Path, final: Path, *,
           dataset: str, split: str, side: int, workers: int | None) -> dict:
    """Decode into a temporary folder renamed to `final` when complete (removed on any failure); its meta."""
    tmp = final.with_name(f"{final.name}.tmp-{HOST}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        workers = max(1, min(workers or usable_cores(), len(files)))
        if mp.current_process().daemon:  # e.g. inside a sweep's worker process: it may not have children
            workers = 1
        failed = _decode_all(files, tmp / "raw.u8", side, workers, desc=f"decoding {dataset}/{split}")
        keep = np.array([i for i in range(len(files)) if i not in failed], dtype=np.int64)
        kept_labels = [labels[i] for i in keep]
        present = set(kept_labels)
        empty = [name for c, name in enumerate(found) if c not in present]
        if empty:
            raise DataError(f"no readable image in {split_dir}/{empty[0]} ({len(failed)} files failed to decode); "
                            f"replace its files with images Pillow can open.")
        if failed:
            _compact(tmp / "raw.u8", tmp / "images.u8", keep, side, len(files))
        else:
            (tmp / "raw.u8").rename(tmp / "images.u8")
        skipped = {str(files[i].relative_to(split_dir)): why for i, why in sorted(failed.items())}
        meta = {"format": FORMAT_VERSION, "dataset": dataset, "split": split, "side": side,
                "source": str(split_dir), "classes": found, "labels": kept_labels, "skipped": skipped,
                "images": describe(tmp / "images.u8")}
        (tmp / "meta.json").write_text(json.dumps(meta))  # plain write: the folder's rename below is the atomic step
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _remove_stale(cache_dir: Path, prefix: str, keep: Path, source: str) -> None:
    """Delete older caches of the same folder (a changed folder must not leave its old copy on disk)."""
    for other in cache_dir.glob(prefix + "*"):
        if other == keep or not other.is_dir() or ".tmp-" in other.name:
            continue
        try:
            if json.loads((other / "meta.json").read_text())["source"] == source:
                shutil.rmtree(other, ignore_errors=True)
        except (OSError, ValueError, KeyError):
            continue
