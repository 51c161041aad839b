"""Peak compute and memory bandwidth of a device, measured once and cached.

The roofline of a layer is ``max(flops / peak_flops, bytes / peak_bandwidth)``; the peaks here are
*achieved* peaks (a large matmul in the run's precision, a large device-to-device copy), not the
vendor's sheet figures, so a layer's efficiency says how close it gets to what this device really
delivers.  (Layers whose data stay in cache can beat the DRAM ceiling: efficiency > 1.)
Results are cached per device, precision, thread count and torch version in
``$STEMLAB_CACHE_DIR`` or the user cache dir (``platformdirs``), ``calibration.json``, with the machine's load while
they were measured.  A calibration taken on a busy machine underestimates the peaks (then layers show efficiency
> 1, and a run's MFU is overstated): a peak measured with more runnable processes than cores, or without its load
recorded, is measured again whenever the machine is quieter than it was then, and the cache keeps the higher
figures (other work only slows a best-of timing down).  ``peaks(device, dtype, refresh=True)`` measures again now.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import platformdirs
import torch

from stems.base import StemlabError, atomic_write, error_line

from .runtime import sync

log = logging.getLogger("stemlab")

__all__ = ["MEASURING", "Peaks", "peaks", "cache_path", "cached", "cpu_flags", "cpu_model", "damaged_fields", "device_name",
           "MeasurementFailed", "positive_finite"]


class MeasurementFailed(StemlabError):
    """A peak or a probe measured a value no caller can use (not a positive finite number)."""


@dataclass(frozen=True)
class Peaks:
    """Achieved peaks of one device in one precision."""

    device: str
    dtype: str
    flops_per_s: float
    bytes_per_s: float
    load: dict[str, float] | None = None  # the machine while measuring: {"load_avg", "cpus"} (None: not recorded)


def cache_path(name: str = "calibration.json") -> Path:
    root = os.environ.get("STEMLAB_CACHE_DIR") or platformdirs.user_cache_dir("stemlab")
    return Path(root) / name


def positive_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def cached(name: str, key: str, compute: Callable[[], dict[str, Any]], damaged: Callable[[Any], str | None],
           refresh: bool = False) -> dict[str, Any]:
    """The entry `key` of the JSON cache file `name` (see cache_path), measured by `compute` and stored when it is
    missing, damaged or `refresh` is asked for. `damaged(entry)` says what is wrong with an entry (None: usable): a
    damaged entry, or a file that is not a JSON object (set aside as `<name>.damaged`), is named in one warning and
    measured again; a measurement that is itself damaged raises MeasurementFailed."""
    path = cache_path(name)
    cache: dict[str, Any] = {}
    if path.exists():
        try:
            cache = json.loads(path.read_text())
            if not isinstance(cache, dict):
                raise ValueError(f"a JSON {type(cache).__name__}, not an object")
        except (OSError, ValueError) as e:
            aside = path.with_name(path.name + ".damaged")
            with contextlib.suppress(OSError):
                path.replace(aside)
            log.warning("%s is damaged (%s); it is set aside as %s and measured again.", path, error_line(e), aside)
            cache = {}
    if key in cache and not refresh:
        why = damaged(cache[key])
        if why is None:
            return cache[key]
        log.warning("%s: the entry %r is damaged (%s); it is measured again.", path, key, why)
    entry = compute()
    why = damaged(entry)
    if why is not None:
        raise MeasurementFailed(f"the measurement of {key} is not usable ({why}); run the command again.")
    cache[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(cache, indent=1))  # concurrent runs never read half a file
    except OSError:
        pass  # a read-only home still gets the figures, just not cached
    return entry


def damaged_fields(entry: Any, numbers: list[str], texts: tuple[str, ...] = ()) -> str | None:
    """Why a cache entry is unusable: not an object, a missing key, a text that is not one, or a number that is not
    positive and finite (a peak of 0 would divide by zero, a negative one give a negative utilisation)."""
    if not isinstance(entry, dict):
        return f"a JSON {type(entry).__name__}, not an object"
    for field in [*numbers, *texts]:
        if field not in entry:
            return f"{field} is missing"
        ok = isinstance(entry[field], str) if field in texts else positive_finite(entry[field])
        if not ok:
            return f"{field} is {json.dumps(entry[field])}, not {'a text' if field in texts else 'a positive finite number'}"
    return None


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

    earlier: dict[str, Any] = {}  # a cached entry measured on a busier machine, improved on by a new measurement
    measured: list[bool] = []

    def measure() -> dict[str, Any]:
        measured.append(True)
        say(f"{MEASURING} (peak FLOP/s and memory bandwidth in {dtype}: a matmul, 2 convolutions and a copy, each timed "
            f"for at least 0.3 s, about 2-10 s; once per device, precision, thread count and torch version, again on a machine quieter "
            f"than at the last measurement, then cached in {cache_path()})")
        load_before = os.getloadavg()[0]
        flops, bandwidth = measure_flops(dev, dtype), measure_bandwidth(dev)
        load = {"load_avg": round(max(load_before, os.getloadavg()[0]), 2), "cpus": os.cpu_count() or 1}
        fresh = asdict(Peaks(name, str(dtype), flops, bandwidth, load))
        if not earlier:
            return fresh
        return {**fresh, "flops_per_s": max(flops, earlier["flops_per_s"]),
                "bytes_per_s": max(bandwidth, earlier["bytes_per_s"])}

    def damaged(entry: Any) -> str | None:
        return damaged_fields(entry, ["flops_per_s", "bytes_per_s"], ("device", "dtype"))

    entry = cached("calibration.json", key, measure, damaged, refresh)
    if not measured and quieter_now(entry.get("load")):
        earlier.update(entry)
        entry = cached("calibration.json", key, measure, damaged, refresh=True)
    return Peaks(**{field: entry.get(field) for field in Peaks.__dataclass_fields__})


def quieter_now(load: Any) -> bool:
    """A peak measured with `load` may be measured higher now: its load was not recorded, or it was measured with
    more runnable processes than cores and the machine is quieter now."""
    try:
        measured_at, cpus = float(load["load_avg"]), float(load["cpus"])
    except (TypeError, KeyError, ValueError):
        return True
    return measured_at > cpus and os.getloadavg()[0] < measured_at
