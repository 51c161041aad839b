"""The decoded cache: 16-bit images, damage found on open and rebuilt, dead builds cleaned up, unwritable folders.

Every folder is generated here in Imagenette's layout (`<split>/<class>/<file>`)."""
from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from experiments.data import DataError, build_data
from experiments.data import integrity
from experiments.data.cache import HOST, cached_split, to_8bit
from stems.base import StemlabError

from tests.test_data import CLASSES, imagenette_cfg, solid, two_class_folder

SIDE = 16  # cached image side: 16 x 16 x 3 = 768 bytes a row


@pytest.fixture
def split_dir(tmp_path: Path) -> Path:
    """A train split of 2 classes x 2 solid-colour JPEGs."""
    root = tmp_path / "imagenette" / "train"
    for label, wnid in enumerate(CLASSES[:2]):
        (root / wnid).mkdir(parents=True)
        for i in range(2):
            solid(label, 24 + 8 * i, 24).save(root / wnid / f"{i}.JPEG", quality=95)
    return root


def open_split(split_dir: Path, cache: Path, **kw):
    return cached_split(split_dir, dataset="test", split="train", side=SIDE, cache_dir=cache, workers=1, **kw)


def damage_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "damaged" in r.getMessage()]


# --- 16-bit images -------------------------------------------------------------------------------------------------

def write_png16(path: Path, pixels: np.ndarray, colour_type: int) -> None:
    """A 16-bit PNG written by hand (Pillow writes no 48-bit RGB): signature, IHDR, one zlib IDAT, IEND.
    Each row: filter byte 0 then big-endian 16-bit samples. colour_type 0 = grayscale, 2 = RGB."""
    h, w = pixels.shape[:2]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_16bit_pngs_keep_their_high_byte(tmp_path):
    values = np.array([[0, 257, 65535, 32768, 1000, 129, 128, 65407]], dtype=np.uint16)
    # v >> 8 by hand: 257 = 1*256+1 -> 1; 32768 = 128*256 -> 128; 1000 = 3*256+232 -> 3; 65407 = 255*256+127 -> 255
    expected = [[0, 1, 255, 128, 3, 0, 0, 255]]
    Image.fromarray(values).save(tmp_path / "gray16.png")
    with Image.open(tmp_path / "gray16.png") as im:
        assert im.mode == "I;16"  # what Pillow opens a 16-bit grayscale PNG as (convert("RGB") would clip at 255)
        assert np.asarray(to_8bit(im)).tolist() == expected
    assert np.asarray(to_8bit(Image.fromarray(values.astype(np.int32)))).tolist() == expected  # mode I (older Pillow)

    # through the cache: a 16-bit grayscale PNG and a 48-bit RGB PNG, uniform so resizing keeps their values
    root = tmp_path / "sixteen" / "train"
    for wnid in CLASSES[:2]:
        (root / wnid).mkdir(parents=True)
    Image.fromarray(np.full((20, 30), 40000, np.uint16)).save(root / CLASSES[0] / "gray.png")
    write_png16(root / CLASSES[1] / "rgb.png", np.tile(np.array([10000, 30000, 50000], np.uint16), (24, 24, 1)), 2)
    split = open_split(root, tmp_path / "cache")
    pixels = {int(y): x.flatten(1).unique(dim=1).flatten().tolist() for x, y in zip(split.images, split.labels)}
    # 40000 = 156*256+64 -> 156 (grey: all three channels); 10000 = 39*256+16, 30000 = 117*256+48, 50000 = 195*256+80
    assert pixels == {0: [156, 156, 156], 1: [39, 117, 195]}


# --- damage found on open --------------------------------------------------------------------------------------------

