"""Peak compute and memory bandwidth of a device, measured once and cached.

The roofline of a layer is ``max(flops / peak_flops, bytes / peak_bandwidth)``; the peaks here are
*achieved* peaks (a large matmul in the run's precision, a large device-to-device copy), not the
vendor's sheet figures, so a layer's efficiency says how close it gets to what this device really
delivers.  (Layers whose data stay in cache can beat the DRAM ceiling: efficiency > 1.)
Results are cached per device, precision, thread count and torch version in
``$STEMLAB_CACHE_DIR`` or the user cache dir (``platformdirs``), ``calibration.json``.  A
calibration taken on a busy machine underestimates the peaks (then layers show efficiency > 1);
measure again on a quiet one with ``peaks(device, dtype, refresh=True)``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import platformdirs
import torch

from stems.base import atomic_write

from .runtime import sync

__all__ = ["MEASURING", "Peaks", "peaks", "cache_path", "cached", "cpu_flags", "cpu_model", "device_name"]


@dataclass(frozen=True)
class Peaks:
    """Achieved peaks of one device in one precision."""

    device: str
    dtype: str
    flops_per_s: float
    bytes_per_s: float


def cache_path(name: str = "calibration.json") -> Path:
    root = os.environ.get("STEMLAB_CACHE_DIR") or platformdirs.user_cache_dir("stemlab")
    return Path(root) / name


def cached(name: str, key: str, compute: Callable[[], dict[str, Any]], refresh: bool = False) -> dict[str, Any]:
    """The entry `key` of the JSON cache file `name` (see cache_path), measured by `compute` and stored when it is
    missing, unreadable or `refresh` is asked for."""
    path = cache_path(name)
    cache: dict[str, dict] = {}
    if path.exists():
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
    if isinstance(cache, dict) and isinstance(cache.get(key), dict) and not refresh:
        return cache[key]
    cache = cache if isinstance(cache, dict) else {}
    cache[key] = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(cache, indent=1))  # concurrent runs never read half a file
    except OSError:
        pass  # a read-only home still gets the figures, just not cached
    return cache[key]


def _cpuinfo(field: str) -> str | None:
    """The first `field` line of /proc/cpuinfo (Linux); None elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (e.g. 'AMD EPYC 9354'), else what the platform module knows (e.g. 'x86_64')."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo; empty where there is none)."""
    return set((_cpuinfo("flags") or "").split())


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{cpu_model()} ({torch.get_num_threads()} threads)"


def _best_seconds(fn, dev: torch.device, min_total_s: float = 0.3, max_runs: int = 50) -> float:
    """Fastest of repeated runs of `fn` (the least disturbed one), after one warm-up."""
    fn()
    sync(dev)
    best, spent, runs = float("inf"), 0.0, 0
    while (spent < min_total_s or runs < 3) and runs < max_runs:
        t0 = time.perf_counter()
        fn()
        sync(dev)
        dt = time.perf_counter() - t0
        best, spent, runs = min(best, dt), spent + dt, runs + 1
    return best


def measure_flops(dev: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s in `dtype`: the best of a large square matmul and two typical CNN convolutions.

    On CPUs oneDNN's convolutions can beat the BLAS matmul, so both are tried; the peak is what
    the device delivers at its best, whichever kernel gets there.
    """
    n = 8192 if dev.type == "cuda" else 1024
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    best = 2 * n**3 / _best_seconds(lambda: torch.mm(a, b), dev)
    scale = 8 if dev.type == "cuda" else 1
    for batch, c_in, c_out, k, size in [(8 * scale, 256, 256, 3, 28), (8 * scale, 3, 64, 7, 128)]:
        conv = torch.nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False).to(dev, dtype)
        x = torch.randn(batch, c_in, size, size, device=dev, dtype=dtype)
        with torch.no_grad():
            secs = _best_seconds(lambda: conv(x), dev)
        best = max(best, 2 * batch * c_in * c_out * k * k * size * size / secs)
    return best


def measure_bandwidth(dev: torch.device) -> float:
    """Bytes/s of a large device copy (each byte read once and written once)."""
    nbytes = (1 << 30) if dev.type == "cuda" else (128 << 20)
    src = torch.empty(nbytes // 4, device=dev, dtype=torch.float32).normal_()
    dst = torch.empty_like(src)
    return 2 * nbytes / _best_seconds(lambda: dst.copy_(src), dev)


MEASURING = "measuring the device's peaks"  # the start of the line said before a calibration (not when cached)


def peaks(dev: torch.device | str, dtype: torch.dtype | None = None, refresh: bool = False,
          say: Callable[[str], None] = lambda message: None) -> Peaks:
    """Achieved peaks of `dev` in `dtype` (float32 when None), from the cache when present; `say` hears one line
    before a measurement (none when cached)."""
    dev = torch.device(dev)
    dtype = dtype or torch.float32
    name = device_name(dev)
    key = f"{name} | {dtype} | torch {torch.__version__}"

    def measure() -> dict[str, Any]:
        say(f"{MEASURING} (peak FLOP/s and memory bandwidth in {dtype}: a matmul, 2 convolutions and a copy, each timed "
            f"for at least 0.3 s, about 2-10 s; once per device, precision and torch version, then cached in "
            f"{cache_path()})")
        return asdict(Peaks(name, str(dtype), measure_flops(dev, dtype), measure_bandwidth(dev)))

    return Peaks(**cached("calibration.json", key, measure, refresh))