def test_intact_cache_is_reused_and_damaged_one_rebuilt_with_one_warning(split_dir, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    cache = tmp_path / "cache"
    first = open_split(split_dir, cache)
    assert first.built
    pixels = first.images.clone()
    images, meta = first.path / "images.u8", first.path / "meta.json"
    assert images.stat().st_size == 4 * SIDE * SIDE * 3  # 4 images of 16 x 16 x 3 bytes: 3,072
    assert not open_split(split_dir, cache).built and damage_warnings(caplog) == []

    def reopened_after(spoil) -> str:
        spoil()
        caplog.clear()
        again = open_split(split_dir, cache)
        assert again.built and again.path == first.path and torch.equal(again.images, pixels)
        assert not open_split(split_dir, cache).built  # the rebuilt cache is intact
        warnings = damage_warnings(caplog)
        assert len(warnings) == 1 and str(first.path) in warnings[0] and "rebuilding" in warnings[0]
        return warnings[0]

    def flip(offset: int):
        data = bytearray(images.read_bytes())
        data[offset] ^= 0x01
        images.write_bytes(bytes(data))

    assert "images.u8 is 3,000 bytes, its build wrote 3,072" in reopened_after(lambda: os.truncate(images, 3000))
    # 3,072 bytes are 1 block, and a cache of at most 18 blocks is checked whole: a middle byte's flip is found
    assert "block 0 of images.u8" in reopened_after(lambda: flip(1500))
    text = meta.read_text()
    assert "meta.json is unreadable (JSONDecodeError)" in reopened_after(lambda: meta.write_text(text[:len(text) // 2]))
    assert "meta.json is unreadable" in reopened_after(lambda: meta.write_text("[1, 2]"))  # JSON of the wrong shape
    assert "meta.json is missing" in reopened_after(meta.unlink)
    assert "images.u8 is unreadable" in reopened_after(images.unlink)


def test_large_caches_check_a_sample_by_default_and_every_block_on_request(split_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(integrity, "BLOCK_BYTES", 64)  # 3,072 bytes = 48 blocks of 64
    first = open_split(split_dir, tmp_path / "cache")
    images = first.path / "images.u8"
    hashed = []
    real_digest = integrity.block_digest
    monkeypatch.setattr(integrity, "block_digest", lambda block: hashed.append(len(block)) or real_digest(block))
    assert not open_split(split_dir, tmp_path / "cache").built
    assert hashed == [64] * 18  # first + last + 16 sampled blocks, not 48
    hashed.clear()
    assert not open_split(split_dir, tmp_path / "cache", verify="full").built
    assert hashed == [64] * 48

    data = bytearray(images.read_bytes())
    data[3071] ^= 0x80  # last byte: the last block, checked on every open
    images.write_bytes(bytes(data))
    assert open_split(split_dir, tmp_path / "cache").built

    with pytest.raises(DataError, match="cache check 'all' is unknown"):
        open_split(split_dir, tmp_path / "cache", verify="all")


def test_full_check_finds_a_flip_in_any_block(split_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(integrity, "BLOCK_BYTES", 64)
    cache = tmp_path / "cache"
    images = open_split(split_dir, cache).path / "images.u8"
    for block in range(48):
        data = bytearray(images.read_bytes())
        data[block * 64 + 10] ^= 0x01
        images.write_bytes(bytes(data))
        assert open_split(split_dir, cache, verify="full").built, block


# --- temporary folders of builds that died ---------------------------------------------------------------------------

def test_dead_builds_temp_folders_are_removed_under_the_lock(split_dir, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    finished = subprocess.Popen(["true"])
    finished.wait()  # its pid is now dead
    running = subprocess.Popen(["sleep", "60"])
    try:
        def leftover(tag: str, host: str, pid: int, written_s_ago: float, side: int = SIDE) -> Path:
            tmp = cache / f"test-train-{side}px-{tag}.tmp-{host}-{pid}"
            tmp.mkdir()
            (tmp / "raw.u8").write_bytes(bytes(1000))
            when = tmp.stat().st_mtime - written_s_ago
            os.utime(tmp, (when, when))
            return tmp

        hour = 3600
        dead = leftover("a", HOST, finished.pid, -hour)           # "written after the lock was taken": only its dead pid tells
        live_new = leftover("b", HOST, running.pid, -hour)        # a live builder writing now: kept
        live_old = leftover("c", HOST, running.pid, hour)         # last written before the lock was taken: not building
        elsewhere = leftover("d", "other-host", finished.pid, -hour)  # another machine's pid says nothing here: kept
        other_cache = leftover("e", HOST, finished.pid, hour, side=SIDE + 8)  # another cache's prefix: its own lock
        assert open_split(split_dir, cache).built
        assert not dead.exists() and not live_old.exists()
        assert live_new.exists() and elsewhere.exists() and other_cache.exists()
    finally:
        running.kill()
        running.wait()


def test_interrupted_build_leaves_no_temp_folder(split_dir, tmp_path, monkeypatch):
    from experiments.data import cache as cache_mod

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod, "_decode_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        open_split(split_dir, tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"test-train-{SIDE}px-lock"]


def test_parallel_builds_inside_a_run_neither_hang_nor_raise_in_workers(tmp_path):
    # a run builds its caches inside interruptible(): forked decoders that kept its handlers raised Interrupted at
    # the pool's shutdown SIGTERM, once while holding the task queue's lock, and the next build hung in join
    # (40 files: with 4, the workers were rarely still waiting for tasks at the shutdown)
    split_dir = tmp_path / "train"
    for label, wnid in enumerate(CLASSES[:2]):
        (split_dir / wnid).mkdir(parents=True)
        for i in range(20):
            solid(label, 24, 24).save(split_dir / wnid / f"{i}.JPEG")
    script = (
        "import sys; from pathlib import Path; from experiments.checkpoint import interruptible\n"
        "from experiments.data.cache import cached_split\n"
        "with interruptible():\n"
        "    for k in range(12):\n"
        f"        cached_split(Path(sys.argv[1]), dataset='test', split='train', side={SIDE}, "
        "cache_dir=Path(sys.argv[2]) / str(k), workers=2)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(split_dir), str(tmp_path / 'caches')], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "Interrupted" not in proc.stderr, proc.stderr[-2000:]


# --- folders that cannot take the cache ------------------------------------------------------------------------------

def test_cache_dir_under_a_file_is_one_sentence(tmp_path):
    folder = two_class_folder(tmp_path / "imagenette", 24)
    (tmp_path / "a_file").write_text("")
    for cache in (tmp_path / "a_file" / "sub", tmp_path / "a_file"):  # not a folder (ENOTDIR), a file (EEXIST)
        with pytest.raises(DataError) as err:
            build_data(imagenette_cfg(folder, cache), bs=2, seed=0)
        msg = str(err.value)
        assert isinstance(err.value, StemlabError) and "\n" not in msg and msg.endswith(".")
        assert msg.startswith(f"cannot write the data cache in {cache} (") and "data.cache_dir=" in msg


def as_unprivileged(fn) -> str:
    """fn() in a forked child that, when we are root (whom permissions do not stop), first becomes uid/gid 65534
    (nobody); its result or exception, as text. This is how a read-only folder is tested for real as root."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            try:
                text = f"ok: {fn()}"
            except BaseException as e:
                text = f"{type(e).__name__}: {e}"
            os.write(write, text.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    os.waitpid(pid, 0)
    return text


def test_read_only_cache_dir_is_read_when_intact_and_one_sentence_otherwise():
    base = Path(tempfile.mkdtemp(prefix="stemlab-ro-"))  # not under pytest's tmp_path: its parent is root-only (0700)
    try:
        base.chmod(0o755)
        split_dir, cache, empty = base / "train", base / "cache", base / "empty"
        for label, wnid in enumerate(CLASSES[:2]):
            (split_dir / wnid).mkdir(parents=True)
            solid(label, 24, 24).save(split_dir / wnid / "a.JPEG")
        built = open_split(split_dir, cache)
        for d in (cache, empty):
            d.mkdir(exist_ok=True)
            d.chmod(0o555)
        probe = as_unprivileged(lambda: (cache / "probe").write_text("x"))
        assert probe.startswith("PermissionError"), probe  # the folder really is read-only to the child

        assert as_unprivileged(lambda: open_split(split_dir, cache).built) == "ok: False"
        os.truncate(built.path / "images.u8", 100)
        for folder in (cache, empty):
            msg = as_unprivileged(lambda: open_split(split_dir, folder))
            assert msg == (f"DataError: cannot write the data cache in {folder} (Permission denied); "
                           f"set data.cache_dir= to a writable folder with room for it."), msg
    finally:
        shutil.rmtree(base)


# --- a full disk, a dead or a stuck worker (issue 26) ----------------------------------------------------------------

def test_a_full_disk_is_one_sentence_before_any_image_is_decoded(split_dir, tmp_path, monkeypatch):
    # a memory-mapped file is sparse: on a full disk a worker writing into it died of SIGBUS and the build hung;
    # its blocks are now reserved first, so the disk's refusal comes as ENOSPC at once
    from experiments.data import cache as cache_mod

    def no_space(fd, offset, length):
        raise OSError(28, "No space left on device")

    def never(*args):
        raise AssertionError("decoded on a full disk")

    monkeypatch.setattr(cache_mod.os, "posix_fallocate", no_space)
    monkeypatch.setattr(cache_mod, "decode_square", never)
    with pytest.raises(DataError) as err:
        open_split(split_dir, tmp_path / "cache")
    assert str(err.value) == (f"cannot write the data cache in {tmp_path / 'cache'} (No space left on device; it needs "
                              "0 MiB); set data.cache_dir= to a writable folder with room for it.")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"test-train-{SIDE}px-lock"]  # no temporary folder


def many_files(tmp_path: Path, n: int = 80) -> Path:
    split = tmp_path / "many" / "train"
    for label, wnid in enumerate(CLASSES[:2]):
        (split / wnid).mkdir(parents=True)
        for i in range(n // 2):
            solid(label, 24, 24).save(split / wnid / f"{i}.JPEG")
    return split


def test_a_worker_that_dies_fails_the_build_with_the_reason(tmp_path, monkeypatch):
    # multiprocessing.Pool never returns a dead worker's task: the build waited forever at 0 %
    from experiments.data import cache as cache_mod

    parent, decode = os.getpid(), cache_mod.decode_square

    def killed_in_a_worker(path, side):
        if os.getpid() != parent and path.name == "7.JPEG":
            os.kill(os.getpid(), 9)
        return decode(path, side)

    monkeypatch.setattr(cache_mod, "decode_square", killed_in_a_worker)
    split = many_files(tmp_path)
    with pytest.raises(DataError, match=r"^decoding test/train: a decoding process died \(killed by SIGKILL: out of "
                                        r"memory\?\); free memory or disk space, or try data.workers=1\.$"):
        cached_split(split, dataset="test", split="train", side=SIDE, cache_dir=tmp_path / "cache", workers=2)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"test-train-{SIDE}px-lock"]


def test_a_stuck_worker_fails_the_build_and_is_stopped(tmp_path, monkeypatch):
    import multiprocessing as mp
    import time

    from experiments.data import cache as cache_mod

    parent, decode = os.getpid(), cache_mod.decode_square

    def stuck_in_a_worker(path, side):
        if os.getpid() != parent and path.name == "7.JPEG":
            time.sleep(600)
        return decode(path, side)

    monkeypatch.setattr(cache_mod, "decode_square", stuck_in_a_worker)
    monkeypatch.setattr(cache_mod, "STALL_S", 1.0)
    split = many_files(tmp_path)
    with pytest.raises(DataError, match=r"^decoding test/train: no image decoded for 1\.0 s, a decoding process is stuck"):
        cached_split(split, dataset="test", split="train", side=SIDE, cache_dir=tmp_path / "cache", workers=2)
    # killed, not left to sleep: asked of the OS (multiprocessing's bookkeeping can race with the pool's own thread,
    # which may reap a worker first and leave its Process object reporting "alive")
    pids = [child.pid for child in mp.active_children()]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(running(pid) for pid in pids):
        time.sleep(0.05)
    assert not any(running(pid) for pid in pids)


def running(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie has ended: only its exit status waits to be read)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
